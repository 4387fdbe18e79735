"""Loading real meshes in every supported format, and refusing bad ones with a clear reason."""
from __future__ import annotations

import numpy as np
import pytest
import trimesh

from conftest import classic, ycb
from mar3d.data.mesh_io import MeshError, load_mesh


def test_textured_scan_loads_watertight_with_texture():
    mesh = load_mesh(ycb("003_cracker_box"))
    assert mesh.has_colour
    assert mesh.parts[0].visual.kind == "texture"
    # Seams split vertices in the file; the merged geometry is the closed scan.
    assert mesh.geometry.is_watertight
    assert len(mesh.geometry.faces) == 16384
    assert mesh.geometry.volume > 0  # outward winding


@pytest.mark.parametrize("suffix", ["obj", "ply", "stl", "off", "glb"])
def test_every_format_round_trips(tmp_path, suffix):
    source = load_mesh(classic("cow"))
    path = tmp_path / f"cow.{suffix}"
    source.geometry.export(path)
    mesh = load_mesh(path)
    assert len(mesh.geometry.faces) == len(source.geometry.faces)
    assert np.allclose(mesh.geometry.bounds, source.geometry.bounds, atol=1e-5)


def test_multi_part_scene_is_merged_with_each_part_kept(tmp_path):
    a = trimesh.load(ycb("013_apple"), force="mesh")
    b = trimesh.load(ycb("011_banana"), force="mesh")
    b.apply_translation([0.2, 0, 0])
    scene = trimesh.Scene()
    scene.add_geometry(a, node_name="apple")
    scene.add_geometry(b, node_name="banana", transform=trimesh.transformations.translation_matrix([0, 0.1, 0]))
    path = tmp_path / "two.glb"
    scene.export(path)
    mesh = load_mesh(path)
    assert len(mesh.parts) == 2
    assert all(p.visual.kind == "texture" for p in mesh.parts)
    assert len(mesh.geometry.faces) == len(a.faces) + len(b.faces)
    # The node transform is applied: the banana sits where the scene put it.
    assert mesh.geometry.bounds[1, 1] == pytest.approx(max(a.bounds[1, 1], b.bounds[1, 1] + 0.1), abs=1e-5)


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("make, reason", [
    (lambda d: _write(d / "cut.glb", ycb("013_apple").read_bytes()[:5000]), "cannot read"),
    (lambda d: _write(d / "notes.obj", b"these are my shopping notes\nmilk\neggs\n"), "no triangle faces"),
    (lambda d: _write(d / "empty.ply", b""), "empty"),
    (lambda d: _write(d / "points.obj", b"v 0 0 0\nv 1 0 0\nv 0 1 0\n"), "no triangle faces"),
    (lambda d: _write(d / "nan.obj", b"v 0 0 0\nv nan 0 0\nv 0 1 0\nv 0 0 1\nf 1 2 3\nf 1 3 4\n"), "NaN"),
    (lambda d: _write(d / "flat.obj", b"v 0 0 0\nv 1 0 0\nv 2 0 0\nf 1 2 3\n"), "zero"),
    (lambda d: _write(d / "image.png", b"\x89PNG\r\n\x1a\n" + b"\0" * 100), "unsupported file type"),
    (lambda d: d / "missing.obj", "does not exist"),
])
def test_bad_inputs_raise_a_reason_a_person_understands(tmp_path, make, reason):
    with pytest.raises(MeshError, match=reason):
        load_mesh(make(tmp_path))


def test_absurdly_large_mesh_is_refused_before_work():
    with pytest.raises(MeshError, match="more than the limit"):
        load_mesh(ycb("013_apple"), max_faces=1000)
