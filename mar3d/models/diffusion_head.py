"""The diffusion head (paper Eq. 5, LTH14/mar's DiffLoss): p(x | z) for one token, as a small AdaLN MLP.

    y = TimestepEmbed(t) + Linear(z)                                    (M, W)
    h = Linear(x_t)  ->  AdaLN residual block x depth  ->  AdaLN final layer  ->  ε̂   (M, C)
    AdaLN block: shift, scale, gate = Linear(SiLU(y)); h + gate * MLP(LN(h) * (1 + scale) + shift)

The modulations and the output layer start at zero, so every block starts as the identity and the head
predicts ε̂ = 0 (DiT's adaLN-Zero): training starts from a stable, well-scaled point.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from mar3d.models.diffusion import GaussianDiffusion, Sampler


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


class TimestepEmbedder(nn.Module):
    """(M,) timesteps -> (M, W): sinusoidal features then an MLP (DiT)."""

    def __init__(self, width: int, frequencies: int = 256, max_period: float = 10_000.0):
        super().__init__()
        half = frequencies // 2
        self.register_buffer("freqs", torch.exp(-math.log(max_period) * torch.arange(half) / half), persistent=False)
        self.mlp = nn.Sequential(nn.Linear(2 * half, width), nn.SiLU(), nn.Linear(width, width))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        angles = t.float()[:, None] * self.freqs[None]
        return self.mlp(torch.cat([angles.cos(), angles.sin()], dim=-1))


class AdaLNBlock(nn.Module):
    """Residual MLP block modulated by y: (M, W), (M, W) -> (M, W)."""

    def __init__(self, width: int):
        super().__init__()
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 3 * width))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        shift, scale, gate = self.modulation(y).chunk(3, dim=-1)
        return x + gate * self.mlp(modulate(self.norm(x), shift, scale))


class FinalLayer(nn.Module):
    def __init__(self, width: int, out_channels: int):
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))
        self.linear = nn.Linear(width, out_channels)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        shift, scale = self.modulation(y).chunk(2, dim=-1)
        return self.linear(modulate(self.norm(x), shift, scale))


class DiffusionHead(nn.Module):
    """ε-predictor for (M, C) noisy tokens given timesteps (M,) and conditions z (M, D)."""

    def __init__(self, channels: int, cond_dim: int, width: int, depth: int, train_steps: int = 1000):
        super().__init__()
        self.channels = channels
        self.diffusion = GaussianDiffusion(train_steps)
        self.time_embed = TimestepEmbedder(width)
        self.cond_embed = nn.Linear(cond_dim, width)
        self.input_proj = nn.Linear(channels, width)
        self.blocks = nn.ModuleList(AdaLNBlock(width) for _ in range(depth))
        self.final = FinalLayer(width, channels)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        for m in self.time_embed.mlp:
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.02)
        for block in [*self.blocks, self.final]:
            nn.init.zeros_(block.modulation[-1].weight)
            nn.init.zeros_(block.modulation[-1].bias)
        nn.init.zeros_(self.final.linear.weight)
        nn.init.zeros_(self.final.linear.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """ε̂ (M, C) for x_t (M, C) at timesteps t (M,) given conditions z (M, D)."""
        y = self.time_embed(t) + self.cond_embed(z)
        h = self.input_proj(x)
        for block in self.blocks:
            h = block(h, y)
        return self.final(h, y)

    def loss(self, target: torch.Tensor, z: torch.Tensor, mask: torch.Tensor, batch_mul: int = 4,
             generator: torch.Generator | None = None) -> torch.Tensor:
        """Mean ε-MSE over the masked tokens only.

        target (..., C), z (..., D), mask (...) (bool or 0/1). Each masked token is repeated ``batch_mul``
        times with independent t and ε: the transformer that made z runs once for all repeats.
        """
        keep = mask.reshape(-1).bool()
        target = target.reshape(-1, self.channels)[keep].repeat(batch_mul, 1)
        z = z.reshape(keep.shape[0], -1)[keep].repeat(batch_mul, 1)
        return self.diffusion.training_losses(lambda x, t: self(x, t, z), target, generator).mean()

    @torch.no_grad()
    def sample(self, z: torch.Tensor, temperature: float = 1.0, cfg: float | None = None,
               sampler: Sampler = "ddpm", steps: int = 100, generator: torch.Generator | None = None,
               eta: float = 0.0, clip_denoised: float | None = None) -> torch.Tensor:
        """Tokens (M, C) given conditions z (``GaussianDiffusion.sample`` has the sampler options).

        Without guidance (``cfg`` None), z is (M, D). With guidance, z is a (2M, D) pair: the first half
        conditional, the second unconditional. Both halves are denoised from the same noise in one batch
        and combined as ε = ε_u + cfg · (ε_c − ε_u); the conditional half is returned.
        """
        if cfg is not None and z.shape[0] % 2:
            raise ValueError(f"a guided batch holds conditional and unconditional halves, got {z.shape[0]} rows")
        rows = z.shape[0] if cfg is None else z.shape[0] // 2

        def eps_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            if cfg is None:
                return self(x, t, z)
            cond, uncond = self(torch.cat([x, x]), torch.cat([t, t]), z).float().chunk(2)
            return uncond + cfg * (cond - uncond)

        return self.diffusion.sample(eps_fn, (rows, self.channels), sampler, steps, temperature, eta,
                                     clip_denoised, generator, z.device)
