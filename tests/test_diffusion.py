"""The noise schedule, the two samplers and the diffusion head do what the maths says."""
from __future__ import annotations

import math

import pytest
import torch

from mar3d.models.diffusion import GaussianDiffusion
from mar3d.models.diffusion_head import DiffusionHead


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: one thread is as fast


def gaussian_eps(mean: torch.Tensor, std: torch.Tensor, diffusion: GaussianDiffusion):
    """The exact ε-predictor E[ε | x_t] for data ~ N(mean, diag(std²))."""
    def eps_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = diffusion.alphas_cumprod[t].float()[:, None]
        return (1 - a).sqrt() * (x - a.sqrt() * mean) / (a * std**2 + 1 - a)
    return eps_fn


def test_cosine_schedule_and_respacing():
    d = GaussianDiffusion(1000)
    abar = d.alphas_cumprod
    assert abar.shape == (1000,) and abar.dtype == torch.float64
    assert (abar[1:] < abar[:-1]).all()  # strictly decreasing
    assert abar[0] > 0.9999 and abar[-1] < 1e-4
    f = lambda t: math.cos((t / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    for t in (0, 499, 900):
        assert abs(abar[t].item() - f(t + 1) / f(0)) < 1e-9  # ᾱ_t = f(t + 1) / f(0) before beta clipping
    steps = d.respaced_timesteps(100)
    assert steps[0] == 0 and steps[-1] == 999 and len(steps.unique()) == 100 and (steps.diff() > 0).all()
    assert d.respaced_timesteps(2).tolist() == [0, 999]
    for bad in (1, 1001):
        with pytest.raises(ValueError):
            d.respaced_timesteps(bad)


def test_q_sample_statistics():
    d = GaussianDiffusion(1000)
    g = torch.Generator().manual_seed(0)
    x0 = torch.full((200_000, 1), 2.0)
    for t in (0, 300, 700, 999):
        xt = d.q_sample(x0, torch.full((len(x0),), t), torch.randn(x0.shape, generator=g))
        a = d.alphas_cumprod[t].item()
        assert abs(xt.mean().item() - 2 * math.sqrt(a)) < 0.01
        assert abs(xt.std().item() - math.sqrt(1 - a)) < 0.01


@pytest.mark.parametrize("sampler, steps", [("ddpm", 1000), ("ddim", 250)])
def test_samplers_with_the_exact_predictor_reproduce_the_data(sampler, steps):
    """With the true ε of a Gaussian, both samplers return that Gaussian. (With fewer steps both shrink
    the spread a little: 100-step DDPM gives std 0.285 for 0.3, 25-step DDIM 0.274.)"""
    d = GaussianDiffusion(1000)
    mean, std = torch.tensor([1.5, -0.5]), torch.tensor([0.3, 0.8])
    x = d.sample(gaussian_eps(mean, std, d), (20_000, 2), sampler, steps, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(x.mean(0), mean, atol=0.03), x.mean(0)
    assert torch.allclose(x.std(0), std, rtol=0.02), x.std(0)


def test_ddim_is_deterministic_and_temperature_narrows_ddpm():
    d = GaussianDiffusion(1000)
    mean, std = torch.zeros(2), torch.ones(2)
    eps = gaussian_eps(mean, std, d)
    a = d.sample(eps, (8, 2), "ddim", 10, generator=torch.Generator().manual_seed(3))
    b = d.sample(eps, (8, 2), "ddim", 10, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    cold = d.sample(eps, (20_000, 2), "ddpm", 50, temperature=0.5, generator=torch.Generator().manual_seed(0))
    assert cold.std() < 0.8  # lower temperature, narrower samples


def test_head_starts_at_zero_and_loss_ignores_unmasked_tokens():
    torch.manual_seed(0)
    head = DiffusionHead(channels=4, cond_dim=8, width=16, depth=2)
    x, z = torch.randn(10, 4), torch.randn(10, 8)
    assert torch.equal(head(x, torch.randint(0, 1000, (10,)), z), torch.zeros(10, 4))  # adaLN-Zero
    for p in head.parameters():  # leave the zero start so the loss depends on the targets
        p.data.add_(0.1 * torch.randn_like(p))
    target, mask = torch.randn(2, 5, 4), torch.tensor([[1, 0, 1, 0, 0], [0, 0, 1, 1, 1]])
    loss = head.loss(target, z.view(2, 5, 8), mask, batch_mul=4, generator=torch.Generator().manual_seed(1))
    changed = target.clone()
    changed[mask == 0] = 100.0
    again = head.loss(changed, z.view(2, 5, 8), mask, batch_mul=4, generator=torch.Generator().manual_seed(1))
    assert torch.equal(loss, again)


def test_guided_sampling_combines_the_pair():
    torch.manual_seed(0)
    head = DiffusionHead(channels=3, cond_dim=8, width=16, depth=2)
    for p in head.parameters():
        p.data.add_(0.2 * torch.randn_like(p))
    zc, zu = torch.randn(6, 8), torch.randn(6, 8)

    def run(z, cfg):
        return head.sample(z, cfg=cfg, sampler="ddim", steps=8, generator=torch.Generator().manual_seed(5))

    # ω = 1 is the conditional branch alone, ω = 0 the unconditional one (same noise: same generator).
    assert torch.allclose(run(torch.cat([zc, zu]), 1.0), run(zc, None), atol=1e-5)
    assert torch.allclose(run(torch.cat([zc, zu]), 0.0), run(zu, None), atol=1e-5)
    assert not torch.allclose(run(torch.cat([zc, zu]), 3.0), run(zc, None), atol=1e-3)
    with pytest.raises(ValueError):
        run(torch.randn(5, 8), 2.0)


MOG_MEANS = torch.tensor([[-1.5, 0.5], [1.5, -0.5]])
MOG_CHOL = torch.tensor([[[0.3, 0.0], [0.1, 0.2]], [[0.2, 0.0], [-0.1, 0.25]]])


def draw_mixture(n: int) -> torch.Tensor:
    """n points from an equal mixture of two correlated 2-D Gaussians."""
    k = torch.randint(0, 2, (n,))
    return MOG_MEANS[k] + (MOG_CHOL[k] @ torch.randn(n, 2, 1)).squeeze(-1)


@pytest.fixture(scope="module")
def mixture_head() -> DiffusionHead:
    torch.manual_seed(0)
    head = DiffusionHead(channels=2, cond_dim=4, width=64, depth=3)
    steps = 800
    optim = torch.optim.AdamW(head.parameters(), lr=2e-3, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optim, steps)
    z = torch.ones(256, 4)
    for _ in range(steps):
        loss = head.loss(draw_mixture(256), z, torch.ones(256), batch_mul=1)
        optim.zero_grad()
        loss.backward()
        optim.step()
        schedule.step()
    return head.eval()


@pytest.mark.parametrize("sampler, steps, clip", [("ddpm", 100, None), ("ddim", 25, 4.0)])
def test_head_learns_a_2d_mixture_of_gaussians(mixture_head, sampler, steps, clip):
    """Tolerances: weights ± 0.05, component means ± 0.1, covariance entries ± 0.03 (true entries
    -0.02 .. 0.09). Deterministic DDIM has no noise to wash out the head's errors at high noise, so it
    clamps the x_0 estimates (at 4; the data lie within ±2.6)."""
    x = mixture_head.sample(torch.ones(4000, 4), sampler=sampler, steps=steps, clip_denoised=clip,
                            generator=torch.Generator().manual_seed(0))
    component = torch.cdist(x, MOG_MEANS).argmin(1)
    covs = MOG_CHOL @ MOG_CHOL.transpose(1, 2)
    for j in range(2):
        part = x[component == j]
        assert abs(len(part) / len(x) - 0.5) < 0.05, (j, len(part))
        assert torch.allclose(part.mean(0), MOG_MEANS[j], atol=0.1), (j, part.mean(0))
        assert torch.allclose(torch.cov(part.T), covs[j], atol=0.03), (j, torch.cov(part.T))


def test_the_first_step_starts_from_pure_noise_without_the_model():
    """At t = T - 1 (ᾱ = 2.4e-9) an ε error of 1e-3 would move x_0 by ~20: the sampler does not ask the model."""
    d = GaussianDiffusion(1000)
    exact = gaussian_eps(torch.zeros(2), torch.ones(2), d)
    calls = []

    def off_at_the_start(x, t):
        calls.append(int(t[0]))
        return exact(x, t) + (0.01 if t[0] == 999 else 0.0)

    for sampler in ("ddpm", "ddim"):
        calls.clear()
        x = d.sample(off_at_the_start, (1000, 2), sampler, 20, generator=torch.Generator().manual_seed(0))
        assert 999 not in calls and len(calls) == 19
        assert x.abs().max() < 6
