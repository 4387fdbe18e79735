"""Exponential moving average of a model's weights, kept beside the model and saved in its checkpoints."""
from __future__ import annotations

import copy

import torch
from torch import nn


class EMA(nn.Module):
    """An fp32 shadow copy of ``model`` updated after every optimizer step.

    The decay warms up as ``min(decay, (1 + n) / (10 + n))`` after n updates, so a short run's average is
    not dominated by its random initialisation (a fixed 0.999 would still weigh the first weights by 0.55
    after 600 steps). Being an ``nn.Module`` attribute of the LightningModule, the shadow weights and the
    update count are part of every checkpoint and come back on ``--resume``.
    """

    def __init__(self, model: nn.Module, decay: float):
        super().__init__()
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.shadow = copy.deepcopy(model).float().requires_grad_(False)
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))

    def current_decay(self) -> float:
        n = int(self.updates)
        return min(self.decay, (1 + n) / (10 + n))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        weight = 1.0 - self.current_decay()
        for shadow, live in zip(self.shadow.parameters(), model.parameters()):
            shadow.lerp_(live.detach().float(), weight)
        for shadow, live in zip(self.shadow.buffers(), model.buffers()):
            shadow.copy_(live)
        self.updates += 1
