"""Bring the ground truth into the prediction's frame (docs/protocol.md §2.2).

The prediction stays where it is (normalized in its own frame). The normalized ground truth is rotated
by R, normalized again in that frame (bounding-box centre and longest side depend on the rotation) and
shifted by t:  x -> s(R) · (R x - c(R)) + t.  With a known camera R is the view's rotation and t = 0;
otherwise R and t come from a rotation search followed by rigid point-to-point ICP.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from mar3d.evaluation.metrics import SurfaceSamples

SEARCH_POINTS = 4_000
YAW_STEPS = 12
ICP_ITERATIONS = 50
ICP_MAX_DISTANCE = 0.1
ICP_STARTS = 12  # ICP starts from this many distinct best search candidates (symmetric shapes have near-ties)
DISTINCT_ANGLE = np.radians(45)
ICP_TOLERANCE = 1e-7  # stop when an update moves points less than this
ACCELERATE_BELOW = np.radians(10)  # extrapolate when consecutive updates differ by less than this angle
MAX_GAIN = 20.0
FINALISTS = 3  # the best distinct ICP results, compared on REFINE_POINTS samples
REFINE_POINTS = 20_000
SAME_POSE_ANGLE = np.radians(5)  # ICP results closer than this are one pose


@dataclass
class Alignment:
    """The ground truth's placement: x -> scale · rotation · x + translation (on the normalized GT)."""

    rotation: np.ndarray  # (3, 3)
    scale: float
    translation: np.ndarray  # (3,)
    method: str  # "view", "search" or "none"
    cd: float = float("nan")  # CD on the refinement samples after alignment ("search" only)

    @property
    def matrix(self) -> np.ndarray:
        m = np.eye(4)
        m[:3, :3] = self.scale * self.rotation
        m[:3, 3] = self.translation
        return m

    @property
    def angle_deg(self) -> float:
        """Angle of the rotation."""
        return float(np.degrees(np.arccos(np.clip((np.trace(self.rotation) - 1) / 2, -1.0, 1.0))))

    def apply(self, samples: SurfaceSamples) -> SurfaceSamples:
        return SurfaceSamples(self.scale * samples.points @ self.rotation.T + self.translation,
                              samples.normals @ self.rotation.T)


def placed(vertices: np.ndarray, rotation: np.ndarray, translation=np.zeros(3)) -> tuple[float, np.ndarray]:
    """Scale and translation that normalize the mesh rotated by ``rotation``, then shift it by ``translation``."""
    rotated = vertices @ rotation.T
    lo, hi = rotated.min(axis=0), rotated.max(axis=0)
    scale = 2.0 / float((hi - lo).max())
    return scale, translation - scale * (lo + hi) / 2


def fixed_alignment(gt_vertices: np.ndarray, rotation: np.ndarray, method: str) -> Alignment:
    """The ground truth rotated by a known ``rotation`` (a view's R; the identity for no alignment)."""
    rotation = np.asarray(rotation, dtype=np.float64)
    return Alignment(rotation, *placed(gt_vertices, rotation), method=method)


def candidate_rotations(yaw_steps: int = YAW_STEPS) -> np.ndarray:
    """(K, 3, 3) the 24 axis-aligned rotations, each followed by ``yaw_steps`` turns about +y; duplicates removed.

    24 x 12 = 288 products, 72 distinct: the quarter turns about y among the 24 coincide with yaw steps.
    """
    axis_aligned = []
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1.0, -1.0), repeat=3):
            m = np.zeros((3, 3))
            m[range(3), perm] = signs
            if np.linalg.det(m) > 0:
                axis_aligned.append(m)
    yaws = []
    for a in 2 * np.pi * np.arange(yaw_steps) / yaw_steps:
        c, s = np.cos(a), np.sin(a)
        yaws.append(np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]))
    products = np.einsum("yij,ajk->yaik", np.array(yaws), np.array(axis_aligned)).reshape(-1, 3, 3)
    _, first = np.unique(np.round(products.reshape(-1, 9), 6), axis=0, return_index=True)
    return products[np.sort(first)]


def distinct_best(rotations: np.ndarray, scores: np.ndarray, count: int,
                  min_angle: float = DISTINCT_ANGLE) -> list[int]:
    """Indices of up to ``count`` lowest-scoring rotations, each more than ``min_angle`` from those before."""
    chosen: list[int] = []
    for k in np.argsort(scores):
        traces = [np.trace(rotations[j].T @ rotations[k]) for j in chosen]
        if all(t < 1 + 2 * np.cos(min_angle) for t in traces):
            chosen.append(int(k))
            if len(chosen) == count:
                break
    return chosen


def kabsch(source: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rotation R (3, 3) and translation t (3,) minimizing sum |R source + t - target|² (no scale)."""
    mu_s, mu_t = source.mean(axis=0), target.mean(axis=0)
    u, _, vt = np.linalg.svd((source - mu_s).T @ (target - mu_t))
    d = np.sign(np.linalg.det(vt.T @ u.T))
    rotation = vt.T @ np.diag([1.0, 1.0, d]) @ u.T
    return rotation, mu_t - rotation @ mu_s


def placed_chamfer(gt_points: np.ndarray, gt_vertices: np.ndarray, pred_tree: cKDTree, rotation: np.ndarray,
                   translation=np.zeros(3)) -> float:
    """CD between the prediction (the points in ``pred_tree``) and the ground truth placed by the pose."""
    scale, shift = placed(gt_vertices, rotation, translation)
    points = scale * gt_points @ rotation.T + shift
    forward = pred_tree.query(points)[0].mean()
    backward = cKDTree(points).query(pred_tree.data)[0].mean()
    return 0.5 * float(forward + backward)


def icp(gt_points: np.ndarray, gt_vertices: np.ndarray, pred_tree: cKDTree, rotation: np.ndarray,
        translation=np.zeros(3), iterations: int = ICP_ITERATIONS,
        max_distance: float = ICP_MAX_DISTANCE) -> tuple[np.ndarray, np.ndarray]:
    """Rigid point-to-point ICP of the placed ground truth onto the prediction; returns (rotation, translation).

    Each step pairs every GT point with its nearest prediction point closer than ``max_distance`` and
    composes the Kabsch update with the current pose; the normalization follows the rotation. Plain ICP
    creeps along smooth surfaces (from 20° off it needs hundreds of steps), so when consecutive updates
    point the same way the step is extrapolated (Besl & McKay's accelerated ICP) and taken back if the
    truncated squared error rises.
    """
    last_error, fallback, previous = np.inf, None, None  # fallback: the plain step an extrapolation skipped
    for _ in range(iterations):
        scale, shift = placed(gt_vertices, rotation, translation)
        current = scale * gt_points @ rotation.T + shift
        distance, nearest = pred_tree.query(current, distance_upper_bound=max_distance)
        error = np.square(np.minimum(distance, max_distance)).mean()
        if fallback is not None and error > last_error:  # the extrapolation overshot
            (rotation, translation), fallback, previous = fallback, None, None
            continue
        close = np.isfinite(distance)
        if close.sum() < 3:
            break
        last_error, fallback = error, None
        delta_r, delta_t = kabsch(current[close], pred_tree.data[nearest[close]])
        if np.abs(current[close] @ (delta_r - np.eye(3)).T + delta_t).max() < ICP_TOLERANCE:
            break
        plain = delta_r @ rotation, delta_r @ translation + delta_t
        step = np.concatenate([Rotation.from_matrix(delta_r).as_rotvec(), delta_t])
        if previous is not None:
            ratio = np.linalg.norm(step) / max(np.linalg.norm(previous), 1e-30)
            cosine = step @ previous / max(np.linalg.norm(step) * np.linalg.norm(previous), 1e-30)
            if cosine > np.cos(ACCELERATE_BELOW) and ratio < 1:
                gain = 1 + min(ratio / (1 - ratio), MAX_GAIN)  # the rest of a geometric series of steps
                delta_r, delta_t = Rotation.from_rotvec(gain * step[:3]).as_matrix(), gain * delta_t
                fallback = plain
        previous = step
        rotation, translation = delta_r @ rotation, delta_r @ translation + delta_t
    return rotation, translation


def search_alignment(pred: SurfaceSamples, gt: SurfaceSamples, gt_vertices: np.ndarray,
                     yaw_steps: int = YAW_STEPS, starts: int = ICP_STARTS, finalists: int = FINALISTS,
                     refine_points: int = REFINE_POINTS) -> Alignment:
    """Rotation search then ICP; the lowest-CD placement of the ground truth.

    The candidate rotations are scored by CD on the first 4k samples, and ICP runs on those from the
    ``starts`` best distinct ones. The ``finalists`` best distinct results are compared by CD on the first
    ``refine_points`` samples and the winner is refined by ICP on them: 4k points can neither tell a
    bottle from its 180° turn nor pin the rotation closer than ~0.5°.

    Args:
        pred: samples of the normalized prediction.
        gt: samples of the normalized ground truth.
        gt_vertices: (V, 3) vertices of the normalized ground truth (its extent under each rotation).
    """
    tree, points = cKDTree(pred.points[:SEARCH_POINTS]), gt.points[:SEARCH_POINTS]
    candidates = candidate_rotations(yaw_steps)
    coarse = np.array([placed_chamfer(points, gt_vertices, tree, r) for r in candidates])
    results = [(coarse.min(), candidates[coarse.argmin()], np.zeros(3))]
    for k in distinct_best(candidates, coarse, starts):
        rotation, translation = icp(points, gt_vertices, tree, candidates[k])
        results.append((placed_chamfer(points, gt_vertices, tree, rotation, translation), rotation, translation))

    tree, points = cKDTree(pred.points[:refine_points]), gt.points[:refine_points]
    poses, cds = np.array([r for _, r, _ in results]), np.array([cd for cd, _, _ in results])
    best = min(distinct_best(poses, cds, finalists, SAME_POSE_ANGLE),
               key=lambda k: placed_chamfer(points, gt_vertices, tree, *results[k][1:]))
    rotation, translation = icp(points, gt_vertices, tree, *results[best][1:])
    cd = placed_chamfer(points, gt_vertices, tree, rotation, translation)
    return Alignment(rotation, *placed(gt_vertices, rotation, translation), method="search", cd=cd)
