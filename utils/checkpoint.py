"""Checkpoints that are never half-written and never load silently wrong.

A checkpoint is one file holding everything needed to resume or evaluate: model and
optimiser state, epoch, RNG state, best validation accuracy and the resolved config.

Writes are atomic (:mod:`utils.atomic`), so a crash or ``kill -9`` during a save leaves the
previous file. Corruption that happens later (a bad disk, a partial copy) is caught on load:
a truncated or garbled file fails to unpickle, and a digest of every tensor's bytes, stored
in the file as ``checksum``, catches flipped bits inside tensor data that torch itself would
load without complaint.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import torch

from utils.atomic import atomic_write, remove_stale_temporaries, temporaries

__all__ = [
    "CheckpointError",
    "checkpoint_progress",
    "CheckpointWriteError",
    "load_checkpoint",
    "remove_stale_temporaries",
    "save_checkpoint",
    "temporaries",
]

REQUIRED_KEYS = ("model", "epoch", "config")
CHECKSUM_KEY = "checksum"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message names the file and the problem."""


class CheckpointWriteError(CheckpointError, OSError):
    """Saving failed (full disk, lost mount, permissions); the previous file is unchanged.

    Both a :class:`CheckpointError` (one line for the user) and an ``OSError``."""


def tensor_digest(obj: Any) -> str:
    """BLAKE2b digest of the dtype, shape and bytes of every tensor in ``obj`` (nested dicts,
    lists and tuples, in order); other values are not included."""
    h = hashlib.blake2b(digest_size=16)

    def visit(node: Any) -> None:
        if isinstance(node, torch.Tensor):
            t = node.detach().cpu().contiguous()
            h.update(f"{t.dtype}{tuple(t.shape)};".encode())
            if t.numel():
                h.update(t.reshape(-1).view(torch.uint8).numpy())
        elif isinstance(node, dict):
            for key, value in node.items():
                h.update(repr(key).encode())
                visit(value)
        elif isinstance(node, (list, tuple)):
            for value in node:
                visit(value)

    visit(obj)
    return h.hexdigest()


def save_checkpoint(state: dict, path: str | os.PathLike) -> None:
    """Write ``state`` (plus a ``checksum`` entry) to ``path`` atomically
    (:func:`utils.atomic.atomic_write`): a temporary file in the same folder, flushed and
    fsynced, then renamed over ``path``. A crash leaves either the old file or the new one;
    a failed write (a full disk) raises :class:`CheckpointWriteError` and leaves the old file
    and no temporary. ``state`` itself is not modified."""
    path = Path(path)
    payload = {k: v for k, v in state.items() if k != CHECKSUM_KEY}
    payload[CHECKSUM_KEY] = tensor_digest(payload)
    try:
        atomic_write(path, lambda fh: torch.save(payload, fh))
    except OSError as err:  # WriteError included: torch's wrapped RuntimeError is seen through
        reason = err.strerror or str(err) or type(err).__name__
        raise CheckpointWriteError(
            f"{path}: could not write checkpoint ({reason}); the previous {path.name}, if any, is unchanged"
        ) from err


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict:
    """Load a checkpoint written by :func:`save_checkpoint`, or raise :class:`CheckpointError`
    naming the file and the problem (missing, truncated, garbled, not ours)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        # Our checkpoints hold numpy RNG state and plain config dicts, so the
        # weights-only unpickler is too strict; only load checkpoints you trust.
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:  # a damaged file can fail in many ways; all mean the same here
        text = str(err).strip()
        first = f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__
        raise CheckpointError(f"{path}: unreadable or truncated checkpoint ({first[:200]})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a checkpoint of this project (holds a {type(state).__name__})")
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise CheckpointError(f"{path}: not a checkpoint of this project (missing {', '.join(missing)})")
    expected = state.pop(CHECKSUM_KEY, None)
    if expected is not None and tensor_digest(state) != expected:
        raise CheckpointError(f"{path}: corrupt checkpoint (tensor data does not match its checksum)")
    return state


def checkpoint_progress(path: str | os.PathLike) -> tuple[int, int]:
    """``(epoch, step)`` a training checkpoint was saved at (epochs completed, steps of the
    next epoch done), read without loading its tensors (the file is memory-mapped), so two
    checkpoints can be ordered cheaply. Raises :class:`CheckpointError` for a damaged file."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
        return int(state["epoch"]), int(state.get("step", 0) or 0)
    except Exception as err:  # noqa: BLE001 - any failure means the same: unusable
        text = str(err).strip().splitlines()
        raise CheckpointError(
            f"{path}: unreadable or truncated checkpoint ({type(err).__name__}: {text[0][:200] if text else ''})"
        ) from None
