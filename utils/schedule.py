"""Per-epoch learning-rate tables."""

from __future__ import annotations

from typing import Sequence


def lr_at(schedule: Sequence[Sequence[float]], epoch: int) -> float:
    """Learning rate in force at ``epoch`` (counted from 1).

    ``schedule`` is ``[[first_epoch, lr], ...]`` sorted by epoch, first entry at epoch 1:
    ``[[1, 0.01], [6, 1e-3]]`` gives 0.01 for epochs 1-5 and 1e-3 from epoch 6 on.
    """
    if epoch < 1:
        raise ValueError(f"epochs count from 1, got {epoch}")
    lr = None
    for first, value in schedule:
        if epoch >= first:
            lr = float(value)
    if lr is None:
        raise ValueError(f"schedule {list(schedule)} has no entry for epoch {epoch}")
    return lr
