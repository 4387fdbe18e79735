"""The stored samples are correct: on the surface, outward normals, inside labels a second method agrees with."""
from __future__ import annotations

import numpy as np
import pytest
import trimesh

from conftest import HOLEY_CLASSIC, TEST_SETTINGS, WATERTIGHT_YCB
from mar3d.data import layout
from mar3d.data.mesh_io import load_mesh
from mar3d.data.normalize import DECODE_BOX
from mar3d.data.sampling import inside_labels
from mar3d.evaluation.surface import point_to_surface


def normalized_geometry(root, item_id) -> trimesh.Trimesh:
    """The source mesh put into the normalized frame with the stored centre and scale."""
    meta = layout.read_meta(root, item_id)
    mesh = load_mesh(meta["source"]).geometry.copy()
    mesh.apply_translation(-np.asarray(meta["center"]))
    mesh.apply_scale(meta["scale"])
    return mesh


@pytest.mark.parametrize("item_id", WATERTIGHT_YCB + HOLEY_CLASSIC)
def test_normalization_centres_the_box_and_fits_radius(prepared, item_id):
    mesh = normalized_geometry(prepared, item_id)
    assert np.allclose(mesh.bounds.mean(axis=0), 0, atol=1e-9)
    assert np.linalg.norm(mesh.vertices, axis=1).max() == pytest.approx(0.95, abs=1e-9)


@pytest.mark.parametrize("item_id", WATERTIGHT_YCB)
def test_labels_agree_with_ray_parity_on_watertight_scans(prepared, item_id):
    mesh = normalized_geometry(prepared, item_id)
    assert mesh.is_watertight
    s = layout.read_samples(prepared, item_id)
    rng = np.random.default_rng(0)
    pick = rng.choice(len(s["occ_points"]), 20_000, replace=False)
    independent = mesh.contains(s["occ_points"][pick].astype(np.float64))  # ray parity (embree)
    agreement = (independent == s["occ_labels"][pick].astype(bool)).mean()
    assert agreement >= 0.995, agreement


@pytest.mark.parametrize("item_id", WATERTIGHT_YCB + HOLEY_CLASSIC)
def test_surface_points_lie_on_the_mesh_with_outward_normals(prepared, item_id):
    mesh = normalized_geometry(prepared, item_id)
    s = layout.read_samples(prepared, item_id)
    assert s["surface_points"].shape == (TEST_SETTINGS["surface_samples"], 3)
    assert s["surface_points"].dtype == np.float32
    pick = np.random.default_rng(1).choice(len(s["surface_points"]), 2000, replace=False)
    points, normals = s["surface_points"][pick].astype(np.float64), s["surface_normals"][pick].astype(np.float64)
    distance = point_to_surface(points, mesh)
    assert distance.max() < 1e-5  # float32 storage of coordinates below 1 rounds at ~6e-8
    assert np.allclose(np.linalg.norm(normals, axis=1), 1, atol=1e-5)
    # Outward: a step along the normal leaves the solid, a step against it enters (for most points;
    # thin walls and sharp creases can make a 0.01 step cross to the other side).
    step = 0.01
    outside = inside_labels(mesh.vertices, mesh.faces, points + step * normals) == 0
    inside = inside_labels(mesh.vertices, mesh.faces, points - step * normals) == 1
    floor = 0.99 if mesh.is_watertight else 0.95  # open surfaces: steps near the rim reach the other side
    assert outside.mean() > floor and inside.mean() > 0.9, (outside.mean(), inside.mean())


@pytest.mark.parametrize("item_id", HOLEY_CLASSIC)
def test_labels_are_sensible_on_meshes_with_holes(prepared, item_id):
    """Bunny (holes in the base) and teapot (open surface): ray parity is unreliable, winding numbers are not."""
    mesh = normalized_geometry(prepared, item_id)
    assert not mesh.is_watertight
    s = layout.read_samples(prepared, item_id)
    # Points just inside / outside the surface, away from the open boundary.
    boundary = mesh.vertices[np.unique(mesh.edges[trimesh.grouping.group_rows(mesh.edges_sorted, require_count=1)])]
    points, normals = s["surface_points"][:5000].astype(np.float64), s["surface_normals"][:5000].astype(np.float64)
    far = np.min(np.linalg.norm(points[:, None] - boundary[None, ::max(1, len(boundary) // 500)], axis=2), axis=1) > 0.1
    assert far.sum() > 1000
    step = 0.02
    assert inside_labels(mesh.vertices, mesh.faces, points[far] - step * normals[far]).mean() > 0.95
    assert inside_labels(mesh.vertices, mesh.faces, points[far] + step * normals[far]).mean() < 0.05
    # Inside fraction of the uniform pool is a plausible volume: > 0 and well below the box.
    near = layout.read_meta(prepared, item_id)["counts"]["occupancy_near_surface"]
    uniform_inside = s["occ_labels"][near:].mean()
    assert 0.01 < uniform_inside < 0.5


def test_occupancy_pool_layout(prepared):
    item_id = WATERTIGHT_YCB[0]
    s = layout.read_samples(prepared, item_id)
    meta = layout.read_meta(prepared, item_id)
    near = meta["counts"]["occupancy_near_surface"]
    assert near == TEST_SETTINGS["occupancy_samples"] // 4
    assert s["occ_labels"].dtype == np.uint8 and set(np.unique(s["occ_labels"])) == {0, 1}
    uniform = s["occ_points"][near:]
    assert np.abs(uniform).max() <= DECODE_BOX
    assert np.abs(uniform.mean(axis=0)).max() < 0.02  # uniform in the symmetric box
    # Near-surface points are within a few sigma of the surface; both noise scales are present.
    mesh = normalized_geometry(prepared, item_id)
    pick = np.random.default_rng(2).choice(near, 2000, replace=False)
    distance = point_to_surface(s["occ_points"][pick], mesh)
    assert np.percentile(distance, 99) < 0.1
    assert 0.003 < np.median(distance) < 0.02
