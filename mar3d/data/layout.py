"""The on-disk layout of a prepared directory, and numpy-only readers for it (see docs/data-format.md).

    DIR/manifest.jsonl            one line per input: id, source, status, reason, seconds
    DIR/<id>/samples.npz          surface_points, surface_normals, occ_points, occ_labels
    DIR/<id>/meta.json            source, center, scale, counts, settings, seconds (written last)
    DIR/<id>/views.json           per view: file, rotation, K, fov_deg, camera_to_world, ...
    DIR/<id>/views/000.png ...    RGBA renders
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

MANIFEST = "manifest.jsonl"
SAMPLES = "samples.npz"
META = "meta.json"
VIEWS_JSON = "views.json"
VIEWS_DIR = "views"
SAMPLE_ARRAYS = ("surface_points", "surface_normals", "occ_points", "occ_labels")


def item_dir(root: str | Path, item_id: str) -> Path:
    return Path(root) / item_id


def read_manifest(root: str | Path) -> dict[str, dict]:
    """id -> the newest manifest record of that id (a re-run appends a newer line)."""
    path = Path(root) / MANIFEST
    records: dict[str, dict] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            line = line.strip()
            if line:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut short by a crash; its item is redone or skipped via meta.json
                records[record["id"]] = record
    return records


def read_meta(root: str | Path, item_id: str) -> dict:
    return json.loads((item_dir(root, item_id) / META).read_text())


def read_views(root: str | Path, item_id: str) -> list[dict]:
    """Per view: ``file``, ``rotation`` (3, 3), ``K`` (3, 3), ``camera_to_world`` (4, 4) as arrays."""
    views = json.loads((item_dir(root, item_id) / VIEWS_JSON).read_text())["views"]
    for v in views:
        for key in ("rotation", "K", "camera_to_world"):
            v[key] = np.asarray(v[key], dtype=np.float64)
    return views


def read_samples(root: str | Path, item_id: str) -> dict[str, np.ndarray]:
    with np.load(item_dir(root, item_id) / SAMPLES) as data:
        return {k: data[k] for k in SAMPLE_ARRAYS}


def prepared_ids(root: str | Path) -> list[str]:
    """Ids of finished items (those with a meta.json), sorted."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a prepared directory (run `mar3d prepare ... --out {root}`)")
    return sorted(p.parent.name for p in root.glob(f"*/{META}"))
