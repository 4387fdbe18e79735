"""Training-run configs: what every stage shares (``TrainConfig``) and the VAE run (model + data + train)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from mar3d.config import ConfigError
from mar3d.models.vae import VAEConfig


@dataclass
class TrainConfig:
    batch_size: int = 8
    lr: float = 1e-4
    min_lr_ratio: float = 0.01  # cosine decays to lr * min_lr_ratio and stays there (no restart)
    warmup_steps: int = 100
    max_steps: int = 10_000
    weight_decay: float = 0.02
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    grad_clip: float = 3.0
    ema_decay: float = 0.999  # EMA of the weights, used for validation and export (0: off)
    # auto: bf16-mixed where the training device computes bf16 natively, else 32-true (mar3d.utils.precision)
    precision: Literal["auto", "bf16-mixed", "32-true", "16-mixed"] = "auto"
    checkpoint_every: int = 1000
    val_every: int = 500
    log_every: int = 10
    num_workers: int = 2
    prefetch_batches: int = 4  # batches each worker loads ahead
    seed: int = 0
    strategy: Literal["auto", "ddp", "fsdp"] = "auto"  # fsdp shards the paper-size MAR over GPUs
    devices: int | Literal["auto"] = "auto"  # per node: GPUs, or processes on CPU
    num_nodes: int = 1

    def validate(self) -> None:
        for name in ("batch_size", "max_steps", "checkpoint_every", "val_every", "log_every", "prefetch_batches",
                     "num_nodes"):
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name} must be >= 1")
        if self.lr <= 0 or not 0 <= self.min_lr_ratio <= 1:
            raise ConfigError("train.lr must be > 0 and train.min_lr_ratio in [0, 1]")
        if not 0 <= self.ema_decay < 1:
            raise ConfigError("train.ema_decay must be in [0, 1)")
        if len(self.betas) != 2:
            raise ConfigError("train.betas must have two values")
        if self.devices != "auto" and self.devices < 1:
            raise ConfigError("train.devices must be 'auto' or >= 1")
        if self.num_workers < 0:
            raise ConfigError("train.num_workers must be >= 0")


@dataclass
class VAEDataConfig:
    supervision_points: int = 20480  # paper
    rotate: bool = True  # rotation augmentation by the stored view rotations
    include_ids: list[str] = field(default_factory=list)  # train on these only (empty: every prepared item)
    val_ids: list[str] = field(default_factory=list)  # held out from training, used for validation IoU
    exclude_ids: list[str] = field(default_factory=list)  # held out from everything (evaluation)
    val_points: int = 100_000  # uniform + near-surface points per validation object


@dataclass
class VAERunConfig:
    model: VAEConfig = field(default_factory=VAEConfig)
    data: VAEDataConfig = field(default_factory=VAEDataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
