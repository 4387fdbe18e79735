"""Prepare one mesh: normalize, sample surface and occupancy, render the conditioning views, write.

Outputs of one item are written atomically one file at a time, ``meta.json`` last: an item with a
``meta.json`` whose settings match is finished, and a resumed run skips it.
"""
from __future__ import annotations

import hashlib
import resource
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from mar3d.data import cameras, layout
from mar3d.data.mesh_io import DEFAULT_MAX_FACES, load_mesh
from mar3d.data.normalize import normalization, normalization_matrix
from mar3d.data.sampling import sample_occupancy, sample_surface
from mar3d.utils import atomic


@dataclass(frozen=True)
class PrepareSettings:
    surface_samples: int = 200_000
    occupancy_samples: int = 500_000
    views: int = 56
    resolution: int = 512
    seed: int = 0
    up_axis: str = "y"
    plain_colour: str = "grey"  # "grey" or "random" (a seeded random colour per mesh)
    antialias: bool = False  # 4x MSAA with coverage alpha: smoother silhouettes, ~4x render time on a CPU
    max_faces: int = DEFAULT_MAX_FACES

    def validate(self) -> None:
        for name in ("surface_samples", "occupancy_samples", "resolution"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.views < 0:
            raise ValueError(f"views must be >= 0, got {self.views}")
        if self.up_axis not in cameras.UP_AXIS_ROTATIONS:
            raise ValueError(f"up_axis must be one of {sorted(cameras.UP_AXIS_ROTATIONS)}, got {self.up_axis!r}")
        if self.plain_colour not in ("grey", "random"):
            raise ValueError(f"plain_colour must be 'grey' or 'random', got {self.plain_colour!r}")

    def output_affecting(self) -> dict:
        """The settings that change what is written (a finished item with other values is redone)."""
        d = asdict(self)
        d.pop("max_faces")
        return d


def item_seed(seed: int, item_id: str) -> int:
    """A 64-bit seed hashed from (seed, id): items of one run, or of runs with other seeds, share none."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{item_id}".encode()).digest()[:8], "little")


def item_rng(seed: int, item_id: str) -> np.random.Generator:
    """Per-item generator: the same seed and id give the same samples whatever the worker or order."""
    return np.random.default_rng(item_seed(seed, item_id))


def is_finished(out_dir: Path, item_id: str, settings: PrepareSettings) -> bool:
    meta_path = layout.item_dir(out_dir, item_id) / layout.META
    if not meta_path.exists():
        return False
    try:
        meta = layout.read_meta(out_dir, item_id)
    except (OSError, ValueError):
        return False
    return meta.get("settings") == settings.output_affecting()


def prepare_item(source: str | Path, item_id: str, out_dir: str | Path, settings: PrepareSettings) -> dict:
    """Prepare one mesh file into ``out_dir/item_id``; returns its meta record.

    Raises:
        MeshError: the input is not a usable mesh (the message says why).
    """
    start = time.perf_counter()
    out = layout.item_dir(out_dir, item_id)
    atomic.remove_stale_temporaries(out)
    rng = item_rng(settings.seed, item_id)

    mesh = load_mesh(source, max_faces=settings.max_faces)
    center, scale = normalization(mesh.geometry.vertices)
    vertices = (mesh.geometry.vertices - center) * scale
    faces = mesh.geometry.faces
    loaded = time.perf_counter()

    surface_points, surface_normals = sample_surface(vertices, faces, settings.surface_samples, rng)
    occupancy = sample_occupancy(vertices, faces, settings.occupancy_samples, rng)
    atomic.write_npz(
        out / layout.SAMPLES,
        surface_points=surface_points.astype(np.float32),
        surface_normals=surface_normals.astype(np.float32),
        occ_points=occupancy.points.astype(np.float32),
        occ_labels=occupancy.labels,
    )
    sampled = time.perf_counter()

    views = cameras.view_rotations(settings.views, rng, settings.up_axis)
    colour = tuple(rng.uniform(0.15, 0.95, 3)) if settings.plain_colour == "random" else None
    if views:
        from mar3d.data.render import PLAIN_GREY, ViewRenderer  # GL only where views are wanted

        K = cameras.intrinsics(settings.resolution)
        c2w = cameras.camera_to_world()
        records = []
        with ViewRenderer(mesh.parts, normalization_matrix(center, scale), settings.resolution,
                          colour or PLAIN_GREY, antialias=settings.antialias) as renderer:
            for j, view in enumerate(views):
                name = f"{layout.VIEWS_DIR}/{j:03d}.png"
                # zlib level 1 with the run-length strategy (3): renders are mostly flat background, so this
                # is ~6x faster than Pillow's default and the files are smaller than level 1's default strategy.
                atomic.write_png(out / name, renderer.render(view["rotation"]), compress_level=1, compress_type=3)
                records.append({
                    "file": name,
                    "rotation": view["rotation"].tolist(),
                    "K": K.tolist(),
                    "fov_deg": cameras.FOV_DEG,
                    "camera_to_world": c2w.tolist(),
                    "azimuth_deg": view["azimuth_deg"],
                    "elevation_deg": view["elevation_deg"],
                    "mesh_rotation": view["mesh_rotation"],
                })
        atomic.write_json(out / layout.VIEWS_JSON, {
            "resolution": settings.resolution,
            "convention": "points_view = rotation @ p_normalized; OpenGL camera (looks down -z, +y up) at "
                          "camera_to_world in the view frame; K is OpenCV-style (x right, y down)",
            "views": records,
        })
    rendered = time.perf_counter()

    meta = {
        "id": item_id,
        "source": str(Path(source).resolve()),
        "center": center.tolist(),
        "scale": scale,
        "counts": {
            "surface": settings.surface_samples,
            "occupancy": settings.occupancy_samples,
            "occupancy_near_surface": occupancy.near_count,
            "occupancy_inside": int(occupancy.labels.sum()),
            "views": len(views),
            "source_vertices": int(len(mesh.geometry.vertices)),
            "source_faces": int(len(faces)),
            "parts": len(mesh.parts),
        },
        "watertight": bool(mesh.geometry.is_watertight),
        "textured": mesh.has_colour,
        "plain_colour": list(colour) if colour else None,
        "settings": settings.output_affecting(),
        "seconds": {
            "load": round(loaded - start, 4),
            "samples": round(sampled - loaded, 4),
            "views": round(rendered - sampled, 4),
            "total": round(rendered - start, 4),
        },
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    atomic.write_json(out / layout.META, meta)
    return meta
