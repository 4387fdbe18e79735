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
# Families that rest on their side as naturally as upright (a pear, a can rolled over, a box laid flat); the tools,
# bananas, plates and toys already lie as they would on a table, and a ball has no side.
CAN_LIE = ("box", "can", "bottle", "jar", "fruit", "toy_block")
# A lying object's long axis is this far from vertical (radians): exactly on its side for flat-sided boxes and
# cylinders, tipped a little either way for round fruit.
TILT = {"box": (np.pi / 2, np.pi / 2), "toy_block": (np.pi / 2, np.pi / 2), "can": (np.pi / 2, np.pi / 2),
        "bottle": (np.pi / 2, np.pi / 2), "jar": (np.pi / 2, np.pi / 2), "fruit": (np.pi / 2.8, np.pi / 1.6)}


def family_rng(family: str, seed: int, stream: str = "household") -> np.random.Generator:
    """The generator of one object: a hash of (stream, family, seed), so families, and an object's shape and its
    pose (``side_rotation``), never share a stream."""
    digest = hashlib.sha256(f"{stream}:{family}:{int(seed)}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def side_rotation(family: str, seed: int) -> np.ndarray:
    """(3, 3) rotation that lays object (family, seed) on its side: a tilt about x, then a turn about z.

    Drawn from a stream of its own, so a lying object has exactly the shape and colours of the upright one.
    """
    rng = family_rng(family, seed, stream="household-side")
    tilt, turn = rng.uniform(*TILT[family]), rng.uniform(0, 2 * np.pi)
    c, s = np.cos(tilt), np.sin(tilt)
    about_x = np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    c, s = np.cos(turn), np.sin(turn)
    about_z = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    return about_z @ about_x


def make_object(family: str, seed: int, lying: bool = False) -> trimesh.Trimesh:
    """One watertight, outward-wound object of ``family`` with per-vertex colours.

    Metres, z up, resting on z = 0 and centred over the origin (like the YCB scans). The same
    (family, seed, lying) always gives the same arrays, hence the same exported bytes. ``lying`` lays it on
    its side (families in ``CAN_LIE`` only), as a pear or a can often rests on a table.
    """
    if family not in BUILDERS:
        raise ValueError(f"unknown family {family!r}; expected one of {', '.join(FAMILIES)}")
    if lying and family not in CAN_LIE:
        raise ValueError(f"family {family!r} does not lie on its side; lying families: {', '.join(CAN_LIE)}")
    body, colours = BUILDERS[family](family_rng(family, seed))
    body = body.oriented()
    if lying:  # a rotation keeps the surface closed and its winding outward
        body.vertices = body.vertices @ side_rotation(family, seed).T
    lo, hi = body.vertices.min(axis=0), body.vertices.max(axis=0)
    vertices = body.vertices - [(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, lo[2]]
    rgba = np.full((len(vertices), 4), 255, dtype=np.uint8)
    rgba[:, :3] = np.round(np.clip(colours, 0, 1) * 255)
    return trimesh.Trimesh(vertices, body.faces, vertex_colors=rgba, process=False)


def to_glb(mesh: trimesh.Trimesh) -> bytes:
    """The mesh as binary glTF with its vertex colours (COLOR_0)."""
    return mesh.export(file_type="glb")
