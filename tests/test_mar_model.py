"""The cascaded MAR: schedules, masking, CFG, condition augmentation, sizes, training, sampling, I/O."""
from __future__ import annotations

import copy
import dataclasses
import math

import pytest
import torch
import yaml

from mar3d.config import CONFIG_DIR, ConfigError, from_dict
from mar3d.models.io import load_mar, save_mar
from mar3d.models.mar import MAR, MARConfig, mask_schedule

PAPER_PARAMETERS = {"lr": 441_872_448, "hr": 445_084_736}  # trainable; the frozen CLIP/DINOv2 are not counted


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: one thread is as fast


def model_config(name: str, stage: str = "lr", **changes) -> MARConfig:
    data = yaml.safe_load((CONFIG_DIR / "mar" / f"{name}.yaml").read_text())["model"]
    return dataclasses.replace(from_dict(MARConfig, data, f"{name}.yaml"), stage=stage, **changes)


def tiny(stage: str = "lr", seed: int = 0, **changes) -> MAR:
    torch.manual_seed(seed)
    return MAR(model_config("tiny", stage, **changes))


def perturb(model: MAR, scale: float = 0.05) -> MAR:
    """Move every weight off its (partly zero) initialisation, so all of them matter in a comparison."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn_like(p))
    return model


def inputs(model: MAR, batch: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    c = model.config
    images = torch.rand(batch, 3, 40, 40, generator=g)  # resized to the encoder's input size
    latents = torch.randn(batch, c.num_tokens, c.token_channels, generator=g)
    lr = torch.randn(batch, c.lr_tokens, c.token_channels, generator=g) if c.stage == "hr" else None
    return images, latents, lr


# ----------------------------------------------------------------------------- schedules and masking
@pytest.mark.parametrize("n, steps", [(256, 64), (1024, 64), (32, 4), (16, 16), (5, 3), (256, 1), (128, 100), (1024, 256)])
def test_mask_schedule_counts(n, steps):
    counts = mask_schedule(n, steps)
    assert len(counts) == steps and sum(counts) == n and min(counts) >= 1
    assert all(a <= b for a, b in zip(counts, counts[1:]))  # non-decreasing
    # It follows the cosine curve to within a token, plus what ">= 1" adds early on (and takes back late).
    ideal = [n * (1 - math.cos(math.pi / 2 * s / steps)) for s in range(steps + 1)]
    forced = sum(max(0.0, 1 - (b - a)) for a, b in zip(ideal, ideal[1:]))
    generated = 0
    for s, count in enumerate(counts, 1):
        generated += count
        assert abs(generated - ideal[s]) <= 1 + forced


def test_mask_schedule_exact_values_and_limits():
    assert mask_schedule(32, 4) == [2, 7, 11, 12]
    assert mask_schedule(256, 64)[-4:] == [6, 6, 6, 6] and mask_schedule(256, 64)[0] == 1
    assert mask_schedule(256, 1) == [256]
    with pytest.raises(ValueError):
        mask_schedule(8, 9)


def test_masking_ratio_distribution_and_random_orders():
    model = tiny()
    g = torch.Generator().manual_seed(0)
    ratios = torch.tensor([model.sample_mask_ratio("cpu", g) for _ in range(20_000)])
    assert ratios.min() >= 0.7 and ratios.max() <= 1.0
    # Normal(1, 0.25) truncated to [0.7, 1]: mean 1 - 0.25 (φ(0) - φ(-1.2)) / (Φ(0) - Φ(-1.2)) = 0.8670.
    phi = lambda x: math.exp(-x * x / 2) / math.sqrt(2 * math.pi)  # noqa: E731
    big_phi = lambda x: 0.5 * (1 + math.erf(x / math.sqrt(2)))  # noqa: E731
    mean = 1 - 0.25 * (phi(0) - phi(-1.2)) / (big_phi(0) - big_phi(-1.2))
    assert abs(ratios.mean().item() - mean) < 0.003
    above = (big_phi(0) - big_phi(-0.4)) / (big_phi(0) - big_phi(-1.2))  # P(ratio > 0.9), the mode side
    assert abs((ratios > 0.9).float().mean().item() - above) < 0.01
    orders = model.sample_orders(64, generator=g)
    assert torch.equal(orders.sort(dim=1).values, torch.arange(32).expand(64, -1))  # permutations
    assert len({tuple(o) for o in orders.tolist()}) == 64  # one per sample
    mask = model.random_masking(orders, 0.8)
    assert (mask.sum(1) == math.ceil(32 * 0.8)).all()
    assert mask.gather(1, orders[:, :26]).all()  # the first slots of each order are the masked ones


# ----------------------------------------------------------------------------- condition and CFG
@pytest.mark.parametrize("stage", ["lr", "hr"])
def test_batched_cfg_forward_equals_separate_forwards(stage):
    model = perturb(tiny(stage)).eval()
    images, latents, lr = inputs(model, 3)
    g = torch.Generator().manual_seed(1)
    mask = model.random_masking(model.sample_orders(3, generator=g), 0.75)
    buffer = model.condition_buffer(images, lr, g)
    null = model.null_buffer(3)
    both = model.forward_mae(torch.cat([latents, latents]), torch.cat([mask, mask]), torch.cat([buffer, null]))
    cond = model.forward_mae(latents, mask, buffer)
    uncond = model.forward_mae(latents, mask, null)
    torch.testing.assert_close(both, torch.cat([cond, uncond]), rtol=1e-5, atol=1e-5)
    assert (cond - uncond).abs().max() > 1e-2  # the condition matters


def test_cfg_dropout_replaces_the_whole_buffer_with_the_null_sequence():
    model = perturb(tiny("hr")).train()
    images, _, lr = inputs(model, 2000)
    buffer = model.condition_buffer(images, lr, torch.Generator().manual_seed(0))
    assert buffer.shape == (2000, 16 + 32, 64)  # image tokens, then the LR tokens
    dropped = model.drop_condition(buffer, torch.Generator().manual_seed(1))
    is_null = (dropped == model.null_condition).flatten(1).all(1)
    kept = (dropped == buffer).flatten(1).all(1)
    assert torch.equal(is_null, ~kept)  # whole buffers, image and LR tokens together
    assert abs(is_null.float().mean().item() - 0.1) < 0.02


def test_condition_augmentation_statistics():
    """x' = t·ε + (1 - t)·x: mean 0.5 x; variance E[t²] + x² Var(t) in training (t ~ U(0.4, 0.6)), 0.25 at
    inference (t = 0.5); one t per sample."""
    model = tiny("hr")
    x = torch.tensor([-2.0, -1.0, 0.0, 1.0, 2.0]).expand(40_000, 1, 5)
    g = torch.Generator().manual_seed(0)
    var_t, mean_t2 = 0.2**2 / 12, 0.2**2 / 12 + 0.25
    train = model.train().augment_condition(x, g)
    torch.testing.assert_close(train.mean(0).squeeze(), 0.5 * x[0, 0], atol=0.01, rtol=0)
    torch.testing.assert_close(train.var(0).squeeze(), mean_t2 + x[0, 0] ** 2 * var_t, atol=0.01, rtol=0.02)
    infer = model.eval().augment_condition(x, g)
    torch.testing.assert_close(infer.mean(0).squeeze(), 0.5 * x[0, 0], atol=0.01, rtol=0)
    torch.testing.assert_close(infer.var(0).squeeze(), torch.full((5,), 0.25), atol=0.01, rtol=0)
    # One t per sample: the same draws (t, ε) applied to x = 1 and x = 2 differ by (1 - t).
    ones = torch.ones(1000, 4, 1)
    a = model.train().augment_condition(ones, torch.Generator().manual_seed(3))
    b = model.train().augment_condition(2 * ones, torch.Generator().manual_seed(3))
    t = 1 - (b - a)
    assert ((t >= 0.4 - 1e-6) & (t <= 0.6 + 1e-6)).all() and (t.std(dim=1) < 1e-6).all()
    # The switch: off, the LR tokens enter as they are.
    plain = tiny("hr", condition_augmentation=False)
    images, _, lr = inputs(plain, 2)
    torch.testing.assert_close(plain.condition_buffer(images, lr)[:, 16:], plain.lr_proj(lr))


# ----------------------------------------------------------------------------- sizes and configs
@pytest.mark.parametrize("stage", ["lr", "hr"])
def test_paper_config_has_the_release_size(stage):
    config = model_config("paper", stage)
    with torch.device("meta"):  # the CLIP / DINOv2 backbones load on first use, not here
        model = MAR(config)
    assert config.buffer_size == 257 + (256 if stage == "hr" else 0)
    assert sum(p.numel() for p in model.parameters()) == PAPER_PARAMETERS[stage]  # about 0.44 B


def test_bundled_configs_load_and_bad_keys_are_named():
    for name in ("tiny", "small", "paper"):
        config = model_config(name)
        assert config.validate() is None
    with pytest.raises(ConfigError, match="did you mean 'width'"):
        from_dict(MARConfig, {"widht": 64}, "model")
    with pytest.raises(ConfigError, match="did you mean 'patch_size'"):
        from_dict(MARConfig, {"image_encoder": {"patch": 8}}, "model")
    with pytest.raises(ConfigError, match="heads"):
        from_dict(MARConfig, {"width": 65, "heads": 4}, "model")


def test_the_framed_fine_tune_config_fits_the_model_it_fine_tunes():
    """small_framed fine-tunes a `small` MAR-LR (--init-from needs the same model) on renders framed as inference
    frames an input (the same fill), and is a valid run config; a fill outside (0.1, 1] is refused."""
    from mar3d.config import load_config
    from mar3d.pipeline.images import FRAMING_FILL
    from mar3d.training.config import MARRunConfig

    framed = load_config("small_framed", MARRunConfig, "mar")
    framed.validate()
    assert framed.model == model_config("small")
    assert framed.data.frame_fill == FRAMING_FILL
    assert load_config("small", MARRunConfig, "mar").data.frame_fill is None
    framed.data.frame_fill = 1.5
    with pytest.raises(ConfigError, match="frame_fill"):
        framed.validate()


def test_conv_stem_gives_the_patch_grid_with_overlapping_receptive_fields(tmp_path):
    """`image_encoder.stem: conv` reaches the patch stem's token grid through strided 3x3 convolutions, so a
    pixel on a patch's border reaches the neighbouring patch's token too (a patch stem's token sees its own
    patch only); a MAR with it saves and loads; a patch size that is not a power of two is refused."""
    from mar3d.models.image_encoder import SmallImageEncoder

    base = model_config("tiny").image_encoder
    grids = {}
    for stem in ("patch", "conv"):
        torch.manual_seed(0)
        encoder = SmallImageEncoder(dataclasses.replace(base, stem=stem)).eval()
        size, patch = base.image_size, base.patch_size
        image = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(1))
        touched = image.clone()
        touched[..., patch - 1, patch - 1] += 0.5  # the last pixel of patch (0, 0), next to patches (0, 1) and (1, 1)
        with torch.no_grad():
            change = (encoder.patch_embed(touched * 2 - 1) - encoder.patch_embed(image * 2 - 1)).abs().sum(1)[0]
            assert encoder(image).shape == (1, base.num_tokens, base.width)
        grids[stem] = change > 1e-6
    assert grids["patch"].shape == grids["conv"].shape == (size // patch, size // patch)
    assert grids["patch"].sum() == 1 and grids["patch"][0, 0]
    assert grids["conv"][0, 0] and grids["conv"][0, 1] and grids["conv"][1, 1]

    model = perturb(tiny("lr", image_encoder=dataclasses.replace(base, stem="conv"))).eval()
    save_mar(model, tmp_path / "mar")
    loaded = load_mar(tmp_path / "mar")
    assert loaded.config.image_encoder.stem == "conv"
    images = inputs(model, 2)[0]
    assert torch.equal(model.image_encoder(images), loaded.image_encoder(images))
    odd = dataclasses.replace(base, stem="conv", width=36, heads=4)  # channels 16, 18, 36: GroupNorm must divide them
    assert SmallImageEncoder(odd)(images).shape == (2, base.num_tokens, 36)
    for wrong in (dict(stem="conv", patch_size=6, image_size=36), dict(stem="convolution")):
        with pytest.raises(ConfigError, match="stem"):
            dataclasses.replace(base, **wrong).validate()


def test_stage_inputs_are_checked():
    lr_model, hr_model = tiny("lr"), tiny("hr")
    images, latents, _ = inputs(lr_model, 2)
    with pytest.raises(ValueError, match="MAR-HR needs LR latents"):
        hr_model.sample(images, steps=2)
    with pytest.raises(ValueError, match="takes no LR latents"):
        lr_model.forward_loss(latents, images, lr_latents=torch.zeros(2, 32, 32))


# ----------------------------------------------------------------------------- training and sampling
@pytest.fixture(scope="module")
def overfit():
    """Tiny MAR-LR (8 latent channels) trained on two (image, latent) pairs until it has memorised them."""
    model = tiny("lr", token_channels=8).train()
    g = torch.Generator().manual_seed(0)
    images = torch.stack([torch.full((3, 32, 32), 0.1), torch.full((3, 32, 32), 0.9)])
    images[1, :, :16] = 0.3
    latents = torch.randn(2, 32, 8, generator=g)
    steps = 400
    optim = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.95), weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optim, lambda s: min(1.0, (s + 1) / 20) * 0.5 * (1 + math.cos(math.pi * s / steps)))  # warm-up + cosine
    losses = []
    for _ in range(steps):
        loss = model.forward_loss(latents.repeat(4, 1, 1), images.repeat(4, 1, 1, 1), generator=g)["loss"]
        optim.zero_grad()
        loss.backward()
        optim.step()
        schedule.step()
        losses.append(loss.item())
    return model.eval(), images, latents, losses


def test_training_reduces_the_loss(overfit):
    losses = overfit[3]
    first, after_50 = sum(losses[:5]) / 5, sum(losses[45:55]) / 10
    assert after_50 < 0.8 * first, (first, after_50)
    assert sum(losses[-20:]) / 20 < 0.2 * first


@pytest.mark.parametrize("sampler, diffusion_steps", [("ddim", 10), ("ddpm", 50)])
def test_sampling_recovers_the_memorised_latents_of_the_right_image(overfit, sampler, diffusion_steps):
    """Mean squared error to the image's own latents < 0.1; to the other image's (unit variance) > 1."""
    model, images, latents, _ = overfit
    out = model.sample(images, steps=4, cfg=2.0, sampler=sampler, diffusion_steps=diffusion_steps,
                       generator=torch.Generator().manual_seed(0))
    error = (out - latents).pow(2).mean(dim=(1, 2))
    swapped = (out - latents.flip(0)).pow(2).mean(dim=(1, 2))
    assert (error < 0.1).all() and (swapped > 1.0).all(), (error, swapped)


@pytest.mark.parametrize("stage", ["lr", "hr"])
def test_sampling_shape_and_determinism(stage):
    model = perturb(tiny(stage), 0.02).eval()
    images, _, lr = inputs(model, 2)

    def run(seed, **options):
        return model.sample(images, lr, steps=3, diffusion_steps=5, generator=torch.Generator().manual_seed(seed),
                            **options)

    out = run(0, progress=True)
    assert out.shape == (2, model.config.num_tokens, model.config.token_channels) and out.isfinite().all()
    assert torch.equal(out, run(0)) and not torch.equal(out, run(1))
    assert torch.equal(run(0, sampler="ddim", cfg=1.0), run(0, sampler="ddim", cfg=1.0))
    assert run(0, cfg=4.0, cfg_schedule="constant", temperature=0.5).shape == out.shape


def test_save_load_round_trip(tmp_path):
    model = perturb(tiny("hr", latent_scale=0.7, lr_latent_scale=1.3)).eval()
    save_mar(model, tmp_path / "mar")
    loaded = load_mar(tmp_path / "mar")
    assert loaded.config == model.config and not loaded.training
    images, latents, lr = inputs(model, 2)
    for m in (model, loaded):
        m.train()
    a = model.forward_loss(latents, images, lr, generator=torch.Generator().manual_seed(0))["loss"]
    b = loaded.forward_loss(latents, images, lr, generator=torch.Generator().manual_seed(0))["loss"]
    assert torch.equal(a, b)
    for m in (model, loaded):
        m.eval()
    kwargs = dict(steps=3, diffusion_steps=5)
    assert torch.equal(model.sample(images, lr, generator=torch.Generator().manual_seed(0), **kwargs),
                       loaded.sample(images, lr, generator=torch.Generator().manual_seed(0), **kwargs))


# ----------------------------------------------------------------------------- CLIP + DINOv2
def test_clip_dinov2_encoder_loads_offline_from_pretrained_folders(tmp_path):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    clip = transformers.CLIPVisionModel(transformers.CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=224, patch_size=32))
    dinov2 = transformers.Dinov2Model(transformers.Dinov2Config(
        hidden_size=48, mlp_ratio=2, num_hidden_layers=2, num_attention_heads=4, image_size=224, patch_size=14))
    clip.save_pretrained(tmp_path / "clip")
    dinov2.save_pretrained(tmp_path / "dinov2")
    encoder = {"kind": "clip_dinov2", "image_size": 224, "patch_size": 14, "width": 32, "dinov2_width": 48,
               "clip_path": str(tmp_path / "clip"), "dinov2_path": str(tmp_path / "dinov2")}
    config = dataclasses.replace(model_config("tiny"), image_encoder=from_dict(
        type(model_config("tiny").image_encoder), encoder, "image_encoder"))
    model = MAR(config).eval()
    assert config.buffer_size == 257
    assert not any(k.startswith("image_encoder.") and "proj" not in k for k in model.state_dict())  # frozen: not saved

    images = torch.rand(2, 3, 224, 224)
    tokens = model.image_encoder(images)
    assert tokens.shape == (2, 257, 32)
    # The same tokens straight from transformers: [CLIP CLS] + projected DINOv2 patches, CLIP-normalised input.
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
    x = (images - mean) / std
    with torch.no_grad():
        expected_cls = transformers.CLIPVisionModel.from_pretrained(tmp_path / "clip")(pixel_values=x).last_hidden_state[:, :1]
        patches = transformers.Dinov2Model.from_pretrained(tmp_path / "dinov2")(pixel_values=x).last_hidden_state[:, 1:]
    torch.testing.assert_close(tokens[:, :1], expected_cls)
    torch.testing.assert_close(tokens[:, 1:], model.image_encoder.dinov2_proj(patches))
    assert not any(p.requires_grad for p in model.image_encoder._backbones.clip.parameters())
    assert copy.deepcopy(model).image_encoder._backbones is model.image_encoder._backbones  # EMA copies share them
    model.train()
    model.forward_loss(torch.randn(2, 32, 32), images)["loss"].backward()
    assert model.sample(images, steps=2, diffusion_steps=3).shape == (2, 32, 32)
    save_mar(model, tmp_path / "mar")
    assert load_mar(tmp_path / "mar").image_encoder(images).shape == (2, 257, 32)
