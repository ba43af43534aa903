"""The order a training epoch reads its samples in: seeded, shardable, resumable mid-epoch.

One *global* order per epoch, a permutation of ``range(size)`` that depends only on
``(seed, epoch)``. Global step ``s`` reads positions ``[s*B, (s+1)*B)`` of it (``B`` = global
batch). With ``world_size`` W > 1 processes, rank r reads every W-th position of that block,
starting at ``s*B + r`` (the layout of ``torch.utils.data.DistributedSampler``), so the ranks'
batches at step s together are exactly the single-process batch of step s. ``start_step``
skips the first steps' positions without touching the data, which is how a run resumes in
the middle of an epoch.
"""

from __future__ import annotations

import math
from typing import Iterator

import torch
from torch.utils.data import Sampler


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The generator behind epoch ``epoch``'s order (and its DataLoader worker seeds)."""
    return torch.Generator().manual_seed(seed * 100_003 + epoch)


class EpochSampler(Sampler[int]):
    """Indices one rank reads in one epoch, from step ``start_step`` on.

    Args:
        size: samples in the dataset.
        batch_size: the *global* batch B; each rank loads ``B // world_size`` per step.
        seed, epoch: the order is ``randperm(size)`` drawn from :func:`epoch_generator`.
        shuffle: False reads ``0, 1, ..., size - 1``.
        drop_last: drop an incomplete last global batch (kept when it is the only one).
        rank, world_size: this process's share; B must be divisible by world_size.
        start_step: global steps already done this epoch; their samples are skipped.

    An order shorter than a multiple of ``world_size`` is padded by wrapping around (as
    DistributedSampler does), so every rank takes the same number of steps.
    """

    def __init__(
        self,
        size: int,
        batch_size: int,
        *,
        seed: int,
        epoch: int,
        shuffle: bool = True,
        drop_last: bool = True,
        rank: int = 0,
        world_size: int = 1,
        start_step: int = 0,
    ) -> None:
        if size < 1:
            raise ValueError("EpochSampler: the dataset is empty")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"EpochSampler: rank {rank} of world size {world_size}")
        if batch_size < 1 or batch_size % world_size:
            raise ValueError(
                f"EpochSampler: global batch {batch_size} is not divisible by {world_size} processes"
            )
        if start_step < 0:
            raise ValueError(f"EpochSampler: start_step must be >= 0, got {start_step}")
        if shuffle:
            order = torch.randperm(size, generator=epoch_generator(seed, epoch)).tolist()
        else:
            order = list(range(size))
        if drop_last and size > batch_size:
            order = order[: (size // batch_size) * batch_size]
        elif len(order) % world_size:
            pad = world_size - len(order) % world_size
            order += (order * math.ceil(pad / len(order)))[:pad]
        self.batch_size = batch_size
        self.local_batch = batch_size // world_size
        self.num_steps = math.ceil(len(order) / batch_size)  # global steps in the full epoch
        self.start_step = start_step
        self._indices = order[rank::world_size][start_step * self.local_batch :]

    def __iter__(self) -> Iterator[int]:
        return iter(self._indices)

    def __len__(self) -> int:
        return len(self._indices)


class SamplerSlot(Sampler[int]):
    """A sampler whose indices come from whichever sampler was put in it last.

    A DataLoader with persistent workers is built once and reused for every epoch; it asks
    its sampler for a fresh iterator at the start of each epoch (in the main process), so
    putting that epoch's :class:`EpochSampler` into the slot first changes the order without
    rebuilding the loader or restarting its workers.
    """

    def __init__(self, sampler: Sampler[int]) -> None:
        self.sampler = sampler

    def __iter__(self) -> Iterator[int]:
        return iter(self.sampler)

    def __len__(self) -> int:
        return len(self.sampler)  # type: ignore[arg-type]
