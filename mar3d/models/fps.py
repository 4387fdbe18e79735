"""Farthest-point sampling: the Pyramid VAE's FPS queries (docs/vae.md), on CPU (numpy) or any torch device."""
from __future__ import annotations

import numpy as np
import torch


def farthest_point_sample(points: torch.Tensor, count: int) -> torch.Tensor:
    """Indices (B, count) of farthest-point samples of (B, P, 3), starting from point 0.

    The pyramid levels are already random subsets, so a fixed start is a random start and deterministic.
    On CPU the loop runs in numpy: a thousand tiny multi-threaded torch ops cost ~50x more there.
    """
    batch, num_points, _ = points.shape
    if count > num_points:
        raise ValueError(f"cannot take {count} farthest points from {num_points}")
    if points.device.type == "cpu":
        xyz = points.detach().float().numpy()
        index = np.zeros((batch, count), dtype=np.int64)
        distance = np.full((batch, num_points), np.inf, dtype=np.float32)
        farthest = np.zeros(batch, dtype=np.int64)
        rows = np.arange(batch)
        for i in range(count):
            index[:, i] = farthest
            np.minimum(distance, ((xyz - xyz[rows, farthest][:, None]) ** 2).sum(-1), out=distance)
            farthest = distance.argmax(axis=-1)
        return torch.from_numpy(index)
    xyz = points.detach().float()
    index = torch.zeros(batch, count, dtype=torch.long, device=xyz.device)
    distance = torch.full((batch, num_points), float("inf"), device=xyz.device)
    farthest = torch.zeros(batch, dtype=torch.long, device=xyz.device)
    rows = torch.arange(batch, device=xyz.device)
    for i in range(count):
        index[:, i] = farthest
        distance = torch.minimum(distance, (xyz - xyz[rows, farthest][:, None]).pow(2).sum(-1))
        farthest = distance.argmax(dim=-1)
    return index
