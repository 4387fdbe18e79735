"""Procedural household objects: closed and outward, sized like real objects, deterministic, varied,
coloured in the written GLB; `mar3d household` writes, resumes and refuses bad arguments; the output
prepares with `mar3d prepare`."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import TEST_SETTINGS, run_mar3d
from mar3d.data import layout
from mar3d.data.household import CAN_LIE, FAMILIES, make_object, to_glb
from mar3d.data.mesh_io import load_mesh


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_is_one_closed_outward_surface_of_real_size(family):
    for seed in range(4):
        mesh = make_object(family, seed)
        assert mesh.is_watertight and mesh.is_winding_consistent, (family, seed)
        assert mesh.volume > 0, (family, seed)  # consistent winding + positive volume = normals point out
        assert len(mesh.split(only_watertight=False)) == 1, (family, seed)
        assert 0.004 < mesh.extents.min() and mesh.extents.max() < 0.4, (family, seed, mesh.extents)
        assert mesh.bounds[0, 2] == 0.0, "objects rest on z = 0"
        assert np.allclose(mesh.bounds[:, :2].sum(axis=0), 0, atol=1e-12), "centred over the origin"
        assert len(mesh.faces) < 40_000


def test_same_seed_gives_the_same_bytes_and_other_seeds_other_objects():
    for family in FAMILIES:
        assert to_glb(make_object(family, 11)) == to_glb(make_object(family, 11)), family
        assert to_glb(make_object(family, 11)) != to_glb(make_object(family, 12)), family


def test_seeds_vary_the_shape_and_families_differ():
    signatures = {}
    for family in FAMILIES:
        shapes = [make_object(family, seed) for seed in range(20)]
        extents = np.array([m.extents for m in shapes])
        volumes = np.array([m.volume for m in shapes])
        assert len(np.unique(extents.round(4), axis=0)) >= 18, family
        assert len(np.unique(volumes.round(9))) >= 18, family
        # Proportions (not only scale) vary: the aspect ratio (smallest / largest extent) spreads.
        aspect = np.sort(extents, axis=1)[:, 0] / np.sort(extents, axis=1)[:, 2]
        assert aspect.std() / aspect.mean() > 0.05 or family == "ball", family
        signatures[family] = np.concatenate([np.median(np.sort(extents, axis=1), axis=0), [np.median(volumes)]])
    values = np.array(list(signatures.values()))
    distance = np.abs(np.log(values[:, None] / values[None])).sum(axis=2)
    assert (distance + np.eye(len(FAMILIES)) * 1e9).min() > 0.05, "two families make the same objects"


def test_a_lying_object_is_the_upright_one_laid_on_its_side():
    for family in CAN_LIE:
        for seed in range(3):
            upright, lying = make_object(family, seed), make_object(family, seed, lying=True)
            assert lying.is_watertight and lying.is_winding_consistent and lying.volume > 0, (family, seed)
            assert lying.bounds[0, 2] == 0.0 and np.allclose(lying.bounds[:, :2].sum(axis=0), 0, atol=1e-12)
            # The same surface moved rigidly: equal volume, edge lengths and colours.
            assert np.isclose(lying.volume, upright.volume, rtol=1e-9), (family, seed)
            assert np.allclose(np.sort(lying.edges_unique_length), np.sort(upright.edges_unique_length))
            assert np.array_equal(lying.visual.vertex_colors, upright.visual.vertex_colors)
            # Laid down: the upright object's vertical axis now points mostly sideways.
            up = (lying.vertices - lying.vertices.mean(0)).T @ (upright.vertices - upright.vertices.mean(0))
            rotation = np.linalg.svd(up)  # Procrustes: the rotation taking upright to lying
            turn = rotation[0] @ rotation[2]
            assert abs(turn[2, 2]) < 0.5, (family, seed, turn[2, 2])
    with pytest.raises(ValueError, match="does not lie on its side"):
        make_object("hammer", 0, lying=True)


def test_the_mug_handle_is_a_hole_through_the_object():
    mug = make_object("mug", 0)
    assert mug.euler_number == 0  # one closed surface of genus 1: a handle
    assert make_object("cup", 0).euler_number == 2
    # The handle sticks out along +x; a ray along y through the middle of its opening hits nothing,
    # one through the handle itself hits it.
    radius = mug.bounds[1, 1]
    tip = mug.vertices[np.argmax(mug.vertices[:, 0])]
    through_opening = [(radius + tip[0]) / 2 - 0.004, -1.0, tip[2]]
    through_handle = [tip[0] - 0.002, -1.0, tip[2]]
    hits = mug.ray.intersects_any([through_opening, through_handle], [[0, 1.0, 0]] * 2)
    assert hits.tolist() == [False, True]
    for seed in range(1, 10):
        assert make_object("mug", seed).euler_number == 0


def test_colours_survive_the_glb_file(tmp_path):
    for family in FAMILIES:
        distinct = []
        for seed in range(3):
            path = tmp_path / f"{family}_{seed}.glb"
            path.write_bytes(to_glb(make_object(family, seed)))
            loaded = load_mesh(path)
            assert loaded.has_colour and loaded.parts[0].visual.kind == "vertex", family
            assert loaded.geometry.is_watertight, family
            distinct.append(len(np.unique(loaded.parts[0].visual.vertex_colors[:, :3], axis=0)))
        assert max(distinct) >= 2, family  # patterns, not only plain colours (a plain object may occur)


def test_cli_writes_resumes_and_is_deterministic(tmp_path):
    out = tmp_path / "objects"
    result = run_mar3d("household", "--out", out, "--count", 5, "--families", "mug,fruit", "--seed", 3, "-q")
    names = sorted(p.name for p in out.iterdir())
    assert names == ["fruit_000001.glb", "fruit_000003.glb", "mug_000000.glb", "mug_000002.glb", "mug_000004.glb"]
    assert "wrote 5 object(s), 0 already done" in result.stdout and "objects/s" in result.stdout
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.iterdir()}

    (out / "mug_000004.glb").unlink()  # as if killed before the last file
    result = run_mar3d("household", "--out", out, "--count", 6, "--families", "mug,fruit", "--seed", 3, "-q")
    assert "wrote 2 object(s), 4 already done" in result.stdout
    after = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.iterdir()}
    assert all(after[n] == before[n] for n in before if n != "mug_000004.glb")  # finished files untouched
    assert after["mug_000004.glb"][0] == before["mug_000004.glb"][0]  # rewritten identically
    assert not list(out.glob("*.tmp-*"))

    other = tmp_path / "other"
    run_mar3d("household", "--out", other, "--count", 2, "--families", "mug,fruit", "--seed", 4, "-q")
    assert (other / "mug_000000.glb").read_bytes() != before["mug_000000.glb"][0]


def test_cli_lays_the_requested_share_on_its_side(tmp_path):
    everything = tmp_path / "all"
    run_mar3d("household", "--out", everything, "--count", 4, "--families", "fruit,hammer", "--lying", 1, "-q")
    assert sorted(p.name for p in everything.iterdir()) == [
        "fruit_lying_000000.glb", "fruit_lying_000002.glb", "hammer_000001.glb", "hammer_000003.glb"]
    upright = tmp_path / "upright"
    run_mar3d("household", "--out", upright, "--count", 4, "--families", "fruit,hammer", "-q")
    assert (upright / "hammer_000001.glb").read_bytes() == (everything / "hammer_000001.glb").read_bytes()
    lying, standing = load_mesh(everything / "fruit_lying_000000.glb"), load_mesh(upright / "fruit_000000.glb")
    assert np.isclose(lying.geometry.volume, standing.geometry.volume, rtol=1e-6)
    assert not np.allclose(lying.geometry.extents, standing.geometry.extents, rtol=1e-3)

    half = tmp_path / "half"
    run_mar3d("household", "--out", half, "--count", 200, "--families", "can", "--lying", 0.5, "-q")
    share = len(list(half.glob("can_lying_*.glb"))) / 200
    assert 0.38 < share < 0.62, share


@pytest.mark.parametrize("args, message", [
    (["--count", "0"], "--count must be >= 1"),
    (["--count", "2", "--lying", "1.5"], "--lying must be a share between 0 and 1"),
    (["--count", "2", "--families", "mug,spaceship"], "unknown spaceship"),
    (["--count", "2", "--families", ","], "unknown (none given)"),
])
def test_cli_rejects_bad_arguments_in_one_line(tmp_path, args, message):
    result = run_mar3d("household", "--out", tmp_path / "x", *args, check=2)
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith("mar3d household: error:") and message in result.stderr
    assert not (tmp_path / "x").exists()


def test_cli_help_and_argparse_errors(tmp_path):
    text = run_mar3d("household", "--help").stdout
    assert text.count("(default: 0)") == 1 and text.count("(default: glb)") == 1
    assert text.count("(default: all:") == 1 and text.count("toy_stack") == 1
    result = run_mar3d("household", "--out", tmp_path, "--count", "2", "--format", "obj", check=2)
    assert "invalid choice" in result.stderr


def test_generated_objects_prepare(tmp_path):
    objects, prepared = tmp_path / "objects", tmp_path / "prepared"
    run_mar3d("household", "--out", objects, "--count", 2, "--families", "mug,hammer", "-q")
    run_mar3d("prepare", objects, "--out", prepared, "-q", "--views", 4, "--resolution", 128, "--up-axis", "z",
              "--surface-samples", TEST_SETTINGS["surface_samples"],
              "--occupancy-samples", TEST_SETTINGS["occupancy_samples"])
    assert layout.prepared_ids(prepared) == ["hammer_000001", "mug_000000"]
    for item in ("hammer_000001", "mug_000000"):
        meta = json.loads((prepared / item / layout.META).read_text())
        assert meta["watertight"] and meta["textured"]
        inside = meta["counts"]["occupancy_inside"]
        assert 0 < inside < meta["counts"]["occupancy"] / 2
