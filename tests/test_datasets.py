"""The VAE and MAR datasets read prepared real objects into correct, reproducible training items."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import TEST_SETTINGS, WATERTIGHT_YCB
from mar3d.data import layout
from mar3d.data.datasets import DEFAULT_PYRAMID, MARDataset, VAEDataset, stack_pyramids
from mar3d.data.sampling import inside_labels
from mar3d.evaluation.surface import point_to_surface
from test_samples import normalized_geometry
from test_views import project_with_stored_camera

SMALL_PYRAMID = (16384, 4096, 1024, 256)


def test_vae_item_is_a_nested_pyramid_with_supervision(prepared):
    torch.manual_seed(0)
    item = VAEDataset(prepared, ids=WATERTIGHT_YCB[:2])[0]
    assert [tuple(level.shape) for level in item["pyramid"]] == [(n, 6) for n in DEFAULT_PYRAMID]
    for finer, coarser in zip(item["pyramid"], item["pyramid"][1:]):
        assert torch.equal(finer[: len(coarser)], coarser)  # level k+1 is a subset of level k
    assert item["points"].shape == (20480, 3) and item["labels"].shape == (20480,)
    # Drawn fresh from the stored pool; the labels travel with their points.
    s = layout.read_samples(prepared, item["id"])
    stored = {tuple(p): l for p, l in zip(s["occ_points"][:: 1].tolist(), s["occ_labels"].tolist())}
    assert all(stored[tuple(p)] == l for p, l in zip(item["points"][:500].tolist(), item["labels"][:500].tolist()))
    # 1/4 near-surface: those points sit close to the surface, the uniform rest mostly does not.
    mesh = normalized_geometry(prepared, item["id"])
    distance = point_to_surface(item["points"].numpy(), mesh)
    assert np.median(distance[:5120]) < 0.02 < np.median(distance[5120:])


def test_vae_rotation_augmentation_keeps_geometry_and_labels(prepared):
    torch.manual_seed(1)
    dataset = VAEDataset(prepared, ids=[WATERTIGHT_YCB[0]], rotate=True)
    item = dataset[0]
    rotation = item["rotation"].numpy().astype(np.float64)
    stored = [v["rotation"] for v in layout.read_views(prepared, WATERTIGHT_YCB[0])]
    assert any(np.allclose(rotation, r, atol=1e-6) for r in stored)
    mesh = normalized_geometry(prepared, WATERTIGHT_YCB[0])
    rotated = mesh.copy()
    rotated.vertices = mesh.vertices @ rotation.T
    surface = item["pyramid"][1].numpy().astype(np.float64)
    assert point_to_surface(surface[:, :3], rotated).max() < 1e-5
    probe = surface[:, :3] + 0.01 * surface[:, 3:]  # rotated normals still point outward
    assert inside_labels(rotated.vertices, rotated.faces, probe).mean() < 0.02
    labels = inside_labels(rotated.vertices, rotated.faces, item["points"].numpy().astype(np.float64))
    assert (labels == item["labels"].numpy()).mean() > 0.999


def test_vae_draws_are_fresh_and_reproducible(prepared):
    dataset = VAEDataset(prepared, ids=[WATERTIGHT_YCB[0]], pyramid=SMALL_PYRAMID)
    torch.manual_seed(5)
    a, b = dataset[0], dataset[0]
    torch.manual_seed(5)
    c = dataset[0]
    assert not torch.equal(a["points"], b["points"])
    assert torch.equal(a["points"], c["points"]) and torch.equal(a["pyramid"][0], c["pyramid"][0])


def test_mar_item_pairs_a_white_composited_view_with_its_frame(prepared):
    dataset = MARDataset(prepared, ids=WATERTIGHT_YCB[:2], image_size=224)
    assert len(dataset) == 2 * TEST_SETTINGS["views"]
    torch.manual_seed(0)
    item = dataset[9]
    assert item["image"].shape == (3, 224, 224) and item["view"] == 9
    image = item["image"].numpy()
    assert image.min() >= 0 and image.max() <= 1
    assert np.allclose(image[:, 0, 0], 1.0) and np.allclose(image[:, -1, -1], 1.0)  # white background
    view = layout.read_views(prepared, item["id"])[9]
    assert np.allclose(item["rotation"].numpy(), view["rotation"], atol=1e-6)
    # The pyramid is already in the view frame: it projects onto the object in the image.
    points = item["pyramid"][0][:, :3].numpy().astype(np.float64)
    uv = project_with_stored_camera(points, view) * (224 / TEST_SETTINGS["resolution"])
    col, row = np.clip(uv.astype(int), 0, 223).T
    foreground = (image < 0.98).any(axis=0)
    assert foreground[row, col].mean() > 0.95


def test_mar_items_can_be_framed_as_inference_frames_an_input(prepared):
    """frame_fill reframes each render exactly as `preprocess` frames an input: the same picture for one view."""
    from PIL import Image

    from mar3d.pipeline.images import bbox_fill, preprocess

    plain = MARDataset(prepared, ids=WATERTIGHT_YCB[:1], image_size=224)
    framed = MARDataset(prepared, ids=WATERTIGHT_YCB[:1], image_size=224, frame_fill=0.865)
    item_id = framed.ids[0]
    for index in (0, 5):
        view_file = layout.item_dir(prepared, item_id) / layout.read_views(prepared, item_id)[index]["file"]
        expected, _ = preprocess(view_file, size=224)
        image = framed[index]["image"]
        assert (image - expected).abs().max() <= 1 / 255 + 1e-6  # the same picture, up to the 8-bit quantization
        foreground = lambda im: ((im < 0.98).any(dim=0).numpy() * 255).astype(np.uint8)
        assert bbox_fill(foreground(image)) == pytest.approx(0.865, abs=0.02)
        render_fill = bbox_fill(np.asarray(Image.open(view_file).getchannel("A")))
        assert bbox_fill(foreground(plain[index]["image"])) == pytest.approx(render_fill, abs=0.02)


def test_datasets_refuse_unknown_ids_and_empty_directories(prepared, tmp_path):
    with pytest.raises(ValueError, match="not prepared"):
        VAEDataset(prepared, ids=["no_such_object"])
    with pytest.raises(FileNotFoundError, match="not a prepared directory"):
        VAEDataset(tmp_path / "nothing")
    held_out = VAEDataset(prepared, exclude=[WATERTIGHT_YCB[0]])
    assert WATERTIGHT_YCB[0] not in held_out.ids


def test_dataloader_batches_items(prepared):
    loader = torch.utils.data.DataLoader(MARDataset(prepared, pyramid=SMALL_PYRAMID, image_size=64),
                                         batch_size=4, shuffle=True, num_workers=2)
    batch = next(iter(loader))
    assert batch["image"].shape == (4, 3, 64, 64)
    assert [tuple(level.shape) for level in batch["pyramid"]] == [(4, n, 6) for n in SMALL_PYRAMID]


def test_pyramids_stack_level_by_level():
    pyramids = [[torch.full((n, 6), float(b)) for n in SMALL_PYRAMID] for b in range(3)]
    batch = stack_pyramids(pyramids)
    assert [tuple(level.shape) for level in batch] == [(3, n, 6) for n in SMALL_PYRAMID]
    assert all(torch.equal(level[2], pyramids[2][k]) for k, level in enumerate(batch))
