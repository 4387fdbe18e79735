"""The object families and the one way to make an object: ``make_object(family, seed)``."""
from __future__ import annotations

import hashlib

import numpy as np
import trimesh

from mar3d.data.household import boxes, containers, produce, tools

BUILDERS = {
    "box": boxes.box,
    "can": containers.can,
    "bottle": containers.bottle,
    "jar": containers.jar,
    "cup": containers.cup,
    "mug": containers.mug,
    "bowl": containers.bowl,
    "plate": containers.plate,
    "fruit": produce.fruit,
    "banana": produce.banana,
    "ball": produce.ball,
    "hammer": tools.hammer,
    "screwdriver": tools.screwdriver,
    "spatula": tools.spatula,
    "wrench": tools.wrench,
    "toy_block": boxes.toy_block,
    "toy_stack": boxes.toy_stack,
}
FAMILIES = tuple(BUILDERS)


def family_rng(family: str, seed: int) -> np.random.Generator:
    """The generator of one object: a hash of (family, seed), so families never share a stream."""
    digest = hashlib.sha256(f"household:{family}:{int(seed)}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def make_object(family: str, seed: int) -> trimesh.Trimesh:
    """One watertight, outward-wound object of ``family`` with per-vertex colours.

    Metres, z up, resting on z = 0 and centred over the origin (like the YCB scans). The same
    (family, seed) always gives the same arrays, hence the same exported bytes.
    """
    if family not in BUILDERS:
        raise ValueError(f"unknown family {family!r}; expected one of {', '.join(FAMILIES)}")
    body, colours = BUILDERS[family](family_rng(family, seed))
    body = body.oriented()
    lo, hi = body.vertices.min(axis=0), body.vertices.max(axis=0)
    vertices = body.vertices - [(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, lo[2]]
    rgba = np.full((len(vertices), 4), 255, dtype=np.uint8)
    rgba[:, :3] = np.round(np.clip(colours, 0, 1) * 255)
    return trimesh.Trimesh(vertices, body.faces, vertex_colors=rgba, process=False)


def to_glb(mesh: trimesh.Trimesh) -> bytes:
    """The mesh as binary glTF with its vertex colours (COLOR_0)."""
    return mesh.export(file_type="glb")
