"""The VAE's band token order (mar3d/models/token_order.py): what each index means, and that the VAE is
indifferent to it (the same latents, permuted; the same field)."""
from __future__ import annotations

import pytest
import torch
import trimesh

from mar3d.config import ConfigError, from_dict
from mar3d.models.fps import farthest_point_sample
from mar3d.models.token_order import band_count, band_order
from mar3d.models.vae import PyramidVAE, VAEConfig
from tests.conftest import ycb

SMALL = dict(width=64, heads=4, latent_channels=16, encoder_layers=1, decoder_layers=2, points_per_token=8,
             token_counts=[32, 128], local_decoder=True)


def surface_pyramid(config: VAEConfig, name: str, seed: int = 0) -> list[torch.Tensor]:
    """Nested levels (1, n_k, 6) of area-uniform points + normals on a real scan, centred in [-1, 1]^3."""
    mesh = trimesh.load(ycb(name), force="mesh")
    mesh.apply_translation(-mesh.bounding_box.centroid)
    mesh.apply_scale(1.8 / mesh.extents.max())
    points, faces = trimesh.sample.sample_surface(mesh, config.pyramid_sizes()[0], seed=seed)
    top = torch.cat([torch.from_numpy(points), torch.from_numpy(mesh.face_normals[faces])], -1).float()[None]
    return [top[:, :n] for n in config.pyramid_sizes()]


def test_band_count_is_about_twice_as_many_tokens_per_band_as_bands():
    assert [band_count(n) for n in (128, 256, 512, 1024)] == [8, 11, 16, 23]
    assert band_count(1) == 1


def test_band_order_sorts_by_height_bands_then_azimuth_on_a_real_scan():
    config = VAEConfig(**SMALL)
    points = surface_pyramid(config, "006_mustard_bottle")[0][..., :3]
    fps = torch.gather(points, 1, farthest_point_sample(points, 128)[..., None].expand(-1, -1, 3))
    order = band_order(fps)
    assert sorted(order[0].tolist()) == list(range(128))  # a permutation
    ordered = fps[0, order[0]]
    bands = ordered.view(8, 16, 3)  # 128 tokens: 8 bands of 16
    # every band lies above the one before it, and inside a band the azimuth around +y rises
    assert (bands[1:, :, 1].min(dim=1).values >= bands[:-1, :, 1].max(dim=1).values).all()
    azimuth = torch.atan2(bands[..., 0], bands[..., 2])
    assert (azimuth.diff(dim=1) >= 0).all()
    # a token index means a place: on two different objects the first band is at the bottom of each
    other = surface_pyramid(config, "024_bowl")[0][..., :3]
    other_fps = torch.gather(other, 1, farthest_point_sample(other, 128)[..., None].expand(-1, -1, 3))
    for cloud in (fps, other_fps):
        low = cloud[0, band_order(cloud)[0, :16], 1]
        assert low.max() <= cloud[0, :, 1].quantile(1 / 8 + 1e-6)


def test_the_vae_is_indifferent_to_the_order_same_latents_permuted_same_field():
    torch.manual_seed(0)
    fps_vae = PyramidVAE(VAEConfig(**SMALL)).eval()
    banded = PyramidVAE(VAEConfig(**SMALL, token_order="bands")).eval()
    banded.load_state_dict(fps_vae.state_dict())
    pyramid = surface_pyramid(fps_vae.config, "003_cracker_box")
    queries = torch.rand(1, 500, 3) * 2 - 1
    with torch.no_grad():
        for tokens in (32, 128):
            a, b = fps_vae.encode(pyramid, tokens), banded.encode(pyramid, tokens)
            assert not torch.allclose(a.mean, b.mean)  # another order ...
            permutation = band_order(a.positions)[0]
            torch.testing.assert_close(b.mean[0], a.mean[0, permutation], atol=1e-5, rtol=1e-4)  # ... of the same
            torch.testing.assert_close(b.positions[0], a.positions[0, permutation])
            torch.testing.assert_close(banded.decode(b.mean, queries), fps_vae.decode(a.mean, queries),
                                       atol=1e-4, rtol=1e-4)


def test_token_order_is_checked_and_needs_fps_queries():
    with pytest.raises(ConfigError, match="token_order"):
        from_dict(VAEConfig, {"token_order": "morton"}, "vae")
    with pytest.raises(ConfigError, match="needs queries: fps"):
        VAEConfig(queries="learned", token_order="bands").validate()
    assert VAEConfig().token_order == "fps"  # models saved before the setting existed keep their order


def test_the_latent_cache_fingerprint_tells_the_orders_apart():
    from mar3d.training.cache_latents import vae_fingerprint

    fps_vae = PyramidVAE(VAEConfig(**SMALL))
    banded = PyramidVAE(VAEConfig(**SMALL, token_order="bands"))
    banded.load_state_dict(fps_vae.state_dict())
    assert vae_fingerprint(fps_vae) != vae_fingerprint(banded)
