"""Cascaded MAR (paper §3.3, LTH14/mar): a masked auto-regressive transformer with a diffusion head.

MAR-LR makes N = 256 latent tokens from an image; MAR-HR makes N = 1024 from the image and the LR
tokens. Both are this class; ``config.stage`` picks which.

    buffer  = [image tokens (M_img, D) ; MAR-HR: Linear(C -> D)(augmented LR latents) (N_lr, D)]  (B, M, D)
    encoder : [buffer ; Linear(C -> D)(tokens)] + pos -> LN -> keep buffer + visible tokens
              -> self-attention x encoder_depth -> LN                                  (B, M + visible, D)
    decoder : Linear -> back into [buffer ; shared mask token] + pos -> self-attention x decoder_depth
              -> LN -> the N token slots + diffusion pos = z                           (B, N, D)
    head    : p(x_i | z_i) for every masked token i (diffusion_head.py)

Attention is bidirectional everywhere; the buffer is always visible. Latents are multiplied by
``latent_scale`` (≈ 1 / their std over the training set) on the way in and divided on the way out, so
the diffusion sees roughly unit-variance data.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint
from tqdm.auto import tqdm

from mar3d.config import ConfigError
from mar3d.models.diffusion import SAMPLERS, Sampler
from mar3d.models.diffusion_head import DiffusionHead
from mar3d.models.image_encoder import ImageEncoderConfig, build_image_encoder
from mar3d.models.layers import SelfAttentionBlock

CFG_SCHEDULES = ("linear", "constant")


@dataclass
class MARConfig:
    stage: Literal["lr", "hr"] = "lr"  # one size config serves both; training picks the stage
    lr_tokens: int = 256
    hr_tokens: int = 1024
    token_channels: int = 64  # the VAE's latent channels
    width: int = 256
    heads: int = 4
    encoder_depth: int = 4
    decoder_depth: int = 4
    head_width: int = 256
    head_depth: int = 3
    image_encoder: ImageEncoderConfig = field(default_factory=ImageEncoderConfig)
    mask_ratio_min: float = 0.7  # truncated normal on [min, 1] with mode 1
    mask_ratio_std: float = 0.25
    cfg_dropout: float = 0.1  # per sample, the whole buffer becomes the learned null sequence
    condition_augmentation: bool = True  # MAR-HR only (paper Eq. 7); False for the ablation
    augment_range: list[float] = field(default_factory=lambda: [0.4, 0.6])  # t in training
    augment_inference: float = 0.5  # t at inference
    latent_scale: float = 1.0  # multiplies this stage's latents; measured on the training set
    lr_latent_scale: float = 1.0  # MAR-HR: the same for the LR latents it is given
    diffusion_batch_mul: int = 4
    denoised_clip: float | None = 5.0  # sampling clamps x_0 estimates to ±this (scaled units); see diffusion.py
    diffusion_train_steps: int = 1000
    grad_checkpointing: bool = False

    def validate(self) -> None:
        for name in ("lr_tokens", "hr_tokens", "token_channels", "width", "heads", "encoder_depth",
                     "decoder_depth", "head_width", "head_depth", "diffusion_batch_mul", "diffusion_train_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"model.{name} must be >= 1")
        if self.width % self.heads:
            raise ConfigError(f"model.width {self.width} must be divisible by model.heads {self.heads}")
        if not 0 < self.mask_ratio_min <= 1 or self.mask_ratio_std <= 0:
            raise ConfigError("model.mask_ratio_min must be in (0, 1] and model.mask_ratio_std > 0")
        if not 0 <= self.cfg_dropout < 1:
            raise ConfigError("model.cfg_dropout must be in [0, 1)")
        if len(self.augment_range) != 2 or not 0 <= self.augment_range[0] <= self.augment_range[1] <= 1:
            raise ConfigError(f"model.augment_range must be [low, high] within [0, 1], got {self.augment_range}")
        if not 0 <= self.augment_inference <= 1:
            raise ConfigError("model.augment_inference must be in [0, 1]")
        if self.denoised_clip is not None and self.denoised_clip <= 0:
            raise ConfigError("model.denoised_clip must be > 0 (or null for no clamp)")
        if self.latent_scale <= 0 or self.lr_latent_scale <= 0:
            raise ConfigError("model.latent_scale and model.lr_latent_scale must be > 0")
        self.image_encoder.validate()

    @property
    def num_tokens(self) -> int:
        return self.lr_tokens if self.stage == "lr" else self.hr_tokens

    @property
    def buffer_size(self) -> int:
        return self.image_encoder.num_tokens + (self.lr_tokens if self.stage == "hr" else 0)


def mask_schedule(num_tokens: int, steps: int) -> list[int]:
    """Tokens predicted at each of ``steps`` steps: the cosine schedule (paper §3.4, MaskGIT).

    After step s a fraction cos(π/2 · s/S) is still masked, so N(1 - cos(π/2 · s/S)) tokens exist. The
    counts are the differences of that rounded total, each at least 1, sorted: the ideal counts grow with
    s and rounding only jitters neighbours by one, so sorting keeps the total within about a token of the
    curve while making the counts non-decreasing (LTH14's floors can make a later step predict fewer
    tokens than the one before). Where the ">= 1" raised the first steps, the largest counts give the
    excess back. The counts sum to N: the last step predicts everything left.
    """
    if not 1 <= steps <= num_tokens:
        raise ValueError(f"{steps} steps for {num_tokens} tokens: need 1 <= steps <= tokens (>= 1 token a step)")
    total = [round(num_tokens * (1 - math.cos(math.pi / 2 * s / steps))) for s in range(steps + 1)]
    counts = sorted(max(1, b - a) for a, b in zip(total, total[1:]))
    for _ in range(sum(counts) - num_tokens):
        counts[counts.index(max(counts))] -= 1  # the first of the largest: stays non-decreasing
    return counts


def cfg_scale(cfg: float, generated: int, num_tokens: int, schedule: str) -> float:
    """Guidance ω at a step after which ``generated`` tokens exist.

    ``linear`` (LTH14/mar and the release, after Muse): ω = 1 + (λ - 1) · generated / N, counting this
    step's tokens: near 1 for the first, diverse tokens, λ for the last. The paper writes ω_s = s · λ / S,
    which starts below 1 (anti-guidance, λ/S); the two agree at the last step, and the release's form is
    the one its published results used. ``constant``: ω = λ throughout.
    """
    return 1 + (cfg - 1) * generated / num_tokens if schedule == "linear" else cfg


class MAR(nn.Module):
    def __init__(self, config: MARConfig):
        super().__init__()
        config.validate()
        self.config = config
        d, n, m, c = config.width, config.num_tokens, config.buffer_size, config.token_channels
        # Condition buffer: image tokens, the LR tokens for MAR-HR, and the null sequence for CFG.
        self.image_encoder = build_image_encoder(config.image_encoder)
        width = config.image_encoder.width
        self.image_proj = nn.Linear(width, d) if width != d else nn.Identity()  # release: written as is
        self.lr_proj = nn.Linear(c, d) if config.stage == "hr" else None
        self.null_condition = nn.Parameter(torch.zeros(1, m, d))
        # MAE encoder.
        self.token_proj = nn.Linear(c, d)
        self.encoder_pos = nn.Parameter(torch.zeros(1, m + n, d))
        self.encoder_input_norm = nn.LayerNorm(d, eps=1e-6)
        self.encoder_blocks = nn.ModuleList(SelfAttentionBlock(d, config.heads) for _ in range(config.encoder_depth))
        self.encoder_norm = nn.LayerNorm(d)
        # MAE decoder.
        self.decoder_embed = nn.Linear(d, d)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, d))
        self.decoder_pos = nn.Parameter(torch.zeros(1, m + n, d))
        self.decoder_blocks = nn.ModuleList(SelfAttentionBlock(d, config.heads) for _ in range(config.decoder_depth))
        self.decoder_norm = nn.LayerNorm(d)
        self.diffusion_pos = nn.Parameter(torch.zeros(1, n, d))
        self.initialize_weights()
        # Built after the generic initialisation, which would overwrite its zero-initialised layers.
        self.diffusion_head = DiffusionHead(c, d, config.head_width, config.head_depth, config.diffusion_train_steps)

    def initialize_weights(self) -> None:
        for p in (self.null_condition, self.encoder_pos, self.mask_token, self.decoder_pos, self.diffusion_pos):
            nn.init.normal_(p, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)  # as LTH14 (JAX ViT)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm) and module.elementwise_affine:
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    # ----------------------------------------------------------------- condition
    def augment_condition(self, lr_latents: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Paper Eq. 7: x' = t·ε + (1 - t)·x, (B, N_lr, C). t ~ U(augment_range) per sample in training,
        t = augment_inference in eval mode."""
        b = lr_latents.shape[0]
        if self.training:
            low, high = self.config.augment_range
            t = low + (high - low) * torch.rand(b, 1, 1, generator=generator, device=lr_latents.device)
        else:
            t = torch.full((b, 1, 1), self.config.augment_inference, device=lr_latents.device)
        noise = torch.randn(lr_latents.shape, generator=generator, device=lr_latents.device, dtype=lr_latents.dtype)
        return t * noise + (1 - t) * lr_latents

    def condition_buffer(self, images: torch.Tensor, lr_latents: torch.Tensor | None = None,
                         generator: torch.Generator | None = None) -> torch.Tensor:
        """Images (B, 3, H, W) in [0, 1] [+ raw LR latents (B, N_lr, C) for MAR-HR] -> buffer (B, M, D)."""
        buffer = self.image_proj(self.image_encoder(images))
        if self.config.stage == "lr":
            if lr_latents is not None:
                raise ValueError("MAR-LR takes no LR latents")
            return buffer
        expected = (images.shape[0], self.config.lr_tokens, self.config.token_channels)
        if lr_latents is None or tuple(lr_latents.shape) != expected:
            got = None if lr_latents is None else tuple(lr_latents.shape)
            raise ValueError(f"MAR-HR needs LR latents of shape {expected}, got {got}")
        lr = lr_latents * self.config.lr_latent_scale
        if self.config.condition_augmentation:
            lr = self.augment_condition(lr, generator)
        return torch.cat([buffer, self.lr_proj(lr)], dim=1)

    def null_buffer(self, batch: int) -> torch.Tensor:
        """The learned unconditional buffer, (B, M, D)."""
        return self.null_condition.expand(batch, -1, -1)

    def drop_condition(self, buffer: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """CFG training: each sample's whole buffer becomes the null sequence with probability cfg_dropout."""
        drop = torch.rand(buffer.shape[0], 1, 1, generator=generator, device=buffer.device) < self.config.cfg_dropout
        return torch.where(drop, self.null_buffer(buffer.shape[0]).to(buffer.dtype), buffer)

    # ----------------------------------------------------------------- masking
    def sample_orders(self, batch: int, device: torch.device | str = "cpu",
                      generator: torch.Generator | None = None) -> torch.Tensor:
        """A random generation order per sample: (B, N) permutations of the token slots."""
        return torch.rand(batch, self.config.num_tokens, generator=generator, device=device).argsort(dim=1)

    def sample_mask_ratio(self, device: torch.device | str = "cpu", generator: torch.Generator | None = None) -> float:
        """One ratio per batch from the normal(1, std) truncated to [mask_ratio_min, 1] (inverse CDF)."""
        c = self.config
        low = torch.special.ndtr(torch.tensor((c.mask_ratio_min - 1) / c.mask_ratio_std, dtype=torch.float64))
        u = low + (0.5 - low) * torch.rand((), generator=generator, device=device, dtype=torch.float64).cpu()
        return min(max(1 + c.mask_ratio_std * torch.special.ndtri(u).item(), c.mask_ratio_min), 1.0)

    def random_masking(self, orders: torch.Tensor, ratio: float) -> torch.Tensor:
        """(B, N) bool, True where masked: the first ceil(N · ratio) slots of each order."""
        n = orders.shape[1]
        count = min(max(math.ceil(n * ratio), 1), n)
        mask = torch.zeros(orders.shape, dtype=torch.bool, device=orders.device)
        return mask.scatter_(1, orders[:, :count], True)

    # ----------------------------------------------------------------- transformer
    def _run(self, blocks: nn.ModuleList, x: torch.Tensor) -> torch.Tensor:
        for block in blocks:
            if self.config.grad_checkpointing and self.training:
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return x

    def _visible(self, mask: torch.Tensor) -> torch.Tensor:
        """(B, M + N) bool: the buffer and the unmasked tokens."""
        buffer = torch.ones(mask.shape[0], self.config.buffer_size, dtype=torch.bool, device=mask.device)
        return torch.cat([buffer, ~mask], dim=1)

    def forward_mae_encoder(self, tokens: torch.Tensor, mask: torch.Tensor, buffer: torch.Tensor) -> torch.Tensor:
        """Tokens (B, N, C), mask (B, N) (same count per row), buffer (B, M, D) -> (B, M + visible, D)."""
        x = torch.cat([buffer, self.token_proj(tokens)], dim=1) + self.encoder_pos
        x = self.encoder_input_norm(x)
        x = x[self._visible(mask)].view(tokens.shape[0], -1, x.shape[-1])
        return self.encoder_norm(self._run(self.encoder_blocks, x))

    def forward_mae_decoder(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Encoded (B, M + visible, D) -> diffusion conditions z (B, N, D)."""
        h = self.decoder_embed(h)
        b, d = h.shape[0], h.shape[-1]
        x = self.mask_token.to(h.dtype).expand(b, self.config.buffer_size + self.config.num_tokens, d).clone()
        x[self._visible(mask)] = h.reshape(-1, d)
        x = self.decoder_norm(self._run(self.decoder_blocks, x + self.decoder_pos))
        return x[:, self.config.buffer_size:] + self.diffusion_pos

    def forward_mae(self, tokens: torch.Tensor, mask: torch.Tensor, buffer: torch.Tensor) -> torch.Tensor:
        """(B, N, C) scaled tokens, (B, N) mask, (B, M, D) buffer -> z (B, N, D)."""
        return self.forward_mae_decoder(self.forward_mae_encoder(tokens, mask, buffer), mask)

    # ----------------------------------------------------------------- training
    def forward_loss(self, latents: torch.Tensor, images: torch.Tensor, lr_latents: torch.Tensor | None = None,
                     generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Diffusion loss on the masked tokens of raw VAE latents (B, N, C) given images (B, 3, H, W)
        [and raw LR latents (B, N_lr, C) for MAR-HR]. Returns ``loss`` and the batch's ``mask_ratio``."""
        x = latents * self.config.latent_scale
        buffer = self.condition_buffer(images, lr_latents, generator)
        if self.training:
            buffer = self.drop_condition(buffer, generator)
        ratio = self.sample_mask_ratio(x.device, generator)
        mask = self.random_masking(self.sample_orders(x.shape[0], x.device, generator), ratio)
        z = self.forward_mae(x, mask, buffer)
        loss = self.diffusion_head.loss(x, z, mask, self.config.diffusion_batch_mul, generator)
        return {"loss": loss, "mask_ratio": torch.tensor(ratio)}

    # ----------------------------------------------------------------- sampling
    @torch.no_grad()
    def sample(self, images: torch.Tensor, lr_latents: torch.Tensor | None = None, steps: int = 64,
               cfg: float = 3.0, cfg_schedule: str = "linear", temperature: float = 1.0,
               sampler: Sampler = "ddpm", diffusion_steps: int = 100, generator: torch.Generator | None = None,
               progress: bool = False) -> torch.Tensor:
        """Generate raw latents (B, N, C) for images (B, 3, H, W) [and MAR-HR's LR latents (B, N_lr, C)].

        ``steps`` auto-regressive steps in a random order per sample, tokens per step by
        ``mask_schedule``; each step's tokens are denoised in parallel by the diffusion head (``sampler``
        over ``diffusion_steps`` respaced steps). With ``cfg`` != 1 the conditional and unconditional
        branches run as one batch of 2B. Call in eval mode; ``generator`` (on the images' device) makes
        it deterministic.
        """
        if cfg_schedule not in CFG_SCHEDULES or sampler not in SAMPLERS:
            raise ValueError(f"cfg_schedule must be one of {CFG_SCHEDULES} and sampler one of {SAMPLERS}")
        n, b, device = self.config.num_tokens, images.shape[0], images.device
        counts = mask_schedule(n, steps)
        buffer = self.condition_buffer(images, lr_latents, generator)
        guided = cfg != 1.0
        if guided:
            buffer = torch.cat([buffer, self.null_buffer(b).to(buffer.dtype)])

        def pair(t: torch.Tensor) -> torch.Tensor:  # the conditional rows, then the unconditional ones
            return torch.cat([t, t]) if guided else t

        tokens = torch.zeros(b, n, self.config.token_channels, device=device)  # (B, N, C), filled as sampled
        mask = torch.ones(b, n, dtype=torch.bool, device=device)  # (B, N), True: not sampled yet
        orders = self.sample_orders(b, device, generator)  # (B, N) a random permutation of the tokens per sample
        generated = 0
        for count in tqdm(counts, desc=f"MAR-{self.config.stage.upper()}", disable=not progress, leave=False):
            z = self.forward_mae(pair(tokens), pair(mask), buffer)  # (B or 2B, N, D) conditions per position
            index = orders[:, generated:generated + count]  # (B, count)
            generated += count
            # this step's positions: (B or 2B, count, D), flattened to one row per token for the head
            z = torch.gather(z, 1, pair(index)[..., None].expand(-1, -1, z.shape[-1])).flatten(0, 1)
            omega = cfg_scale(cfg, generated, n, cfg_schedule) if guided else None
            new = self.diffusion_head.sample(z, temperature, omega, sampler, diffusion_steps, generator,
                                             clip_denoised=self.config.denoised_clip)  # (B * count, C)
            tokens.scatter_(1, index[..., None].expand(-1, -1, tokens.shape[-1]), new.view(b, count, -1).float())
            mask.scatter_(1, index, False)
        return tokens / self.config.latent_scale
