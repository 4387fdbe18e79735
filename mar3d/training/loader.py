"""The training data loader: a seeded sample order that resumes at any batch and shards over ranks.

Lightning restores model, optimizer and step on ``--resume`` but starts a map-style loader's epoch
over; and a loader's worker processes draw random numbers in whatever order they run. Here the order
of epoch e is a permutation seeded by (seed, e), each position of it carries its own random seed, and
an item's random draws (point subsets, rotations) use that seed. So which samples a step sees and what
they contain depend only on the step: not on workers, on the number of ranks, or on a resume.
"""
from __future__ import annotations

import math
import time
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from mar3d.training.config import TrainConfig


class ResumableSampler(Sampler[tuple[int, int]]):
    """Yields ``(index, seed)``: seeded epoch permutations of ``size`` items, padded to whole global batches.

    A global batch is ``batch_size * world`` samples; rank r takes its r-th ``batch_size`` slice, so W
    ranks with batch B see, step by step, the samples one process with batch W * B would see. The epoch
    is padded by wrapping around its permutation, so every batch is full on every rank.

    ``batches`` counts the batches this rank has trained on; an iterator starts there (mid-epoch after a
    resume, else at an epoch start) and runs to the end of that epoch.
    """

    def __init__(self, size: int, batch_size: int, seed: int = 0, shuffle: bool = True):
        if size < 1 or batch_size < 1:
            raise ValueError(f"need at least one item and a batch size >= 1, got {size} and {batch_size}")
        self.size, self.batch_size, self.seed, self.shuffle = size, batch_size, seed, shuffle
        self.rank, self.world = 0, 1
        self.batches = 0

    def shard(self, rank: int, world: int) -> None:
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} outside a world of {world}")
        self.rank, self.world = rank, world

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.world

    @property
    def batches_per_epoch(self) -> int:
        return math.ceil(self.size / self.global_batch)

    def __len__(self) -> int:
        """This rank's samples per epoch."""
        return self.batches_per_epoch * self.batch_size

    def epoch_order(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """Item indices and per-sample seeds of the whole (padded) epoch, every rank's share."""
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(self.size) if self.shuffle else np.arange(self.size)
        length = self.batches_per_epoch * self.global_batch
        return np.resize(order, length), rng.integers(0, 2**63 - 1, size=length)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, first = divmod(self.batches, self.batches_per_epoch)
        order, seeds = self.epoch_order(epoch)
        for batch in range(first, self.batches_per_epoch):
            start = (batch * self.world + self.rank) * self.batch_size
            for position in range(start, start + self.batch_size):
                yield int(order[position]), int(seeds[position])

    # ------------------------------------------------------------------ the position a checkpoint keeps
    def position(self) -> dict:
        """Where the run is: the epoch and how many of its samples (all ranks) were trained on."""
        epoch, batch = divmod(self.batches, self.batches_per_epoch)
        return {"epoch": epoch, "samples": batch * self.global_batch}

    def resume(self, position: dict) -> None:
        """Continue after ``position`` (exactly when batch size and world size are those it was saved with)."""
        self.batches = position["epoch"] * self.batches_per_epoch + position["samples"] // self.global_batch


class SeededItems(Dataset):
    """``dataset[index]`` (a dict) drawn with torch's CPU RNG seeded by the sample's seed, which it keeps
    under ``"seed"`` for the model's own per-sample draws.

    The datasets draw their randomness from torch's RNG (``mar3d.data.datasets``); the caller's RNG
    state is put back afterwards, so loading in the training process leaves the model's draws alone.
    """

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        index, seed = key
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)
            return self.dataset[index] | {"seed": seed}


class TrainLoader(DataLoader):
    """A DataLoader over a ``ResumableSampler`` whose position goes into checkpoints, and which adds up
    the seconds its consumer spends blocked in ``next()`` (``waited``).

    Lightning saves the ``state_dict`` of a loader that has one with the loop state and loads it before
    the first iterator of a resumed run is made.
    """

    sampler: ResumableSampler
    waited = 0.0

    def __iter__(self):
        return _TimedIterator(super().__iter__(), self)

    def state_dict(self) -> dict:
        return self.sampler.position()

    def load_state_dict(self, state: dict) -> None:
        self.sampler.resume(state)


class _TimedIterator:
    def __init__(self, iterator, loader: TrainLoader):
        self.iterator, self.loader = iterator, loader

    def __iter__(self):
        return self

    def __next__(self):
        start = time.perf_counter()
        try:
            return next(self.iterator)
        finally:
            self.loader.waited += time.perf_counter() - start


def train_loader(dataset: Dataset, config: TrainConfig, collate_fn=None) -> TrainLoader:
    """The loader every stage trains from: resumable seeded order, worker processes, pinned memory on GPU."""
    workers = config.num_workers
    return TrainLoader(SeededItems(dataset), batch_size=config.batch_size,
                       sampler=ResumableSampler(len(dataset), config.batch_size, config.seed),
                       collate_fn=collate_fn, num_workers=workers, persistent_workers=workers > 0,
                       generator=torch.Generator().manual_seed(config.seed),  # not the global RNG
                       prefetch_factor=config.prefetch_batches if workers else None,
                       pin_memory=torch.cuda.is_available())
