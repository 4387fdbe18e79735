"""Volume IoU of predicted occupancy against ground-truth labels: VAE validation in training, and VAE
reconstruction metrics in evaluation (docs/protocol.md §3)."""
from __future__ import annotations

import torch


def volume_iou(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """IoU of ``logits >= 0`` vs ``labels`` (both (B, Q)) per shape, (B,); 1 where both are empty."""
    pred, gt = logits >= 0, labels > 0.5
    intersection = (pred & gt).sum(-1).float()
    union = (pred | gt).sum(-1).float()
    return torch.where(union > 0, intersection / union.clamp(min=1), torch.ones_like(union))
