"""The shape-generation protocol (docs/protocol.md §2) for one prediction and its ground truth.

normalize both -> align the ground truth to the prediction -> 100k seeded samples each -> metrics.
The prediction's normalized frame is the common frame: metrics, saved meshes and renders are all in it.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import trimesh

from mar3d.evaluation.align import Alignment, fixed_alignment, search_alignment
from mar3d.evaluation.metrics import (POINTS, THRESHOLDS, normalized, point_metrics, sample_points, transformed,
                                      volume_iou)


@dataclass
class PairResult:
    metrics: dict[str, float]
    alignment: Alignment
    pred: trimesh.Trimesh  # the normalized prediction
    gt: trimesh.Trimesh  # the ground truth placed onto it
    seconds: dict[str, float] = field(default_factory=dict)


def evaluate_pair(pred: trimesh.Trimesh, gt: trimesh.Trimesh, align: str | np.ndarray = "search",
                  points: int = POINTS, seed: int = 0, iou: bool = False,
                  thresholds=THRESHOLDS) -> PairResult:
    """Score a predicted mesh against its ground truth.

    Args:
        pred, gt: meshes in any frame and scale.
        align: "search" (rotation search + ICP), "none" (frames already agree), or the (3, 3) rotation
            taking the ground truth into the prediction's frame (a view's R from views.json).
        points: surface samples per mesh (docs/protocol.md §2.3 fixes 100k; below that F@0.02 is dominated by spacing).
        seed: the prediction is sampled with ``seed``, the ground truth with ``seed + 1``.
        iou: also compute the volume IoU on a 128³ winding-number grid (about 1 s per mesh).
    """
    start = time.perf_counter()
    pred, gt = normalized(pred), normalized(gt)
    pred_samples, gt_samples = sample_points(pred, points, seed), sample_points(gt, points, seed + 1)
    sampled = time.perf_counter()
    if isinstance(align, str) and align == "search":
        alignment = search_alignment(pred_samples, gt_samples, gt.vertices)
    elif isinstance(align, str) and align == "none":
        alignment = fixed_alignment(gt.vertices, np.eye(3), "none")
    elif isinstance(align, str):
        raise ValueError(f"align must be 'search', 'none' or a rotation matrix, got {align!r}")
    else:
        alignment = fixed_alignment(gt.vertices, align, "view")
    aligned = time.perf_counter()
    gt = transformed(gt, alignment.matrix)
    metrics = point_metrics(pred_samples, alignment.apply(gt_samples), thresholds)
    if iou:
        metrics["volume_iou"] = volume_iou(pred, gt)
    end = time.perf_counter()
    seconds = {"sample": sampled - start, "align": aligned - sampled, "metrics": end - aligned}
    return PairResult(metrics, alignment, pred, gt, {k: round(v, 3) for k, v in seconds.items()})
