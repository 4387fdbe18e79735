"""What every training stage shares: optimizer groups, the LR schedule, atomic checkpoints, the strategy
(one device, DDP or FSDP), EMA under sharding, the Trainer and the export of the averaged weights."""
from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import warnings
from pathlib import Path
from typing import Callable

import lightning as L
import torch
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.strategies import DDPStrategy, FSDPStrategy
from torch import nn

from mar3d.models.layers import SelfAttentionBlock
from mar3d.training.callbacks import ResumableRun, Throughput, TrainingClock
from mar3d.training.config import TrainConfig
from mar3d.training.ema import EMA
from mar3d.training.loader import TrainLoader
from mar3d.utils.precision import training_precision

CHECKPOINT_DIR = "checkpoints"
RESOLVED_CONFIG = "config.yaml"  # every run writes the config it resolved next to its checkpoints
LAST = "last.ckpt"


NORMS = (nn.LayerNorm, nn.GroupNorm, nn.RMSNorm)


def parameter_groups(model: nn.Module, weight_decay: float, no_decay_modules: tuple[nn.Module, ...] = (),
                     order: Callable[[list[str]], list[str]] | None = None) -> list[dict]:
    """AdamW groups: no weight decay on biases, norm layers and the given modules.

    Decided by module and name, not by ``p.ndim < 2`` (the same split for our models): FSDP hands the
    optimizer every parameter as a flat 1-D shard. Each group lists its parameters in module order, or in
    ``order`` of their names when given (the order gradient clipping sums their norms in, and that of the
    optimizer state in checkpoints).
    """
    excluded = {id(p) for m in no_decay_modules for p in m.parameters()}
    decay, no_decay, seen = [], [], set()
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            (no_decay if name == "bias" or isinstance(module, NORMS) or id(p) in excluded else decay).append(p)
    if order is not None:
        names = {id(p): n for n, p in model.named_parameters()}

        def reordered(group: list) -> list:
            by_name = {names[id(p)]: p for p in group}
            return [by_name[n] for n in order(list(by_name))]

        decay, no_decay = reordered(decay), reordered(no_decay)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def warmup_cosine(step: int, warmup: int, total: int, floor: float) -> float:
    """LR multiplier: linear warm-up to 1, cosine down to ``floor`` at ``total``, then ``floor`` (no restart)."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def configure_adamw(model: nn.Module, config: TrainConfig, no_decay_modules: tuple[nn.Module, ...] = (),
                    order: Callable[[list[str]], list[str]] | None = None):
    """Lightning's ``configure_optimizers`` result: AdamW + per-step warm-up/cosine schedule."""
    optimizer = torch.optim.AdamW(parameter_groups(model, config.weight_decay, no_decay_modules, order),
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

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Also checkpoint the final step when it is not a multiple of ``every_n_train_steps``."""
        if trainer.global_step > self._last_global_step_saved:
            candidates = self._monitor_candidates(trainer)
            self._save_topk_checkpoint(trainer, candidates)
            self._save_last_checkpoint(trainer, candidates)
        super().on_train_end(trainer, pl_module)


def quiet_lightning() -> None:
    """Keep the terminal for our progress and errors: no hardware banners, tips, or advice that does not apply."""
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    for message in (".*smaller than the logging interval.*", ".*does not have many workers.*",
                    ".*LeafSpec.*", ".*treespec.*", ".*exists and is not empty.*"):
        warnings.filterwarnings("ignore", message=message)


def strategy(config: TrainConfig, unused_parameters: bool = False):
    """Lightning strategy for ``train.strategy``; the sampler shards the data itself, so DDP's is off.

    ``unused_parameters``: some parameters get no gradient in some steps (DDP must look for them).
    """
    if config.strategy == "ddp":
        return DDPStrategy(find_unused_parameters=unused_parameters)
    if config.strategy == "fsdp":
        from mar3d.models.diffusion_head import AdaLNBlock

        if not torch.cuda.is_available():
            raise ValueError("train.strategy fsdp needs GPUs (use ddp on CPU)")
        # FSDP units: the transformer blocks, called through ``forward``. The rest of each model (the live
        # one and its EMA copy) stays in the root unit, gathered for the whole step, because the stages
        # call model methods (``encode``, ``forward_loss``) that FSDP does not see.
        return FSDPStrategy(auto_wrap_policy={SelfAttentionBlock, AdaLNBlock}, sharding_strategy="FULL_SHARD",
                            state_dict_type="full")
    return "auto"


def build_trainer(run_dir: Path, config: TrainConfig, callbacks: list = (), progress_bar: bool = True,
                  unused_parameters: bool = False, **overrides) -> L.Trainer:
    """A Trainer that logs to TensorBoard in ``run_dir`` and checkpoints to ``run_dir/checkpoints``."""
    quiet_lightning()
    checkpoint = AtomicCheckpoint(dirpath=run_dir / CHECKPOINT_DIR, filename="step-{step}",
                                  every_n_train_steps=config.checkpoint_every, save_last=True,
                                  save_top_k=-1, auto_insert_metric_name=False)
    callbacks = [*callbacks, checkpoint, LearningRateMonitor(logging_interval="step")]
    if progress_bar:
        callbacks.append(TQDMProgressBar(refresh_rate=max(1, config.log_every // 2)))
    options = dict(
        default_root_dir=run_dir, max_steps=config.max_steps, precision=training_precision(config.precision),
        gradient_clip_val=config.grad_clip, callbacks=callbacks,
        strategy=strategy(config, unused_parameters), devices=config.devices, num_nodes=config.num_nodes,
        use_distributed_sampler=False,
        logger=TensorBoardLogger(run_dir, name="logs", version=""),
        log_every_n_steps=config.log_every, val_check_interval=config.val_every,
        check_val_every_n_epoch=None, enable_progress_bar=progress_bar, num_sanity_val_steps=0,
        enable_model_summary=False, deterministic=False,
    )
    options.update(overrides)
    return L.Trainer(**options)


def update_ema(ema: EMA, live: nn.Module, trainer: L.Trainer) -> None:
    """One EMA step after an optimizer step; works on FSDP shards.

    Under FSDP the live model and its EMA copy are wrapped alike, so each block's shards pair up on
    every rank; only the root unit (embeddings, norms, heads) must be gathered to pair up.
    """
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    root = trainer.strategy.model
    gathered = (FSDP.summon_full_params(root, recurse=False, writeback=True) if isinstance(root, FSDP)
                else contextlib.nullcontext())
    with gathered:
        ema.update(live)


class AveragedModule(L.LightningModule):
    """A LightningModule that trains one model (``live``) and keeps an EMA of it (``train.ema_decay``).

    ``averaged`` is what validation and export use: the EMA weights when kept, else the live ones. The EMA
    steps right after each optimizer step, not in ``on_train_batch_end``: the step's checkpoint must hold it.
    """

    @property
    def live(self) -> nn.Module:
        raise NotImplementedError

    def keep_average(self, decay: float) -> None:
        """Call once the live model exists."""
        self.ema = EMA(self.live, decay) if decay > 0 else None

    @property
    def averaged(self) -> nn.Module:
        return self.ema.shadow if self.ema is not None else self.live

    def load_model(self, folder: Path) -> nn.Module:
        """The exported model in ``folder``, of this module's kind (``start_from`` reads it)."""
        raise NotImplementedError

    def start_from(self, folder: str | Path) -> None:
        """Fine-tuning (``train.init_from``): the live and averaged weights become those of ``folder``'s model.

        The source must have this run's architecture: a different config would load mismatched or silently
        re-purposed weights, so every differing field is named instead.
        """
        from mar3d.config import ConfigError, to_dict
        from mar3d.models.io import model_folder

        source = self.load_model(model_folder(folder))
        mine, theirs = to_dict(self.live.config), to_dict(source.config)
        differ = sorted(k for k in mine.keys() | theirs.keys() if mine.get(k) != theirs.get(k))
        if differ:
            raise ConfigError(f"train.init_from {folder}: its model differs from this run's in "
                              + ", ".join(f"{k} ({theirs.get(k)!r} there, {mine.get(k)!r} here)" for k in differ))
        state = source.state_dict()
        self.live.load_state_dict(state)
        if self.ema is not None:
            self.ema.shadow.load_state_dict(state)

    def optimizer_step(self, *args, **kwargs) -> None:
        super().optimizer_step(*args, **kwargs)
        if self.ema is not None:
            update_ema(self.ema, self.live, self.trainer)


def averaged_model(trainer: L.Trainer, module: L.LightningModule) -> nn.Module | None:
    """``module.averaged`` (the EMA weights when kept) whole, on global rank 0; None on the other ranks.

    Under FSDP the weights are gathered from every rank's shards, so every rank must call this.
    """
    averaged = module.averaged
    if not isinstance(trainer.strategy, FSDPStrategy):
        return averaged if trainer.is_global_zero else None
    state = trainer.strategy.lightning_module_state_dict()
    if not trainer.is_global_zero:
        return None
    prefix = next(name for name, m in module.named_modules() if m is averaged) + "."
    with torch.device("meta"):
        model = type(averaged)(averaged.config)
    model.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}, assign=True)
    return model


def checkpoint_step(path: Path) -> int:
    """The training step a checkpoint was saved at: from its name (``step-N.ckpt``), else from the file."""
    match = re.fullmatch(r"step-(\d+)\.ckpt", path.name)
    if match:
        return int(match.group(1))
    return int(torch.load(path, map_location="cpu", mmap=True, weights_only=False)["global_step"])


def last_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint furthest into training: ``last.ckpt``, or ``step-N.ckpt`` when the run was killed
    between writing the two. Chosen by step, not by file time: a run folder copied without its times
    (``cp -r``) must resume at its end, not at whichever checkpoint the copy happened to write last."""
    paths = list((Path(run_dir) / CHECKPOINT_DIR).glob("*.ckpt"))
    return max(paths, key=lambda p: (checkpoint_step(p), p.name == LAST)) if paths else None


def fit(module: L.LightningModule, train_loader: TrainLoader, val_loader, run_dir: Path, run_config,
        resume: bool = False, progress_bar: bool = True, **trainer_overrides) -> L.Trainer:
    """Write the resolved config, then train ``module`` (from ``last.ckpt`` with ``resume``).

    ``train_loader`` comes from ``mar3d.training.loader.train_loader``: its position and throughput are
    tracked by the callbacks added here.
    """
    import yaml

    from mar3d.config import to_dict
    from mar3d.utils import atomic

    checkpoint = last_checkpoint(run_dir) if resume else None
    if resume and checkpoint is None:
        raise FileNotFoundError(f"{run_dir}: nothing to resume (no checkpoint in {CHECKPOINT_DIR}/)")
    config = run_config.train
    callbacks = [ResumableRun(train_loader.sampler, config.seed), Throughput(train_loader, config.log_every),
                 TrainingClock()]
    trainer = build_trainer(run_dir, config, callbacks, progress_bar,
                            unused_parameters=getattr(module, "unused_parameters", False), **trainer_overrides)
    if trainer.is_global_zero:
        atomic.remove_stale_temporaries(run_dir / CHECKPOINT_DIR)  # from a killed run
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic.write_bytes(run_dir / RESOLVED_CONFIG, yaml.safe_dump(to_dict(run_config), sort_keys=False).encode())
    if checkpoint is None and config.init_from:
        module.start_from(config.init_from)
    trainer.fit(module, train_loader, val_loader, ckpt_path=checkpoint)
    return trainer


def training_seconds(trainer: L.Trainer) -> float:
    """The wall-clock seconds the run of ``fit``'s trainer has trained, over all its resumes (0.1 s precision)."""
    clock = next(c for c in trainer.callbacks if isinstance(c, TrainingClock))
    return round(clock.seconds, 1)
