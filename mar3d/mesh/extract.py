"""Occupancy field -> cleaned meshes, for a batch of shapes: decode grid, marching cubes, post-process."""
from __future__ import annotations

import time
from dataclasses import dataclass

import trimesh

from mar3d.mesh.grid import DEFAULT_RESOLUTION, LogitsFn, Mode, decode_grid
from mar3d.mesh.marching import GridStatus, grid_to_mesh
from mar3d.mesh.postprocess import PostprocessOptions, PostprocessReport, postprocess


@dataclass
class ExtractionResult:
    """One shape's mesh. ``status`` is "ok", or "empty" / "full" / "nonfinite" with an empty mesh."""

    mesh: trimesh.Trimesh
    status: GridStatus
    queries: int  # field evaluations for this shape
    decode_seconds: float  # decoding the whole batch (shared by its shapes)
    marching_seconds: float  # marching cubes of this shape
    postprocess_seconds: float  # post-processing of this shape (0 when not post-processed)
    watertight: bool
    report: PostprocessReport | None  # None when not post-processed or not "ok"


def extract_meshes(
    logits_fn: LogitsFn,
    batch_size: int,
    resolution: int = DEFAULT_RESOLUTION,
    mode: Mode = "hierarchical",
    *,
    postprocess_options: PostprocessOptions | None = PostprocessOptions(),
    **decode_options,
) -> list[ExtractionResult]:
    """Meshes of the B shapes behind ``logits_fn``, in the decoding box.

    Args:
        logits_fn: (B, Q, 3) points -> (B, Q) logits, positive inside.
        batch_size, resolution, mode: as in :func:`mar3d.mesh.grid.decode_grid`, which also takes
            ``decode_options`` (coarse_resolution, band, max_tracking_rounds, chunk_size, box, device).
        postprocess_options: None returns the raw marching-cubes meshes.
    """
    decoded = decode_grid(logits_fn, batch_size, resolution, mode, **decode_options)
    results = []
    for b in range(batch_size):
        start = time.perf_counter()
        mesh, status = grid_to_mesh(decoded.values[b], decoded.box)
        decoded.values[b] = None  # free each grid once meshed (0.5 GB per shape at R=512)
        meshed = time.perf_counter()
        report = None
        if status == "ok" and postprocess_options is not None:
            mesh, report = postprocess(mesh, postprocess_options)
            watertight = report.watertight
        else:
            watertight = status == "ok" and bool(mesh.is_watertight)
        results.append(ExtractionResult(mesh, status, decoded.queries[b], decoded.seconds, meshed - start,
                                        time.perf_counter() - meshed if report else 0.0, watertight, report))
    return results
