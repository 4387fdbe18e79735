"""Mesh extraction on real fields: analytic SDFs, and the winding-number occupancy of YCB scans."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import trimesh

from conftest import ycb
from mar3d.data.mesh_io import load_mesh
from mar3d.data.normalize import DECODE_BOX, normalization
from mar3d.data.sampling import winding_numbers
from mar3d.evaluation.surface import surface_distances
from mar3d.mesh import PostprocessOptions, decode_grid, extract_meshes, grid_coordinates, grid_to_mesh, postprocess

SDF_SCALE = 50.0  # logits per unit of signed distance: |logit| < band (1) is a shell of +-0.02
WINDING_SCALE = 20.0  # logits per unit of winding number: a step of +-10 across the surface
# The winding-number field costs 0.3-3 us per point, so dense 129^3 takes seconds; coarser grids alias the
# bowl's wall (thinner than a cell at R=96) into fragments that differ between any two samplings.
REAL_RESOLUTION = 128


def cell(resolution: int) -> float:
    return 2 * DECODE_BOX / resolution


def batched(*fields):
    """One logits_fn over B shapes from B fields (Q, 3) -> (Q,)."""
    return lambda points: torch.stack([f(points[b]) for b, f in enumerate(fields)])


def sphere(center=(0.0, 0.0, 0.0), radius=0.5):
    c = torch.tensor(center)
    return lambda p: SDF_SCALE * (radius - (p - c).norm(dim=-1))


def torus(major=0.6, minor=0.15):
    def field(p):
        ring = torch.stack([p[:, :2].norm(dim=-1) - major, p[:, 2]], dim=-1)
        return SDF_SCALE * (minor - ring.norm(dim=-1))
    return field


def tilted_plate(thickness=0.02, radius=0.7, tilt=0.08):
    """A thin disc, thinner than a coarse cell, sharp like a confident occupancy net: most coarse corners
    miss it, and away from it the logits are far below the band."""
    normal = torch.tensor([tilt, 0.0, 1.0]) / np.hypot(tilt, 1.0)
    def field(p):
        height = p @ normal
        in_plane = (p - height[:, None] * normal).norm(dim=-1)
        sdf = torch.minimum(thickness / 2 - height.abs(), radius - in_plane)
        return 10 * torch.tanh(sdf / 0.002)
    return field


def winding_field(name: str):
    """The scan's occupancy (generalized winding number - 0.5) in the normalized frame, as logits."""
    mesh = load_mesh(ycb(name)).geometry
    center, scale = normalization(mesh.vertices)
    vertices, faces = (mesh.vertices - center) * scale, np.asarray(mesh.faces)
    def field(p):
        w = winding_numbers(vertices, faces, p.numpy().astype(np.float64))
        return torch.from_numpy(WINDING_SCALE * (w - 0.5)).float()
    return field, trimesh.Trimesh(vertices, faces)


def chamfer(a: trimesh.Trimesh, b: trimesh.Trimesh, count=20_000) -> tuple[float, float]:
    """Mean and max distance from surface samples of each mesh to the other's surface (both ways)."""
    d = np.concatenate(surface_distances(a, b, count))
    return float(d.mean()), float(d.max())


def test_grid_corners_span_the_box_exactly():
    resolution = 64
    n = resolution + 1
    index = torch.tensor([0, n * n * n - 1, (n * n + n + 1) * (resolution // 2)])
    points = grid_coordinates(index, resolution)
    assert torch.equal(points[0], torch.full((3,), -DECODE_BOX))
    assert torch.allclose(points[1], torch.full((3,), DECODE_BOX), atol=1e-6)
    assert torch.allclose(points[2], torch.zeros(3), atol=1e-6)


def test_sphere_vertices_are_exact_centred_and_outward():
    resolution, center, radius = 64, (0.31, -0.17, 0.093), 0.43
    result, = extract_meshes(batched(sphere(center, radius)), 1, resolution)
    mesh, h = result.mesh, cell(resolution)
    assert result.status == "ok" and result.watertight
    # Linear interpolation of a distance field along cell edges is nearly exact; a grid mapped with
    # R+1 instead of R would be off by over half a cell in all three checks.
    assert np.abs(np.linalg.norm(mesh.vertices - center, axis=1) - radius).max() < 0.05 * h
    assert np.abs(mesh.bounds.mean(axis=0) - center).max() < 0.05 * h
    assert np.abs(mesh.extents - 2 * radius).max() < 0.1 * h
    assert mesh.volume == pytest.approx(4 / 3 * np.pi * radius**3, rel=0.01)  # positive: normals point out


def test_a_batch_gives_the_same_meshes_as_one_shape_at_a_time():
    fields = [sphere((0.2, 0.1, -0.1), 0.45), torus()]
    together = extract_meshes(batched(*fields), 2, 64, chunk_size=4096)
    for field, joint in zip(fields, together):
        alone, = extract_meshes(batched(field), 1, 64, chunk_size=4096)
        assert joint.queries == alone.queries
        assert np.array_equal(joint.mesh.vertices, alone.mesh.vertices)
        assert np.array_equal(joint.mesh.faces, alone.mesh.faces)
    assert together[0].mesh.volume != pytest.approx(together[1].mesh.volume, rel=0.1)


def test_hierarchical_matches_dense_on_a_torus():
    resolution = 128
    fn = batched(torus())
    dense = decode_grid(fn, 1, resolution, "dense")
    fast = decode_grid(fn, 1, resolution, "hierarchical")
    assert torch.equal(dense.values[0] > 0, fast.values[0] > 0)
    assert dense.queries[0] == (resolution + 1) ** 3
    assert dense.queries[0] / fast.queries[0] > 8


@pytest.fixture(scope="module")
def ycb_grids():
    """Dense and hierarchical grids of two scans: a thin-walled bowl and a banana (levels 32, 64, 128)."""
    fields, meshes = zip(*(winding_field(name) for name in ("024_bowl", "011_banana")))
    fn = batched(*fields)
    grids = {mode: decode_grid(fn, 2, REAL_RESOLUTION, mode)
             for mode in ("dense", "hierarchical")}
    return grids, meshes


def test_hierarchical_matches_dense_on_real_scans(ycb_grids):
    grids, _ = ycb_grids
    dense, fast = grids["dense"], grids["hierarchical"]
    for b in range(2):
        agreement = ((dense.values[b] > 0) == (fast.values[b] > 0)).float().mean().item()
        assert agreement >= 0.999, agreement
        # The saving grows with resolution (the benchmark measures R=256); here ~10x and ~20x.
        assert dense.queries[b] / fast.queries[b] >= 8, (dense.queries[b], fast.queries[b])


def test_hierarchical_meshes_of_real_scans_match_dense_and_the_source(ycb_grids):
    grids, sources = ycb_grids
    h = cell(REAL_RESOLUTION)
    for b in range(2):
        # The bowl scan's field has a few isolated inside specks of one grid point, which only dense
        # decoding sees; both meshes drop them as floaters, and then they are the same surface.
        dense, _ = postprocess(grid_to_mesh(grids["dense"].values[b])[0], PostprocessOptions())
        fast, report = postprocess(grid_to_mesh(grids["hierarchical"].values[b])[0], PostprocessOptions())
        mean, worst = chamfer(dense, fast)
        assert mean < 0.001 * h and worst < 0.01 * h, (mean / h, worst / h)
    # The banana scan is watertight: its extraction lies on it and keeps its (positive) volume.
    mean, worst = chamfer(sources[1], fast)
    assert mean < 0.25 * h and worst < h, (mean / h, worst / h)
    assert report.watertight
    assert fast.volume == pytest.approx(sources[1].volume, rel=0.02)


def test_surface_tracking_recovers_a_wall_thinner_than_a_coarse_cell():
    fn = batched(tilted_plate())
    dense = decode_grid(fn, 1, 128, "dense").values[0] > 0
    tracked = decode_grid(fn, 1, 128).values[0] > 0
    untracked = decode_grid(fn, 1, 128, max_tracking_rounds=0).values[0] > 0
    assert torch.equal(tracked, dense)
    assert untracked.sum() < 0.9 * dense.sum()  # without tracking, much of the plate is lost


def test_floaters_are_removed():
    big, small = sphere((-0.2, 0.0, 0.0), 0.5), sphere((0.8, 0.8, 0.8), 0.05)
    fn = batched(lambda p: torch.maximum(big(p), small(p)))
    raw, = extract_meshes(fn, 1, 64, postprocess_options=None)
    clean, = extract_meshes(fn, 1, 64)
    assert len(raw.mesh.split(only_watertight=False)) == 2
    assert clean.report.components_in == 2 and clean.report.components_removed == 1
    assert len(clean.mesh.split(only_watertight=False)) == 1
    assert clean.mesh.bounds[1, 0] < 0.31  # only the big sphere, which ends at x = 0.3
    assert clean.watertight


def test_decimation_meets_the_face_budget_and_keeps_the_shape():
    fn = batched(sphere(radius=0.6))
    full, = extract_meshes(fn, 1, 64)
    small, = extract_meshes(fn, 1, 64, postprocess_options=PostprocessOptions(max_faces=2000))
    assert len(full.mesh.faces) > 10_000
    assert 1800 <= len(small.mesh.faces) <= 2000
    assert small.report.faces_out == len(small.mesh.faces)
    assert small.mesh.volume == pytest.approx(full.mesh.volume, rel=0.02)  # still outward, still a sphere
    assert small.watertight


@pytest.mark.parametrize("mode", ["hierarchical", "dense"])
def test_empty_and_full_fields_give_empty_meshes_with_a_status(mode):
    def empty(p):
        return torch.full(p.shape[:1], -5.0)

    def full(p):
        return torch.full(p.shape[:1], 5.0)

    results = extract_meshes(batched(empty, sphere(), full), 3, 64, mode)
    assert [r.status for r in results] == ["empty", "ok", "full"]
    for r in (results[0], results[2]):
        assert len(r.mesh.faces) == 0 and not r.watertight
    assert results[1].watertight
    if mode == "hierarchical":  # nothing near a surface: only the coarse grid is queried
        assert results[0].queries == results[2].queries == 33**3


def test_non_finite_logits_are_reported():
    def broken(p):
        logits = sphere()(p)
        logits[p[:, 0] > 0.9] = float("nan")
        return logits
    result, = extract_meshes(batched(broken), 1, 32)
    assert result.status == "nonfinite" and len(result.mesh.faces) == 0


def test_queries_are_chunked_and_counted():
    calls = []
    fn = batched(sphere(), torus())
    def counting(points):
        calls.append(points.shape)
        return fn(points)
    results = extract_meshes(counting, 2, 64, chunk_size=10_000)
    assert all(b == 2 and 2 * q <= 10_000 and d == 3 for b, q, d in calls)
    assert sum(q for _, q, _ in calls) >= max(r.queries for r in results)  # shorter lists are padded
    calls.clear()
    dense = extract_meshes(counting, 2, 64, "dense", chunk_size=10_000)
    assert sum(q for _, q, _ in calls) == dense[0].queries == dense[1].queries == 65**3


def test_logits_of_the_wrong_shape_raise_a_clear_error():
    with pytest.raises(ValueError, match="logits_fn returned shape"):
        extract_meshes(lambda p: p.norm(dim=-1, keepdim=True), 1, 16)
