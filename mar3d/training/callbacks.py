"""Callbacks every stage trains with: exact resume (data position, per-batch seeds), throughput, wall time."""
from __future__ import annotations

import random
import time

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback

from mar3d.training.loader import ResumableSampler, TrainLoader


def seed_batch(seed: int, rank: int, batch: int) -> None:
    """Seed python's, numpy's and torch's RNGs for one training batch of one rank."""
    value = int(np.random.SeedSequence([seed, rank, batch]).generate_state(1, np.uint64)[0])
    random.seed(value)
    np.random.seed(value % 2**32)
    torch.manual_seed(value)


class ResumableRun(Callback):
    """Makes a resumed run take the steps the uninterrupted run would have taken, bit for bit on CPU.

    It shards the sampler over the ranks and counts the batches trained on; the checkpoint keeps that
    data position (``TrainLoader.state_dict``). Random states are not saved and restored: every training
    batch's draws are seeded by (seed, rank, batch number) instead, so anything that draws random numbers
    between two steps (validation, a new loader iterator, a resume) cannot shift the next step's draws.
    """

    def __init__(self, sampler: ResumableSampler, seed: int):
        self.sampler, self.seed = sampler, seed

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.sampler.shard(trainer.global_rank, trainer.world_size)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module, batch, batch_index: int) -> None:
        seed_batch(self.seed, trainer.global_rank, self.sampler.batches)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_index: int) -> None:
        self.sampler.batches += 1


class Throughput(Callback):
    """Steps/s, samples/s and the share of step time spent waiting for the next batch.

    Logged as ``perf/*`` every ``every`` steps and summarised when training ends (``summary``). The
    first step (worker start-up, lazy initialisation) and validation are left out of the timing.
    """

    def __init__(self, loader: TrainLoader, every: int):
        self.loader, self.every = loader, every
        self.summary: dict[str, float] = {}

    def on_train_start(self, trainer: L.Trainer, pl_module) -> None:
        self.samples_per_step = self.loader.batch_size * trainer.world_size
        self._last: tuple[float, float] | None = None  # (time, loader wait) at the last step's end
        self._validating = 0.0
        self._window = np.zeros(3)  # steps, seconds, seconds waiting
        self._total = np.zeros(3)

    def on_validation_start(self, trainer: L.Trainer, pl_module) -> None:
        self._validation_start = time.perf_counter()

    def on_validation_end(self, trainer: L.Trainer, pl_module) -> None:
        self._validating += time.perf_counter() - self._validation_start

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_index: int) -> None:
        now, waited = time.perf_counter(), self.loader.waited
        if self._last is not None:
            step = np.array([1.0, now - self._last[0] - self._validating, waited - self._last[1]])
            self._window += step
            self._total += step
        self._last, self._validating = (now, waited), 0.0
        if trainer.global_step % self.every == 0 and self._window[0]:
            for logger in trainer.loggers:
                logger.log_metrics({f"perf/{k}": v for k, v in self._rates(self._window).items()},
                                   step=trainer.global_step)
            self._window[:] = 0

    def on_train_end(self, trainer: L.Trainer, pl_module) -> None:
        if not self._total[0]:
            return
        self.summary = self._rates(self._total) | {"steps": int(self._total[0])}
        s = self.summary
        if trainer.is_global_zero:
            print(f"throughput: {s['steps_per_s']:.2f} steps/s, {s['samples_per_s']:.1f} samples/s, "
                  f"waiting for data {s['data_wait_fraction']:.1%} of step time (over {s['steps']} steps)")

    def _rates(self, totals: np.ndarray) -> dict[str, float]:
        steps, seconds, waiting = totals
        return {"steps_per_s": steps / seconds, "samples_per_s": steps * self.samples_per_step / seconds,
                "data_wait_fraction": waiting / seconds}


class TrainingClock(Callback):
    """Wall-clock seconds a run has trained, summed over its resumes.

    Every checkpoint keeps the total so far, so a resumed run (even one resumed after it had finished, which
    trains no step) reports the whole run's time, not only its own last leg.
    """

    def __init__(self):
        self._earlier, self._start = 0.0, time.perf_counter()

    @property
    def seconds(self) -> float:
        return self._earlier + time.perf_counter() - self._start

    def state_dict(self) -> dict:
        return {"seconds": self.seconds}

    def load_state_dict(self, state_dict: dict) -> None:
        # Checkpoints written before this callback existed have no entry; their time is unknown, so it counts 0.
        self._earlier = float(state_dict.get("seconds", 0.0))
