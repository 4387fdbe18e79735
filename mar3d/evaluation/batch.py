"""Evaluate folders of predictions against ground truth: pair them by id, score each pair, go on past bad files.

Pairing rule (ids):
- A mesh file directly inside a folder has the id of its stem (``013_apple.glb`` -> ``013_apple``); a
  sub-folder holding one mesh has the folder's name (``013_apple/mesh.obj`` -> ``013_apple``). When one id
  has several files (``--format glb obj``), the first of .glb .gltf .obj .ply .off .stl is used.
- A prepared ground-truth directory (``mar3d prepare`` output) gives its item ids; the mesh is the item's
  source file and its cameras are ``<id>/views.json``.
- A prediction pairs with the ground truth of the same id. A prediction id ``<gt id>_view<j>`` (e.g.
  ``013_apple_view003``) pairs with ``<gt id>`` and was generated from view j, so several views of one
  object can be scored in one run.
"""
from __future__ import annotations

import json
import re
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from mar3d.data import layout
from mar3d.data.cameras import orbit_rotation
from mar3d.data.mesh_io import MeshError, is_mesh_file, load_mesh
from mar3d.evaluation.metrics import POINTS
from mar3d.evaluation.protocol import evaluate_pair
from mar3d.utils import atomic
from mar3d.utils.pool import WORKER_DIED, run_jobs

PREFERRED_SUFFIXES = (".glb", ".gltf", ".obj", ".ply", ".off", ".stl")
VIEW_ID = re.compile(r"^(?P<gt>.+)_view(?P<view>\d+)$")
ALIGNED_DIR = "aligned"
RENDERS_DIR = "renders"
# Report renders: the prediction frame's own camera (the input view when generation is view-aligned)
# and a side view.
RENDER_ROTATIONS = (np.eye(3), orbit_rotation(90.0, 20.0))


class InputError(ValueError):
    """A pair that cannot be evaluated for a reason other than its mesh files (ambiguous folder, no camera)."""


@dataclass
class Entry:
    """One mesh of either side, or the reason there is none usable."""

    id: str
    path: Path | None
    problem: str = ""
    views: Path | None = None  # a prepared item's views.json


@dataclass
class Pair:
    id: str  # the prediction's id (names the outputs)
    pred: Entry
    gt: Entry
    view: int | None = None  # from a ``_view<j>`` suffix


@dataclass(frozen=True)
class EvaluateSettings:
    align: str = "search"  # "search", "none" or "view" (known cameras, from ``views``)
    views: str | None = None  # a views.json, or a prepared directory holding <gt id>/views.json
    view: int = 0  # the view of predictions whose id has no _view<j> suffix
    points: int = POINTS
    seed: int = 0
    iou: bool = False
    render_resolution: int = 256  # 0: no renders


def _preference(path: Path) -> int:
    suffix = path.suffix.lower()
    return PREFERRED_SUFFIXES.index(suffix) if suffix in PREFERRED_SUFFIXES else len(PREFERRED_SUFFIXES)


def is_prepared(folder: Path) -> bool:
    return (folder / layout.MANIFEST).exists() or any(folder.glob(f"*/{layout.META}"))


def find_meshes(folder: str | Path) -> dict[str, Entry]:
    """Mesh files in ``folder`` by id (see the module docstring)."""
    folder = Path(folder)
    files: dict[str, list[Path]] = defaultdict(list)
    entries: dict[str, Entry] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and is_mesh_file(path):
            files[path.stem].append(path)
        elif path.is_dir():
            inside = [f for f in sorted(path.iterdir()) if f.is_file() and is_mesh_file(f)]
            stems = sorted({f.stem for f in inside})
            if len(stems) > 1:
                entries[path.name] = Entry(path.name, None, f"{path}: holds several meshes "
                                                            f"({', '.join(f.name for f in inside)}); keep one")
            else:
                files[path.name].extend(inside)
    for item_id, paths in files.items():
        entries.setdefault(item_id, Entry(item_id, min(paths, key=_preference)))
    return dict(sorted(entries.items()))


def find_ground_truth(folder: str | Path) -> dict[str, Entry]:
    """Ground truth by id: a folder of meshes, or a prepared directory (source meshes and their cameras)."""
    folder = Path(folder)
    if not is_prepared(folder):
        return find_meshes(folder)
    entries = {}
    for item_id in layout.prepared_ids(folder):
        try:
            source = Path(layout.read_meta(folder, item_id)["source"])
            entries[item_id] = Entry(item_id, source, views=layout.item_dir(folder, item_id) / layout.VIEWS_JSON)
        except (OSError, ValueError, KeyError) as e:
            entries[item_id] = Entry(item_id, None, f"{layout.item_dir(folder, item_id) / layout.META}: "
                                                    f"unreadable ({type(e).__name__}: {e})")
    return entries


def match(predictions: dict[str, Entry], ground_truth: dict[str, Entry]) -> tuple[list[Pair], list[str], list[str]]:
    """Pairs, prediction ids with no ground truth, and ground-truth ids with no prediction."""
    pairs, unmatched = [], []
    for pred_id, entry in predictions.items():
        suffixed = VIEW_ID.match(pred_id)
        if pred_id in ground_truth:
            pairs.append(Pair(pred_id, entry, ground_truth[pred_id]))
        elif suffixed and suffixed["gt"] in ground_truth:
            pairs.append(Pair(pred_id, entry, ground_truth[suffixed["gt"]], int(suffixed["view"])))
        else:
            unmatched.append(pred_id)
    used = {p.gt.id for p in pairs}
    return pairs, unmatched, [i for i in ground_truth if i not in used]


def views_file(pair: Pair, settings: EvaluateSettings) -> Path:
    """The views.json holding the cameras of the pair's ground truth."""
    views = Path(settings.views) if settings.views else pair.gt.views
    if views is None:
        raise InputError("no cameras for this ground truth (give --views)")
    return layout.item_dir(views, pair.gt.id) / layout.VIEWS_JSON if views.is_dir() else views


def view_rotation(views: Path, index: int) -> np.ndarray:
    """The rotation R (ground truth -> view frame) of view ``index`` in a views.json."""
    if not views.is_file():
        raise InputError("no such views.json")
    records = json.loads(views.read_text())["views"]
    if not 0 <= index < len(records):
        raise InputError(f"has no view {index} ({len(records)} views)")
    return np.asarray(records[index]["rotation"], dtype=np.float64)


def comparison_image(pred, gt, resolution: int) -> np.ndarray:
    """(H, 4W, 3) uint8 on white: prediction and ground truth side by side, for each report view."""
    from mar3d.data.render_normals import render_normal_maps

    images = render_normal_maps([pred, gt], list(RENDER_ROTATIONS), resolution)
    tiles = [images[m][v] for v in range(len(RENDER_ROTATIONS)) for m in range(2)]
    strip = np.concatenate(tiles, axis=1).astype(np.float32)
    alpha = strip[..., 3:] / 255
    return np.round(strip[..., :3] * alpha + 255 * (1 - alpha)).astype(np.uint8)


def evaluate_one(pair: Pair, out_dir: str, settings: EvaluateSettings) -> dict:
    """Worker entry: evaluate one pair, write its aligned meshes and render; never raises."""
    start = time.perf_counter()
    record: dict = {"id": pair.id, "gt_id": pair.gt.id, "pred": str(pair.pred.path or ""),
                    "gt": str(pair.gt.path or ""), "status": "failed", "reason": "", "file": ""}
    current = ""  # the file being read, named in the error
    try:
        for entry in (pair.pred, pair.gt):
            if entry.problem:
                current = ""
                raise InputError(entry.problem)
        align = settings.align
        if align == "view":
            record["view"] = settings.view if pair.view is None else pair.view
            current = str(views_file(pair, settings))
            align = view_rotation(Path(current), record["view"])
        current = str(pair.pred.path)
        pred = load_mesh(pair.pred.path).geometry
        current = str(pair.gt.path)
        gt = load_mesh(pair.gt.path).geometry
        current = ""
        result = evaluate_pair(pred, gt, align, points=settings.points, seed=settings.seed, iou=settings.iou)
        out = Path(out_dir)
        for name, mesh in (("pred", result.pred), ("gt", result.gt)):
            with atomic.atomic_path(out / ALIGNED_DIR / f"{pair.id}.{name}.glb") as tmp:
                mesh.export(tmp, file_type="glb")
        if settings.render_resolution:
            image = comparison_image(result.pred, result.gt, settings.render_resolution)
            atomic.write_png(out / RENDERS_DIR / f"{pair.id}.png", image)
        alignment = result.alignment
        record.update(status="ok", alignment=alignment.method, rotation=alignment.rotation.round(6).tolist(),
                      rotation_deg=round(alignment.angle_deg, 3), scale=alignment.scale,
                      translation=alignment.translation.round(6).tolist(),
                      metrics=result.metrics, seconds=result.seconds)
        if alignment.method == "search":
            record["search_cd"] = alignment.cd
    except (MeshError, InputError) as e:
        record.update(reason=str(e), file=current)
    except MemoryError:
        record.update(reason="ran out of memory", file=current)
    except Exception as e:  # keep the batch going past anything a hostile file triggers
        record.update(reason=f"{type(e).__name__}: {str(e).strip()[:300]}", file=current)
    record.setdefault("seconds", {})["total"] = round(time.perf_counter() - start, 3)
    return record


def run_pairs(pairs: list[Pair], out_dir: str | Path, settings: EvaluateSettings, workers: int = 1,
              on_record: Callable[[dict], None] | None = None) -> list[dict]:
    """Evaluate every pair (in ``workers`` processes); records sorted by id. A pair whose worker died is
    recorded as failed (``mar3d.utils.pool``)."""
    records = []

    def finish(record: dict) -> None:
        records.append(record)
        if on_record:
            on_record(record)

    def crashed(job: tuple) -> dict:
        pair = job[0]
        return {"id": pair.id, "gt_id": pair.gt.id, "pred": str(pair.pred.path or ""), "gt": str(pair.gt.path or ""),
                "status": "failed", "reason": WORKER_DIED, "file": "", "seconds": {"total": 0.0}}

    for record in run_jobs(evaluate_one, [(pair, str(out_dir), settings) for pair in pairs], workers, crashed):
        finish(record)
    return sorted(records, key=lambda r: r["id"])

