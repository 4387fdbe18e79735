"""Gaussian diffusion over token vectors: the noise schedule, the ε-prediction loss and two samplers.

Training uses the full 1000-step cosine schedule (Nichol & Dhariwal 2021). Sampling runs over a respaced
subset of those steps (evenly spread from t = T - 1 down to t = 0), with either

- ``ddim``: deterministic DDIM (eta 0, the paper's sampler); temperature scales the initial noise (lower:
  nearer the modes), and the per-step noise when eta > 0;
- ``ddpm``: ancestral sampling with the fixed posterior variance (the release's sampler, 100 steps);
  temperature scales the noise added at every step, as in LTH14/mar.

A model is passed as ``eps_fn(x_t, t) -> ε``, with ``t`` the (M,) original timestep indices in
[0, 1000), so one trained predictor serves every respacing.
"""
from __future__ import annotations

import math
from typing import Callable, Literal

import torch

EpsFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Sampler = Literal["ddim", "ddpm"]
SAMPLERS = ("ddim", "ddpm")


def cosine_alphas_cumprod(steps: int = 1000, offset: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """ᾱ_t for t = 0 .. steps-1 (float64, strictly decreasing): f(t) = cos²(π/2 · (t/T + s)/(1 + s))."""
    def f(t: float) -> float:
        return math.cos((t / steps + offset) / (1 + offset) * math.pi / 2) ** 2

    betas = torch.tensor([min(1 - f(t + 1) / f(t), max_beta) for t in range(steps)], dtype=torch.float64)
    return torch.cumprod(1 - betas, dim=0)


class GaussianDiffusion:
    """ε-parameterised diffusion on (M, C) vectors. Holds only the schedule; no learnable state."""

    def __init__(self, steps: int = 1000):
        self.num_steps = steps
        self.alphas_cumprod = cosine_alphas_cumprod(steps)  # (T,) float64

    def _at(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """ᾱ_t for (M,) indices, shaped (M, 1, ...) to broadcast against ``like`` (M, ...)."""
        a = self.alphas_cumprod.to(like.device)[t].to(like.dtype)
        return a.view(-1, *([1] * (like.dim() - 1)))

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(ᾱ_t) x_0 + sqrt(1 - ᾱ_t) ε. x0, noise: (M, C); t: (M,) long."""
        a = self._at(t, x0)
        return a.sqrt() * x0 + (1 - a).sqrt() * noise

    def training_losses(self, eps_fn: EpsFn, x0: torch.Tensor,
                        generator: torch.Generator | None = None) -> torch.Tensor:
        """Per-row ε-MSE (M,) for x0 (M, C) at uniform random timesteps (paper Eq. 5)."""
        t = torch.randint(0, self.num_steps, (x0.shape[0],), generator=generator, device=x0.device)
        noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        eps = eps_fn(self.q_sample(x0, t, noise), t)
        return (eps.float() - noise.float()).pow(2).mean(dim=-1)

    def respaced_timesteps(self, steps: int) -> torch.Tensor:
        """``steps`` original indices, evenly spread over [0, T - 1] with both ends, increasing (long)."""
        if not 2 <= steps <= self.num_steps:
            raise ValueError(f"sampling steps must be in [2, {self.num_steps}], got {steps}")
        return torch.linspace(0, self.num_steps - 1, steps, dtype=torch.float64).round().long()

    @torch.no_grad()
    def sample(self, eps_fn: EpsFn, shape: tuple[int, ...], sampler: Sampler = "ddpm", steps: int = 100,
               temperature: float = 1.0, eta: float = 0.0, clip_denoised: float | None = None,
               generator: torch.Generator | None = None, device: torch.device | str = "cpu") -> torch.Tensor:
        """Draw x_0 of ``shape`` (M, C), float32, from pure noise in ``steps`` respaced steps.

        Each step estimates x_0 = (x_t - sqrt(1 - ᾱ) ε̂) / sqrt(ᾱ), which multiplies the predictor's
        error by 1 / sqrt(ᾱ). At the first step, t = T - 1, ᾱ is 2.4e-9 (the schedule's clipped last
        beta): x_t is pure noise that says nothing about x_0, and that estimate multiplies the error by
        2·10⁴. LTH14 evaluates it anyway, which needs a predictor accurate to ~1e-4 there; any small or
        briefly trained head then gives samples in the thousands. So the first step takes the estimate
        E[x_0] = 0 (the latents are scaled, not shifted: their mean is small, and at the next timestep it
        weighs sqrt(ᾱ) <= 0.17) and calls no model. ``clip_denoised`` also clamps the later estimates to
        [-c, c] (ε to match), which keeps few-step DDIM stable on a head that is still inexact at high noise.
        """
        if sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler '{sampler}' (choose from {', '.join(SAMPLERS)})")
        timesteps = self.respaced_timesteps(steps).tolist()
        abar = self.alphas_cumprod.tolist()
        x = torch.randn(shape, generator=generator, device=device)
        if sampler == "ddim":
            x = x * temperature
        for i in reversed(range(steps)):
            t = timesteps[i]
            a, a_prev = abar[t], (abar[timesteps[i - 1]] if i > 0 else 1.0)
            if i == steps - 1:  # pure noise: see above
                x0, eps = torch.zeros_like(x), x / math.sqrt(1 - a)
            else:
                eps = eps_fn(x, torch.full((shape[0],), t, device=device, dtype=torch.long)).float()
                x0 = (x - math.sqrt(1 - a) * eps) / math.sqrt(a)
                if clip_denoised is not None:
                    x0 = x0.clamp(-clip_denoised, clip_denoised)
                    eps = (x - math.sqrt(a) * x0) / math.sqrt(1 - a)
            if sampler == "ddim":
                sigma = eta * math.sqrt((1 - a_prev) / (1 - a) * (1 - a / a_prev))
                x = math.sqrt(a_prev) * x0 + math.sqrt(max(1 - a_prev - sigma**2, 0.0)) * eps
            else:
                beta = 1 - a / a_prev  # the respaced step's beta
                x = (beta * math.sqrt(a_prev) / (1 - a)) * x0 + ((1 - a_prev) * math.sqrt(1 - beta) / (1 - a)) * x
                sigma = math.sqrt(beta * (1 - a_prev) / (1 - a))  # fixed posterior std ("fixed small")
            if i > 0 and sigma > 0:
                x = x + sigma * temperature * torch.randn(shape, generator=generator, device=device)
        return x
