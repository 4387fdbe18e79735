"""Pyramid VAE blocks: shapes, invariants, variants, and the model folder round trip."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mar3d.config import ConfigError, load_config
from mar3d.models.fps import farthest_point_sample
from mar3d.models.io import load_vae, save_vae
from mar3d.models.vae import PyramidVAE, VAEConfig
from mar3d.training.config import VAERunConfig

SMALL = dict(width=64, heads=4, latent_channels=16, encoder_layers=1, decoder_layers=2)


def real_pyramid(config: VAEConfig, batch: int = 2, seed: int = 0) -> list[torch.Tensor]:
    """Nested levels of points on spheres of different radii (xyz + outward normal)."""
    g = torch.Generator().manual_seed(seed)
    sizes = config.pyramid_sizes()
    normals = torch.nn.functional.normalize(torch.randn(batch, sizes[0], 3, generator=g), dim=-1)
    radii = torch.linspace(0.4, 0.9, batch)[:, None, None]
    top = torch.cat([normals * radii, normals], dim=-1)
    return [top[:, :n] for n in sizes]


@pytest.mark.parametrize("queries", ["fps", "learned"])
def test_token_counts_and_shapes(queries):
    config = VAEConfig(**SMALL, queries=queries, token_counts=[16, 64])
    vae = PyramidVAE(config).eval()
    assert config.level_sizes(64) == [1024, 256, 64] and config.level_sizes(16) == [256, 64, 16]
    pyramid = real_pyramid(config)
    for tokens in config.token_counts:
        posterior = vae.encode(pyramid, tokens)
        assert posterior.mean.shape == posterior.logvar.shape == (2, tokens, 16)
        kl = posterior.kl()
        assert kl.shape == (2,) and (kl >= 0).all()
    output = vae(pyramid, torch.rand(2, 300, 3) * 2 - 1, 64)
    assert output.logits.shape == (2, 300) and output.kl.shape == (2,)
    assert torch.equal(output.anchor_error, torch.zeros(2))  # no local decoder


@pytest.mark.parametrize("queries, local_decoder", [("fps", True), ("learned", False)])
def test_encoder_and_decoder_parameters_split_the_model_by_what_each_computes(queries, local_decoder):
    """The encoder's parameters are exactly those the posterior depends on, the decoder's those the field does:
    training the decoder alone (train.decoder_only) then cannot move a latent."""
    config = VAEConfig(**SMALL, queries=queries, token_counts=[16, 64], local_decoder=local_decoder)
    vae = PyramidVAE(config)
    for p in vae.parameters():
        torch.nn.init.normal_(p, std=0.1)  # no zero-initialised layer may hide a dependence
    encoder, decoder = vae.encoder_parameters(), vae.decoder_parameters()
    assert len(encoder) + len(decoder) == len(list(vae.parameters()))
    assert {id(p) for p in encoder}.isdisjoint(id(p) for p in decoder)
    posterior = vae.encode(real_pyramid(config), 64)
    (posterior.mean.sum() + posterior.logvar.sum()).backward()
    other_count = {id(vae.learned_queries["16"])} if queries == "learned" else set()  # 64 tokens were encoded
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in encoder if id(p) not in other_count)
    assert all(p.grad is None for p in decoder)
    vae.zero_grad(set_to_none=True)
    vae.decode(torch.randn(2, 64, 16), torch.rand(2, 300, 3) * 2 - 1).sum().backward()
    assert all(p.grad is not None for p in decoder) and all(p.grad is None for p in encoder)


def test_kl_is_zero_exactly_at_the_prior():
    from mar3d.models.vae import Posterior

    assert torch.allclose(Posterior(torch.zeros(1, 4, 2), torch.zeros(1, 4, 2)).kl(), torch.zeros(1))
    assert (Posterior(torch.randn(3, 4, 2), torch.randn(3, 4, 2)).kl() > 0).all()


def test_training_latents_are_seeded_samples_or_the_mean_by_share():
    """``mean_decode_share`` decides per shape, from the shape's seed, whether it trains on its mean."""
    from mar3d.models.vae import Posterior

    posterior = Posterior(torch.randn(64, 4, 2), torch.zeros(64, 4, 2))

    def sample_per_shape(posterior, seeds, mean_share=0.0):
        return posterior.sample_per_shape(seeds, mean_share)
    seeds = torch.arange(64)

    def is_mean(latents):
        return (latents == posterior.mean).flatten(1).all(1)

    assert not is_mean(sample_per_shape(posterior, seeds)).any()
    assert is_mean(sample_per_shape(posterior, seeds, mean_share=1.0)).all()
    half = sample_per_shape(posterior, seeds, mean_share=0.5)
    assert 16 < is_mean(half).sum() < 48  # about half, chosen by seed
    assert torch.equal(half, sample_per_shape(posterior, seeds, mean_share=0.5))  # deterministic
    one = sample_per_shape(Posterior(posterior.mean[5:6], posterior.logvar[5:6]), seeds[5:6], mean_share=0.5)
    assert torch.equal(one, half[5:6])  # a shape's choice and noise do not depend on its batch


def test_extra_latent_noise_is_seeded_per_shape_and_scaled_by_its_spread():
    """train.latent_noise: each shape's latents get Gaussian noise of that many times their own std, drawn from
    the shape's seed after its mean-or-sample choice (which stays the same)."""
    from mar3d.models.vae import Posterior

    mean = torch.randn(64, 32, 8) * torch.linspace(0.5, 3.0, 64)[:, None, None]
    posterior = Posterior(mean, torch.full_like(mean, -40.0))  # a point posterior: only the extra noise moves
    seeds = torch.arange(64)
    plain = posterior.sample_per_shape(seeds, mean_share=0.5)
    noisy = posterior.sample_per_shape(seeds, mean_share=0.5, extra_noise=0.25)
    assert torch.equal(noisy, posterior.sample_per_shape(seeds, mean_share=0.5, extra_noise=0.25))
    ratio = (noisy - plain).flatten(1).std(1) / mean.flatten(1).std(1)
    assert torch.allclose(ratio, torch.full((64,), 0.25), rtol=0.15), ratio
    alone = Posterior(mean[7:8], posterior.logvar[7:8]).sample_per_shape(seeds[7:8], 0.5, extra_noise=0.25)
    assert torch.equal(alone, noisy[7:8])


def test_forward_is_encode_sample_decode_with_each_shapes_seed():
    config = VAEConfig(**SMALL, token_counts=[16, 64])
    vae = PyramidVAE(config).eval()
    pyramid, points, seeds = real_pyramid(config), torch.rand(2, 100, 3) * 2 - 1, torch.tensor([3, 8])
    with torch.no_grad():
        output = vae(pyramid, points, 64, seeds=seeds, mean_share=0.5)
        posterior = vae.encode(pyramid, 64)
        expected = vae.decode(posterior.sample_per_shape(seeds, 0.5), points)
    assert torch.equal(output.logits, expected) and torch.equal(output.kl, posterior.kl())


def test_batched_encoding_and_decoding_equal_one_by_one():
    config = VAEConfig(**SMALL, token_counts=[16, 64])
    vae = PyramidVAE(config).eval()
    pyramid, points = real_pyramid(config, batch=3), torch.rand(3, 500, 3) * 2 - 1
    with torch.no_grad():
        latents = vae.encode(pyramid, 64).mean
        together = vae.decode(latents, points)
        for i in range(3):
            alone = vae.encode([level[i:i + 1] for level in pyramid], 64).mean
            assert torch.allclose(alone, latents[i:i + 1], atol=1e-5)
            assert torch.allclose(vae.decode(alone, points[i:i + 1]), together[i:i + 1], atol=1e-5)
        # The per-shape cache gives the same logits chunk by chunk.
        cache = vae.prepare_decoder(latents)
        chunks = torch.cat([vae.query(cache, c) for c in points.split(128, dim=1)], dim=1)
        assert torch.allclose(chunks, together, atol=1e-5)


def test_single_level_ablation_and_any_token_count():
    for tokens in (256, 512, 1024, 2048):
        config = VAEConfig(**SMALL, pyramid=False, token_counts=[tokens], points_per_token=2)
        assert config.num_levels == 1 and config.pyramid_sizes() == (2 * tokens,)
        vae = PyramidVAE(config).eval()
        with torch.no_grad():
            assert vae.encode(real_pyramid(config, batch=1), tokens).mean.shape == (1, tokens, 16)
    pyramid_config = VAEConfig(**SMALL, token_counts=[512], points_per_token=16)
    assert pyramid_config.level_sizes(512) == [8192, 2048, 512]
    assert len(PyramidVAE(pyramid_config).level_attention) == 3


def test_encoding_needs_the_right_levels():
    config = VAEConfig(**SMALL, token_counts=[16, 64])
    with pytest.raises(ValueError, match="lacks"):
        PyramidVAE(config).encode(real_pyramid(config)[1:], 64)


def test_farthest_points_spread_better_than_random():
    points = torch.rand(2, 4096, 3)
    index = farthest_point_sample(points, 128)
    assert all(len(set(row.tolist())) == 128 for row in index)

    def coverage(picked):  # the largest distance from any point to its nearest pick
        return torch.cdist(points, picked).min(dim=-1).values.max()

    fps = torch.gather(points, 1, index[..., None].expand(-1, -1, 3))
    assert coverage(fps) < 0.7 * coverage(points[:, :128])


@pytest.mark.parametrize("local_decoder", [False, True])
def test_model_folder_round_trip(tmp_path, local_decoder):
    config = VAEConfig(**SMALL, token_counts=[16, 64], local_decoder=local_decoder)
    vae = PyramidVAE(config).eval()
    save_vae(vae, tmp_path / "model", extra={"note": "test"})
    loaded = load_vae(tmp_path / "model")
    assert loaded.config == config
    pyramid, points = real_pyramid(config), torch.rand(2, 100, 3)
    with torch.no_grad():
        assert torch.equal(vae.decode(vae.encode(pyramid, 16).mean, points),
                           loaded.decode(loaded.encode(pyramid, 16).mean, points))
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == ["config.json", "model.safetensors"]


def test_bf16_autocast_matches_fp32_closely():
    config = VAEConfig(**SMALL, token_counts=[16, 64])
    vae = PyramidVAE(config).eval()
    pyramid, points = real_pyramid(config), torch.rand(2, 400, 3) * 2 - 1
    with torch.no_grad():
        reference = vae.decode(vae.encode(pyramid, 64).mean, points)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = vae.decode(vae.encode(pyramid, 64).mean, points)
    assert low.dtype == torch.bfloat16
    assert (low.float() - reference).abs().max() < 0.05 * reference.abs().max() + 0.05


def test_bundled_configs_load_and_paper_size_is_release_scale():
    for name in ("tiny", "small", "paper"):
        load_config(name, VAERunConfig, "vae")
    paper = load_config("paper", VAERunConfig, "vae").model
    assert (paper.width, paper.heads, paper.encoder_layers, paper.decoder_layers) == (768, 12, 8, 16)
    with torch.device("meta"):
        count = sum(p.numel() for p in PyramidVAE(paper).parameters())
    assert 150e6 < count < 250e6  # ~189 M


@pytest.mark.parametrize("data, message", [
    ({"model": {"widht": 64}}, "unknown key 'widht' in vae.model; did you mean 'width'"),
    ({"model": {"width": "big"}}, "vae.model.width: expected an integer"),
    ({"model": {"width": 65, "heads": 4}}, "divisible"),
    ({"model": {"queries": "random"}}, "must be one of"),
    ({"train": {"lr": -1.0}}, "train.lr"),
    ({"train": {"mean_decode_share": 1.5}}, "train.mean_decode_share must be in"),
    ({"model": {"mean_decode_share": 1.5}}, "train.mean_decode_share must be in"),  # moved there
    ({"model": {"kl_weight": 0.1}, "train": {"kl_weight": 0.2}}, "kl_weight is given in both model and train"),
    ({"trian": {}}, "did you mean 'train'"),
])
def test_config_errors_name_the_key(data, message):
    with pytest.raises(ConfigError, match=message):
        load_config(data, VAERunConfig, "vae")


def test_training_settings_live_in_train_and_older_files_still_load(tmp_path):
    """``kl_weight`` / ``mean_decode_share`` were model settings: older run configs (and checkpoints) move them
    to ``train``; older model folders carry them and load without them."""
    import json

    config = load_config({"model": {"kl_weight": 0.01, "mean_decode_share": 0.5}}, VAERunConfig, "vae")
    assert (config.train.kl_weight, config.train.mean_decode_share) == (0.01, 0.5)
    assert not hasattr(config.model, "kl_weight") and not hasattr(config.model, "mean_decode_share")
    assert load_config("tiny", VAERunConfig, "vae").train.mean_decode_share == 0.5
    vae = PyramidVAE(VAEConfig(**SMALL, token_counts=[16, 64]))
    save_vae(vae, tmp_path / "model")
    document = json.loads((tmp_path / "model" / "config.json").read_text())
    assert "kl_weight" not in document["config"] and "mean_decode_share" not in document["config"]
    document["config"].update(kl_weight=0.001, mean_decode_share=0.0)  # as exported before
    (tmp_path / "model" / "config.json").write_text(json.dumps(document))
    assert load_vae(tmp_path / "model").config == vae.config


def legacy_model_folder(vae: PyramidVAE, folder: Path) -> dict[str, torch.Tensor]:
    """A model folder as exported before the renaming (the former demo model's): weights under the older names."""
    from safetensors.torch import save_file

    from mar3d.models.vae import legacy_name

    save_vae(vae, folder)
    old = {legacy_name(k): v.contiguous() for k, v in vae.state_dict().items()}
    save_file(old, str(folder / "model.safetensors"))
    return old


def test_weights_of_the_older_per_level_layout_load_renamed(tmp_path):
    """The per-level cross-attention was three parallel lists (level_norm_q.K, level_norm_x.K, level_attn.K), as
    in the former demo model's weights: they load into LevelCrossAttention modules, same values, same outputs."""
    from mar3d.models.vae import current_name, legacy_name

    assert legacy_name("vae.level_attention.2.norm_context.weight") == "vae.level_norm_x.2.weight"
    assert current_name("ema.shadow.level_attn.1.to_kv.bias") == "ema.shadow.level_attention.1.attn.to_kv.bias"
    vae = PyramidVAE(VAEConfig(**SMALL, token_counts=[16, 64])).eval()
    old = {legacy_name(k): v for k, v in vae.state_dict().items()}
    assert "level_norm_q.0.weight" in old and not any(k.startswith("level_attention") for k in old)
    again = PyramidVAE(VAEConfig(**SMALL, token_counts=[16, 64])).eval()
    again.load_state_dict(old)  # strict
    pyramid = real_pyramid(vae.config)
    with torch.no_grad():
        assert torch.equal(again.encode(pyramid, 64).mean, vae.encode(pyramid, 64).mean)
    stored = legacy_model_folder(vae, tmp_path / "model")
    assert "level_attn.0.to_q.weight" in stored
    loaded = load_vae(tmp_path / "model").state_dict()
    assert loaded.keys() == {current_name(k) for k in stored}
    assert all(torch.equal(loaded[current_name(k)], v) for k, v in stored.items())


def test_the_latent_cache_fingerprint_of_a_vae_is_the_same_under_either_layout(tmp_path):
    import hashlib

    from mar3d.training.cache_latents import vae_fingerprint

    vae = PyramidVAE(VAEConfig(**SMALL, token_counts=[16, 64])).eval()
    stored = legacy_model_folder(vae, tmp_path / "model")
    digest = hashlib.sha256()  # as computed before the renaming: the older names, sorted
    for name, tensor in sorted(stored.items()):
        digest.update(name.encode())
        digest.update(tensor.float().numpy().tobytes())
    assert vae_fingerprint(load_vae(tmp_path / "model")) == digest.hexdigest()[:16]
    assert vae_fingerprint(vae) == digest.hexdigest()[:16]


def test_checkpoints_of_the_older_layout_resume_with_their_optimizer_state():
    """A training checkpoint saved with the older parameter layout: weights renamed as they load, and the
    optimizer's moments of each parameter come back to that parameter (the optimizer keeps the older order)."""
    from torch import nn

    from mar3d.config import to_dict
    from mar3d.training.common import parameter_groups
    from mar3d.training.vae import VAEModule

    config = load_config({"model": {**SMALL, "token_counts": [16, 64]}}, VAERunConfig, "vae")
    module = VAEModule(to_dict(config))
    vae = module.vae
    legacy = nn.Module()  # the older registration order and names, over the same parameters
    for name, child in vae.named_children():
        if name == "level_attention":
            legacy.level_norm_q = nn.ModuleList(level.norm_q for level in child)
            legacy.level_norm_x = nn.ModuleList(level.norm_context for level in child)
            legacy.level_attn = nn.ModuleList(level.attn for level in child)
        else:
            legacy.add_module(name, child)
    optimizer = torch.optim.AdamW(parameter_groups(legacy, 0.02), lr=1e-3)
    for i, p in enumerate(vae.parameters()):
        p.grad = torch.full_like(p, float(i + 1))
    optimizer.step()
    moments = {id(p): optimizer.state[p]["exp_avg"].clone() for p in vae.parameters()}
    checkpoint = {"state_dict": {f"vae.{k}": v for k, v in legacy.state_dict().items()} |
                                {f"ema.shadow.{k}": v for k, v in legacy.state_dict().items()} |
                                {"ema.updates": module.ema.updates.clone()},
                  "optimizer_states": [optimizer.state_dict()]}
    module.load_state_dict(checkpoint["state_dict"])  # strict: the older names are renamed on load
    resumed = module.configure_optimizers()["optimizer"]
    resumed.load_state_dict(checkpoint["optimizer_states"][0])
    assert all(torch.equal(resumed.state[p]["exp_avg"], moments[id(p)]) for p in vae.parameters())


def test_local_decoder_predicts_anchors_and_attends_near_them():
    """``local_decoder``: the same latents (C channels per token), anchors predicted from them, and a per-head
    Gaussian bias on the query's attention logits that favours tokens anchored near the query."""
    config = VAEConfig(**SMALL, token_counts=[16, 64], local_decoder=True)
    vae = PyramidVAE(config).eval()
    pyramid, points = real_pyramid(config, batch=3), torch.rand(3, 200, 3) * 2 - 1
    with torch.no_grad():
        posterior = vae.encode(pyramid, 64)
        assert posterior.mean.shape == (3, 64, 16)
        # The FPS points the tokens were queried at: on the input surface (spheres of radius 0.4 / 0.65 / 0.9).
        assert torch.allclose(posterior.positions.norm(dim=-1), torch.tensor([0.4, 0.65, 0.9])[:, None], atol=1e-5)
        cache = vae.prepare_decoder(posterior.mean)
        assert cache.anchors.shape == (3, 64, 3)
        bias = vae.locality_bias(cache.anchors, points)
        assert bias.shape == (3, config.heads, 200, 64) and (bias <= 0).all()
        nearest = torch.cdist(points, cache.anchors).argmin(-1)
        assert torch.equal(bias.argmax(-1), nearest[:, None].expand(-1, config.heads, -1))  # every head prefers it
        # Batched equals one by one; the training forward reports the anchors' squared error.
        together = vae.query(cache, points)
        for i in range(3):
            alone = vae.decode(posterior.mean[i:i + 1], points[i:i + 1])
            assert torch.allclose(alone, together[i:i + 1], atol=1e-5)
        output = vae(pyramid, points, 64, generator=torch.Generator().manual_seed(0))
        anchors = vae.prepare_decoder(posterior.sample(torch.Generator().manual_seed(0))).anchors
        expected = (anchors - posterior.positions).square().sum(-1).mean(-1)
        assert torch.allclose(output.anchor_error, expected, atol=1e-6)
    losses = vae.loss(output, (points.norm(dim=-1) < 0.5).float(), kl_weight=0.001, anchor_weight=0.5)
    assert torch.allclose(losses["loss"], losses["bce"] + 0.001 * losses["kl"] + 0.5 * losses["anchor"])
    with pytest.raises(ConfigError, match="local_decoder needs queries: fps"):
        VAEConfig(**SMALL, queries="learned", local_decoder=True).validate()


def test_local_decoder_learns_anchors_on_the_fps_points():
    """A few optimizer steps on one sphere: the anchor error falls, and it is what pulls the anchors there."""
    torch.manual_seed(0)
    config = VAEConfig(**SMALL, token_counts=[16, 64], local_decoder=True)
    vae = PyramidVAE(config)
    pyramid, points = real_pyramid(config, batch=2), torch.rand(2, 256, 3) * 2 - 1
    labels = (points.norm(dim=-1) < torch.tensor([0.4, 0.9])[:, None]).float()
    optimizer = torch.optim.Adam(vae.parameters(), lr=3e-3)
    errors = []
    for _ in range(60):
        losses = vae.loss(vae(pyramid, points, 16, generator=torch.Generator().manual_seed(1)), labels, 0.001, 1.0)
        optimizer.zero_grad()
        losses["loss"].backward()
        optimizer.step()
        errors.append(losses["anchor"].item())
    assert errors[-1] < 0.2 * errors[0], errors[::10]


def test_the_decoder_fine_tune_config_fits_the_vae_it_fine_tunes():
    """small_decoder fine-tunes the decoder of a `small` VAE (--init-from needs the same model and data settings)
    with its encoder frozen; `small` itself trains the whole VAE."""
    decoder = load_config("small_decoder", VAERunConfig, "vae")
    decoder.train.validate()
    small = load_config("small", VAERunConfig, "vae")
    assert decoder.model == small.model and decoder.data == small.data
    assert decoder.train.decoder_only and not small.train.decoder_only
    assert decoder.train.lr < small.train.lr
