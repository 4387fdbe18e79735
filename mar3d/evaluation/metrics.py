"""The shape metrics of docs/protocol.md §2: normalization, seeded surface samples, CD / F-score / NC, volume IoU.

Distances are between point samples (nearest neighbours, scipy KD-trees), as the protocol defines them;
``mar3d.evaluation.surface`` holds the exact point-to-triangle distances used to check geometry.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import trimesh
from scipy.spatial import cKDTree

from mar3d.data.normalize import normalization_matrix
from mar3d.data.sampling import sample_surface, winding_numbers

POINTS = 100_000
THRESHOLDS = (0.1, 0.05, 0.02)  # F-score thresholds; the first is the headline
IOU_RESOLUTION = 128
IOU_BOX = 1.1  # the IoU grid spans [-IOU_BOX, IOU_BOX]^3: the normalized [-1, 1] plus room for ICP shifts
_QUANTUM = 1e-9  # coordinates closer than this count as equal when ordering faces


def bbox_normalization(vertices: np.ndarray) -> np.ndarray:
    """(4, 4) transform moving the bounding-box centre to the origin and the longest side to length 2."""
    vertices = np.asarray(vertices, dtype=np.float64)
    lo, hi = vertices.min(axis=0), vertices.max(axis=0)
    return normalization_matrix((lo + hi) / 2, 2.0 / float((hi - lo).max()))


def normalized(mesh: trimesh.Trimesh) -> trimesh.Trimesh:
    """A copy of ``mesh`` in the evaluation's normalized frame (docs/protocol.md §2.1)."""
    return transformed(mesh, bbox_normalization(mesh.vertices))


def transformed(mesh: trimesh.Trimesh, matrix: np.ndarray) -> trimesh.Trimesh:
    """A plain copy (geometry only) of ``mesh`` under a (4, 4) similarity transform."""
    vertices = np.asarray(mesh.vertices, dtype=np.float64) @ matrix[:3, :3].T + matrix[:3, 3]
    return trimesh.Trimesh(vertices, np.asarray(mesh.faces), process=False)


@dataclass
class SurfaceSamples:
    points: np.ndarray  # (N, 3)
    normals: np.ndarray  # (N, 3) unit face normals

    def __getitem__(self, index) -> "SurfaceSamples":
        return SurfaceSamples(self.points[index], self.normals[index])


def canonical_faces(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """The faces in an order fixed by the geometry alone, each starting at its smallest corner.

    Seeded sampling then gives the same points for any face order or vertex numbering of one surface
    (a mesh re-exported by another tool scores exactly the same). Winding is kept.
    """
    faces = np.asarray(faces, dtype=np.int64)
    key = np.round(np.asarray(vertices, dtype=np.float64)[faces] / _QUANTUM)  # (F, 3, 3)

    def lexicographic_less(a, b):  # (F, 3) corners, per face
        (ax, ay, az), (bx, by, bz) = a.T, b.T
        return (ax < bx) | ((ax == bx) & ((ay < by) | ((ay == by) & (az < bz))))

    c0, c1, c2 = key[:, 0], key[:, 1], key[:, 2]
    first = np.where(lexicographic_less(c0, c1),
                     np.where(lexicographic_less(c0, c2), 0, 2),
                     np.where(lexicographic_less(c1, c2), 1, 2))
    roll = (first[:, None] + np.arange(3)) % 3  # cyclic rotation keeps the winding
    faces = np.take_along_axis(faces, roll, axis=1)
    key = np.take_along_axis(key, roll[:, :, None], axis=1).reshape(len(faces), 9)
    return faces[np.lexsort(key.T[::-1])]


def sample_points(mesh: trimesh.Trimesh, count: int = POINTS, seed: int = 0) -> SurfaceSamples:
    """``count`` seeded area-uniform surface points with the normal of the face each lies on.

    Any prefix of the result is itself an area-uniform sample (the alignment search uses the first 4k).
    """
    vertices = np.asarray(mesh.vertices, dtype=np.float64)
    faces = canonical_faces(vertices, mesh.faces)
    points, normals = sample_surface(vertices, faces, count, np.random.default_rng(seed))
    return SurfaceSamples(points, normals)


def metric_names(thresholds=THRESHOLDS) -> list[str]:
    """Keys of :func:`point_metrics`, in report order."""
    names = ["cd", "cd_sum", "cd_squared"]
    for tau in thresholds:
        names += [f"f_score@{tau:g}", f"precision@{tau:g}", f"recall@{tau:g}"]
    return names + ["nc"]


def point_metrics(pred: SurfaceSamples, gt: SurfaceSamples, thresholds=THRESHOLDS) -> dict[str, float]:
    """The metrics of docs/protocol.md §2.4 between two sampled surfaces (nearest neighbours, unsquared distances).

    ``cd`` = ½(mean d(pred→gt) + mean d(gt→pred)); ``cd_sum`` is the two means added and ``cd_squared``
    ½(mean d² + mean d²) (double it for the sum-of-squares form). F-score@τ = 2PR/(P+R) with
    P = share of pred points within τ of gt, R the converse. ``nc`` = ½(mean |n_pred · n_gt(nn)| + the
    converse): the absolute value makes it blind to face orientation.
    """
    d_pg, nn_pg = cKDTree(gt.points).query(pred.points, workers=-1)
    d_gp, nn_gp = cKDTree(pred.points).query(gt.points, workers=-1)
    out = {
        "cd": 0.5 * (d_pg.mean() + d_gp.mean()),
        "cd_sum": d_pg.mean() + d_gp.mean(),
        "cd_squared": 0.5 * (np.square(d_pg).mean() + np.square(d_gp).mean()),
    }
    for tau in thresholds:
        precision, recall = (d_pg < tau).mean(), (d_gp < tau).mean()
        total = precision + recall
        out[f"f_score@{tau:g}"] = 2 * precision * recall / total if total > 0 else 0.0
        out[f"precision@{tau:g}"], out[f"recall@{tau:g}"] = precision, recall
    nc_pg = np.abs(np.einsum("ij,ij->i", pred.normals, gt.normals[nn_pg])).mean()
    nc_gp = np.abs(np.einsum("ij,ij->i", gt.normals, pred.normals[nn_gp])).mean()
    out["nc"] = 0.5 * (nc_pg + nc_gp)
    return {k: float(v) for k, v in out.items()}


def volume_iou(pred: trimesh.Trimesh, gt: trimesh.Trimesh, resolution: int = IOU_RESOLUTION) -> float:
    """IoU of the winding-number occupancies (> 0.5 inside) of two normalized meshes on a grid of cell centres."""
    import torch

    from mar3d.mesh.occupancy import volume_iou as occupancy_iou

    axis = (np.arange(resolution) + 0.5) / resolution * 2 * IOU_BOX - IOU_BOX
    grid = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), axis=-1).reshape(-1, 3)
    # The winding number minus one half is a logit: >= 0 inside.
    pred_logits = winding_numbers(pred.vertices, pred.faces, grid) - 0.5
    gt_labels = winding_numbers(gt.vertices, gt.faces, grid) > 0.5
    return float(occupancy_iou(torch.from_numpy(pred_logits)[None], torch.from_numpy(gt_labels)[None])[0])
