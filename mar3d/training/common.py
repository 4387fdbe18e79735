"""What every training stage shares: optimizer groups, the LR schedule, atomic checkpoints, the Trainer."""
from __future__ import annotations

import logging
import math
import os
import warnings
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn

from mar3d.training.config import TrainConfig

CHECKPOINT_DIR = "checkpoints"
RESOLVED_CONFIG = "config.yaml"  # every run writes the config it resolved next to its checkpoints
LAST = "last.ckpt"


def parameter_groups(model: nn.Module, weight_decay: float, no_decay_modules: tuple[nn.Module, ...] = ()) -> list[dict]:
    """AdamW groups: no weight decay on biases, norms, embeddings-by-choice (1-D tensors) and given modules."""
    excluded = {id(p) for m in no_decay_modules for p in m.parameters()}
    decay, no_decay = [], []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or id(p) in excluded else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def warmup_cosine(step: int, warmup: int, total: int, floor: float) -> float:
    """LR multiplier: linear warm-up to 1, cosine down to ``floor`` at ``total``, then ``floor`` (no restart)."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def configure_adamw(model: nn.Module, config: TrainConfig, no_decay_modules: tuple[nn.Module, ...] = ()):
    """Lightning's ``configure_optimizers`` result: AdamW + per-step warm-up/cosine schedule."""
    optimizer = torch.optim.AdamW(parameter_groups(model, config.weight_decay, no_decay_modules),
                                  lr=config.lr, betas=tuple(config.betas))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine(step, config.warmup_steps, config.max_steps, config.min_lr_ratio))
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


class AtomicCheckpoint(ModelCheckpoint):
    """ModelCheckpoint whose files appear whole or not at all (temp file + rename)."""

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        tmp = f"{filepath}.tmp-{os.getpid()}"
        trainer.save_checkpoint(tmp, self.save_weights_only)
        if trainer.is_global_zero:
            os.replace(tmp, filepath)
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath


def quiet_lightning() -> None:
    """Keep the terminal for our progress and errors: no hardware banners, tips, or advice that does not apply."""
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    for message in (".*smaller than the logging interval.*", ".*does not have many workers.*",
                    ".*LeafSpec.*", ".*treespec.*"):
        warnings.filterwarnings("ignore", message=message)


def build_trainer(run_dir: Path, config: TrainConfig, progress_bar: bool = True, **overrides) -> L.Trainer:
    """A Trainer that logs to TensorBoard in ``run_dir`` and checkpoints to ``run_dir/checkpoints``."""
    quiet_lightning()
    checkpoint = AtomicCheckpoint(dirpath=run_dir / CHECKPOINT_DIR, filename="step-{step}",
                                  every_n_train_steps=config.checkpoint_every, save_last=True,
                                  save_top_k=-1, auto_insert_metric_name=False)
    callbacks = [checkpoint, LearningRateMonitor(logging_interval="step")]
    if progress_bar:
        callbacks.append(TQDMProgressBar(refresh_rate=max(1, config.log_every // 2)))
    options = dict(
        default_root_dir=run_dir, max_steps=config.max_steps, precision=config.precision,
        gradient_clip_val=config.grad_clip, callbacks=callbacks,
        logger=TensorBoardLogger(run_dir, name="logs", version=""),
        log_every_n_steps=config.log_every, val_check_interval=config.val_every,
        check_val_every_n_epoch=None, enable_progress_bar=progress_bar, num_sanity_val_steps=0,
        enable_model_summary=False, deterministic=False,
    )
    options.update(overrides)
    return L.Trainer(**options)


def last_checkpoint(run_dir: Path) -> Path | None:
    path = Path(run_dir) / CHECKPOINT_DIR / LAST
    return path if path.exists() else None


def fit(module: L.LightningModule, train_loader, val_loader, run_dir: Path, run_config, resume: bool = False,
        progress_bar: bool = True, **trainer_overrides) -> L.Trainer:
    """Write the resolved config, then train ``module`` (from ``last.ckpt`` with ``resume``)."""
    import yaml

    from mar3d.config import to_dict
    from mar3d.utils import atomic

    run_dir.mkdir(parents=True, exist_ok=True)
    atomic.write_bytes(run_dir / RESOLVED_CONFIG, yaml.safe_dump(to_dict(run_config), sort_keys=False).encode())
    checkpoint = last_checkpoint(run_dir) if resume else None
    if resume and checkpoint is None:
        raise FileNotFoundError(f"{run_dir}: nothing to resume (no {CHECKPOINT_DIR}/{LAST})")
    trainer = build_trainer(run_dir, run_config.train, progress_bar=progress_bar, **trainer_overrides)
    trainer.fit(module, train_loader, val_loader, ckpt_path=checkpoint)
    return trainer
