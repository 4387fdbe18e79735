"""The shape metrics of docs/protocol.md §2, alignment and `mar3d evaluate`, on analytic shapes and real YCB scans."""
from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import trimesh

from conftest import ycb
from mar3d.cli.main import main
from mar3d.data.cameras import random_rotation, view_rotations
from mar3d.data.mesh_io import load_mesh
from mar3d.evaluation.align import candidate_rotations
from mar3d.evaluation.batch import Entry, find_meshes, match
from mar3d.evaluation.metrics import (SurfaceSamples, normalized, point_metrics, sample_points, transformed,
                                      volume_iou)
from mar3d.evaluation.protocol import evaluate_pair

N = 100_000


def sphere_samples(radius: float, seed: int) -> SurfaceSamples:
    directions = np.random.default_rng(seed).standard_normal((N, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    return SurfaceSamples(radius * directions, directions)


def similarity(rotation=np.eye(3), scale=1.0, shift=(0.0, 0.0, 0.0)) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3] = scale * np.asarray(rotation)
    m[:3, 3] = shift
    return m


def floor_cd(mesh: trimesh.Trimesh) -> float:
    """CD between two independent 100k samplings of one (normalized) surface: the best any alignment can do."""
    mesh = normalized(mesh)
    return point_metrics(sample_points(mesh, N, 100), sample_points(mesh, N, 101))["cd"]


@pytest.fixture(scope="module")
def mustard() -> trimesh.Trimesh:
    return load_mesh(ycb("006_mustard_bottle")).geometry


@pytest.fixture(scope="module")
def banana() -> trimesh.Trimesh:
    return load_mesh(ycb("011_banana")).geometry


def test_concentric_spheres_score_their_gap_until_normalized():
    r1, r2 = 1.0, 1.25
    gap = r2 - r1
    inner, outer = sphere_samples(r1, 0), sphere_samples(r2, 1)
    taus = (0.5 * gap, 0.95 * gap, 1.05 * gap, 1.5 * gap)
    m = point_metrics(inner, outer, thresholds=taus)
    assert m["cd"] == pytest.approx(gap, rel=0.01)
    assert m["cd_sum"] == pytest.approx(2 * gap, rel=0.01)
    assert m["cd_squared"] == pytest.approx(gap**2, rel=0.02)
    # Every point is at least `gap` from the other sphere, and with 100k points its nearest one is close to that.
    assert [m[f"f_score@{t:g}"] for t in taus] == [0.0, 0.0, pytest.approx(1.0, abs=1e-3), 1.0]
    assert m["nc"] == pytest.approx(1.0, abs=1e-4)

    # Normalizing first (what `mar3d evaluate` does) makes the two spheres the same shape.
    small = trimesh.creation.icosphere(4, radius=r1)
    large = transformed(small, similarity(scale=r2, shift=(3.0, -1.0, 0.5)))
    apart = evaluate_pair(small, large, align="none")
    same = evaluate_pair(small, small, align="none")
    for key, value in same.metrics.items():
        assert apart.metrics[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key
    assert same.metrics["f_score@0.02"] > 0.9999 and same.metrics["cd"] < 0.006


def test_mesh_against_itself(mustard):
    samples = sample_points(normalized(mustard), N, 0)
    exact = point_metrics(samples, samples)
    assert exact["cd"] == 0 and exact["nc"] == pytest.approx(1.0) and exact["f_score@0.02"] == 1.0
    # Two independent samplings: CD at the sampling floor, perfect F-scores, NC near 1.
    m = evaluate_pair(mustard, mustard, align="none").metrics
    assert m["cd"] < 0.005
    assert m["f_score@0.1"] == m["f_score@0.05"] == 1.0 and m["f_score@0.02"] > 0.999
    assert m["nc"] > 0.99


def test_search_and_icp_put_a_moved_scan_back(mustard):
    rng = np.random.default_rng(7)
    rotation = random_rotation(rng)
    moved = transformed(mustard, similarity(rotation, scale=4.0, shift=rng.normal(size=3)))
    result = evaluate_pair(moved, mustard, align="search")
    # The ground truth is placed in the prediction's frame, so the floor is measured there.
    assert result.metrics["cd"] < 1.1 * floor_cd(moved)
    error = np.degrees(np.arccos(np.clip((np.trace(result.alignment.rotation.T @ rotation) - 1) / 2, -1, 1)))
    assert error < 0.5
    assert result.alignment.method == "search"


def test_candidate_rotations_are_the_72_distinct_products():
    rotations = candidate_rotations()
    assert rotations.shape == (72, 3, 3)
    assert np.allclose(np.einsum("kij,kil->kjl", rotations, rotations), np.eye(3))
    assert np.allclose(np.linalg.det(rotations), 1)


def test_scores_ignore_face_order_and_scale(banana):
    rng = np.random.default_rng(3)
    # A prediction that differs from the ground truth, so that every metric is informative.
    noisy = trimesh.Trimesh(banana.vertices + rng.normal(scale=1e-3, size=banana.vertices.shape), banana.faces,
                            process=False)
    reference = evaluate_pair(noisy, banana, align="none").metrics
    assert 0.005 < reference["cd"] and reference["f_score@0.02"] < 1

    renumber = rng.permutation(len(noisy.vertices))
    inverse = np.argsort(renumber)
    faces = inverse[np.asarray(noisy.faces)][rng.permutation(len(noisy.faces))]
    faces = np.roll(faces, 1, axis=1)  # each face starts at another corner, same winding
    shuffled = trimesh.Trimesh(np.asarray(noisy.vertices)[renumber], faces, process=False)
    scaled = transformed(noisy, similarity(scale=37.0, shift=(5.0, -2.0, 1.0)))
    for variant in (shuffled, scaled):
        m = evaluate_pair(variant, banana, align="none").metrics
        for key, value in reference.items():
            assert m[key] == pytest.approx(value, rel=1e-6, abs=1e-4 if "@" in key else 1e-9), key


def test_volume_iou_of_overlapping_balls():
    ball = trimesh.creation.icosphere(4, radius=0.8)
    offset = transformed(ball, similarity(shift=(0.4, 0.0, 0.0)))
    r, d = 0.8, 0.4
    lens = np.pi * (4 * r + d) * (2 * r - d) ** 2 / 12  # volume of the intersection of two balls
    expected = lens / (2 * 4 / 3 * np.pi * r**3 - lens)
    assert volume_iou(ball, offset, resolution=48) == pytest.approx(expected, rel=0.03)
    assert volume_iou(ball, ball, resolution=48) == 1.0


def test_flipped_normals_keep_normal_consistency(mustard):
    samples = sample_points(normalized(mustard), N, 0)
    other = sample_points(normalized(mustard), N, 1)
    flipped = SurfaceSamples(samples.points, -samples.normals)
    assert point_metrics(flipped, other)["nc"] == pytest.approx(point_metrics(samples, other)["nc"], abs=1e-12)

    faces = np.asarray(mustard.faces).copy()
    half = np.random.default_rng(0).random(len(faces)) < 0.5
    faces[half] = faces[half, ::-1]  # half the faces turned inside out
    inconsistent = trimesh.Trimesh(mustard.vertices, faces, process=False)
    nc = evaluate_pair(inconsistent, mustard, align="none").metrics["nc"]
    assert nc == pytest.approx(evaluate_pair(mustard, mustard, align="none").metrics["nc"], abs=2e-3)


def test_ids_pair_by_stem_folder_and_view_suffix(tmp_path):
    pred = tmp_path / "pred"
    (pred / "cow").mkdir(parents=True)
    (pred / "cow" / "mesh.obj").write_text("")
    (pred / "apple.obj").write_text("")
    (pred / "apple.glb").write_text("")
    (pred / "pear_view003.ply").write_text("")
    (pred / "notes.txt").write_text("")
    (pred / "two").mkdir()
    (pred / "two" / "a.obj").write_text("")
    (pred / "two" / "b.obj").write_text("")
    found = find_meshes(pred)
    assert sorted(found) == ["apple", "cow", "pear_view003", "two"]
    assert found["apple"].path.name == "apple.glb"  # glb preferred over obj
    assert found["cow"].path.name == "mesh.obj"
    assert "several meshes" in found["two"].problem
    gt = {i: Entry(i, tmp_path / f"{i}.glb") for i in ("apple", "cow", "pear", "plum")}
    pairs, unmatched_pred, unmatched_gt = match(found, gt)
    assert [(p.id, p.gt.id, p.view) for p in pairs] == [("apple", "apple", None), ("cow", "cow", None),
                                                         ("pear_view003", "pear", 3)]
    assert unmatched_pred == ["two"] and unmatched_gt == ["plum"]


def test_evaluate_cli_end_to_end(tmp_path, capsys, mustard):
    pred, gt, out = tmp_path / "pred", tmp_path / "gt", tmp_path / "out"
    pred.mkdir()
    gt.mkdir()
    rng = np.random.default_rng(1)
    transformed(mustard, similarity(random_rotation(rng), 2.0, (1.0, 2.0, 3.0))).export(pred / "006_mustard_bottle.ply")
    (gt / "006_mustard_bottle.glb").write_bytes(ycb("006_mustard_bottle").read_bytes())
    trimesh.creation.icosphere(4, radius=1.0).export(pred / "sphere.obj")
    transformed(trimesh.creation.icosphere(4), similarity(scale=2.5, shift=(3, 0, 0))).export(gt / "sphere.stl")
    (pred / "011_banana.glb").write_bytes(ycb("011_banana").read_bytes()[:3000])  # truncated: corrupt
    (gt / "011_banana.glb").write_bytes(ycb("011_banana").read_bytes())
    trimesh.creation.box().export(pred / "extra.obj")  # no ground truth

    code = main(["evaluate", "--pred", str(pred), "--gt", str(gt), "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 1
    assert "011_banana.glb" in captured.err and "cannot read" in captured.err
    assert "extra" in captured.err
    assert "Traceback" not in captured.err
    assert "mean (2)" in captured.out

    rows = {r["id"]: r for r in csv.DictReader((out / "metrics.csv").open())}
    assert {i: r["status"] for i, r in rows.items()} == {
        "006_mustard_bottle": "ok", "011_banana": "failed", "sphere": "ok"}
    assert float(rows["006_mustard_bottle"]["cd"]) < 1.1 * floor_cd(load_mesh(pred / "006_mustard_bottle.ply").geometry)
    assert float(rows["sphere"]["f_score@0.05"]) == 1.0 and float(rows["sphere"]["f_score@0.02"]) > 0.9999
    report = json.loads((out / "metrics.json").read_text())
    assert report["summary"]["evaluated"] == 2 and report["summary"]["failed"] == 1
    assert report["unmatched"] == {"predictions": ["extra"], "ground_truth": []}
    objects = {o["id"]: o for o in report["objects"]}
    assert np.asarray(objects["006_mustard_bottle"]["rotation"]).shape == (3, 3)
    assert objects["011_banana"]["file"].endswith("011_banana.glb")
    page = (out / "report.html").read_text()
    assert page.count("<img") == 2 and "011_banana" in page
    for name in ("006_mustard_bottle", "sphere"):
        for side in ("pred", "gt"):
            assert len(trimesh.load(out / "aligned" / f"{name}.{side}.glb", force="mesh").faces) > 0
    assert not list(out.rglob("*.tmp-*"))


def test_evaluate_cli_with_known_cameras(tmp_path, capsys, mustard):
    """A prepared ground truth and predictions made in view frames: the exact rotation, no search."""
    prepared, pred, out = tmp_path / "prepared", tmp_path / "pred", tmp_path / "out"
    item = prepared / "006_mustard_bottle"
    item.mkdir(parents=True)
    (item / "meta.json").write_text(json.dumps({"id": item.name, "source": str(ycb("006_mustard_bottle"))}))
    views = view_rotations(16, np.random.default_rng(0), up_axis="z")
    (item / "views.json").write_text(json.dumps({"views": [{"rotation": v["rotation"].tolist()} for v in views]}))
    pred.mkdir()
    for j in (0, 11):
        view_frame = transformed(mustard, similarity(views[j]["rotation"], 0.3, (0.0, 0.1, 0.0)))
        view_frame.export(pred / f"006_mustard_bottle_view{j:03d}.ply")

    (pred / "006_mustard_bottle_view099.ply").write_bytes((pred / "006_mustard_bottle_view011.ply").read_bytes())

    code = main(["evaluate", "--pred", str(pred), "--gt", str(prepared), "--views", str(prepared),
                 "--out", str(out), "--render-resolution", "0"])
    assert code == 1
    assert "006_mustard_bottle_view099: " in capsys.readouterr().err
    *objects, bad = json.loads((out / "metrics.json").read_text())["objects"]
    assert bad["status"] == "failed" and bad["reason"] == "has no view 99 (16 views)"
    assert bad["file"] == str(item / "views.json")
    for o, j in zip(objects, (0, 11)):
        assert o["alignment"] == "view" and o["view"] == j
        assert np.allclose(o["rotation"], views[j]["rotation"], atol=1e-6)
        assert o["metrics"]["cd"] < 1.1 * floor_cd(transformed(mustard, similarity(views[j]["rotation"])))


def test_comparison_picture_rows_frame_meshes_together_and_mark_missing_ones(mustard):
    from mar3d.data.render_normals import normal_map_row
    from mar3d.evaluation.sheet import comparison_sheet

    small = mustard.copy()
    small.apply_scale(0.5)
    row = normal_map_row([mustard, None, trimesh.Trimesh(), small], np.eye(3), 64)
    assert row[1] is None and row[2] is None
    full, half = (image.min(axis=2) < 250 for image in (row[0], row[3]))  # not white: the object
    assert full.shape == (64, 64) and 0.15 < half.sum() / full.sum() < 0.4  # one frame: half size, ~1/4 area
    sheet = comparison_sheet(["a", "b", "c", "d"], [("mustard", row)], 64)
    assert sheet.size == (4 * 64, 24 + 64)
    pixels = np.asarray(sheet)
    assert np.array_equal(pixels[24:24 + 48, :64], row[0][:48])  # pasted as rendered (the label is below)
    assert (pixels[24:24 + 24, 64:192] == 255).all()  # the missing meshes: white cells (their note is lower)
    assert (pixels[24 + 28:24 + 48, 64:128] < 128).any()  # ... with "no surface" written in them


def test_results_table_pairs_variants_by_seed_and_gives_the_standard_error(tmp_path):
    """scripts/results_figure.py's paired differences (docs/results.md): only the seeds both variants were
    scored with count, each metric's mean difference comes with its standard error over those seeds."""
    script = Path(__file__).parents[1] / "scripts" / "results_figure.py"
    spec = importlib.util.spec_from_file_location("results_figure", script)
    results_figure = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(results_figure)

    def write(variant: str, seed: int, f01: float) -> None:
        folder = tmp_path / variant / f"seed{seed}" / "metrics"
        folder.mkdir(parents=True)
        mean = {key: 0.5 for key, _ in results_figure.COLUMNS} | {"f_score@0.1": f01}
        (folder / "metrics.json").write_text(json.dumps({"summary": {"mean": mean}}))

    for seed, (b, a, c) in enumerate([(0.50, 0.40, 0.45), (0.60, 0.55, 0.50), (0.70, 0.60, 0.68)]):
        write("lr_hr", seed, b), write("lr_only", seed, a), write("lr_hr_noaug", seed, c)
    write("lr_only", 7, 0.0)  # a seed (b) lacks: left out
    rows = results_figure.paired_table(tmp_path).splitlines()[2:]
    assert len(rows) == 2
    hr, augmentation = ([cell.strip() for cell in row.split("|")[1:-1]] for row in rows)
    differences = np.array([0.10, 0.05, 0.10])
    assert hr[1] == "3"
    assert hr[3] == f"{differences.mean():+.3f} ± {differences.std(ddof=1) / np.sqrt(3):.3f}"  # F@0.1
    assert hr[2] == "+0.000 ± 0.000"  # CD equal
    assert hr[-1] == "+0.100 / +0.050 / +0.100"
    assert augmentation[-1] == "+0.050 / +0.100 / +0.020"
