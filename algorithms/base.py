"""The interface every algorithm (pretext task or supervised baseline) implements.

An algorithm turns a batch from the data loader into (model inputs, targets) and scores
the model's logits. It works on tensors only and knows nothing of models, datasets or the
trainer. Tensor conventions:

- raster batch: float (B, C, H, W), values in [0, 1], ink bright (1) on background 0,
  image y pointing down.
- stroke batch: float (B, L, 4), rows [x, y, p1, p2], x and y normalised to [0, 1]
  (y down), p1/p2 one-hot pen state; padding rows are all zero; a row is valid when
  p1 + p2 > 0.
- labels: int64 (B,).
"""

from __future__ import annotations

import inspect
from functools import lru_cache
from typing import Any, ClassVar, Mapping

import numpy as np
import torch
from torch import Tensor

from .losses import cross_entropy

MODALITIES: tuple[str, ...] = ("raster", "stroke")


def numpy_dtype(dtype: torch.dtype) -> np.dtype | None:
    """The NumPy dtype of a torch dtype, None where NumPy has none (bfloat16)."""
    try:
        return torch.empty(0, dtype=dtype).numpy().dtype
    except TypeError:
        return None


def new_views_like(x: Tensor, count: int) -> Tensor:
    """Uninitialised contiguous (count, *x.shape[1:]) tensor of x's dtype and device.

    On the CPU the block comes from NumPy (shared with the returned tensor, no copy):
    NumPy asks Linux for transparent huge pages on large blocks, while torch's CPU
    allocator maps blocks above glibc's 32 MB mmap threshold afresh on every call, so
    each batch of views would otherwise pay a 4 KiB page fault per page touched (about
    10 ms for the 51 MB of 4 x 64 x 224^2 float32 rotation views on the project's VM).
    Other devices and dtypes NumPy lacks (bfloat16) use ``torch.empty``.
    """
    shape = (count, *x.shape[1:])
    np_dtype = numpy_dtype(x.dtype) if x.device.type == "cpu" else None
    if np_dtype is not None:
        return torch.from_numpy(np.empty(shape, dtype=np_dtype))
    return torch.empty(shape, dtype=x.dtype, device=x.device)


@lru_cache(maxsize=64)
def _view_targets(views: int, batch: int, device: torch.device) -> Tensor:
    return torch.arange(views, device=device).repeat_interleave(batch)


def view_targets(views: int, batch: int, device: torch.device | str) -> Tensor:
    """(views * batch,) int64 targets [0] * batch + [1] * batch + ... on device.

    A fresh tensor on every call (a clone of one made once per shape and device: on
    small stroke batches building it anew was a few percent of the views' time).
    """
    return _view_targets(views, batch, torch.device(device)).clone()


class Algorithm:
    """Base class: validates the modality and the parameters, provides the loss.

    Subclasses set ``name``, accept their parameters as keyword-only arguments of
    ``__init__`` (after ``modality``) and implement ``num_outputs`` and ``views``.
    """

    name: ClassVar[str] = "base"

    def __init__(self, modality: str) -> None:
        if modality not in MODALITIES:
            raise ValueError(
                f"{self.name}: modality must be one of {list(MODALITIES)}, got {modality!r}"
            )
        self.modality: str = modality

    # ----------------------------------------------------------------- construction
    @classmethod
    def parameter_names(cls) -> tuple[str, ...]:
        """Names of the keyword parameters ``__init__`` accepts besides ``modality``."""
        signature = inspect.signature(cls.__init__)
        return tuple(p for p in signature.parameters if p not in ("self", "modality"))

    @classmethod
    def from_params(cls, modality: str, params: Mapping[str, Any]) -> "Algorithm":
        """Build from a parameter mapping; unknown keys raise a one-line ValueError."""
        known = cls.parameter_names()
        for key in params:
            if key not in known:
                raise ValueError(
                    f"{cls.name}: unknown parameter {key!r} (known: {list(known)})"
                )
        return cls(modality, **params)

    # -------------------------------------------------------------------- interface
    def num_outputs(self, num_classes: int) -> int:
        """Width of the classification head this algorithm trains."""
        raise NotImplementedError

    def views(self, x: Tensor, y: Tensor | None) -> tuple[Tensor, Tensor]:
        """Map a loader batch to (model inputs, int64 targets) on ``x.device``."""
        raise NotImplementedError

    def loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        """Mean cross-entropy of logits (N, K) against targets (N,)."""
        return cross_entropy(logits, targets)

    def describe(self) -> dict[str, Any]:
        """Resolved settings (JSON-serialisable), saved next to checkpoints."""
        return {"name": self.name, "modality": self.modality}

    def __repr__(self) -> str:
        settings = ", ".join(f"{k}={v!r}" for k, v in self.describe().items() if k != "name")
        return f"{type(self).__name__}({settings})"

    # ---------------------------------------------------------------------- helpers
    def check_input(self, x: Tensor) -> None:
        """Raise ValueError unless x has the shape its modality promises."""
        if self.modality == "raster":
            if x.dim() != 4:
                raise ValueError(
                    f"{self.name}: raster batch must be (B, C, H, W), got {tuple(x.shape)}"
                )
        elif x.dim() != 3 or x.shape[-1] != 4:
            raise ValueError(
                f"{self.name}: stroke batch must be (B, L, 4), got {tuple(x.shape)}"
            )


class PretextAlgorithm(Algorithm):
    """A self-supervised task with a fixed number of surrogate classes.

    The loss checks that the head width equals ``num_outputs`` (a 4-way task trained with
    a 2-way head is exactly the kind of silent mismatch this guards against).
    """

    num_pretext_classes: ClassVar[int] = 0

    def num_outputs(self, num_classes: int) -> int:
        """The pretext class count; ``num_classes`` (the dataset's) is ignored."""
        return self.num_pretext_classes

    def loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        """Mean cross-entropy; logits must be (N, num_pretext_classes)."""
        if logits.dim() == 2 and logits.shape[1] != self.num_pretext_classes:
            raise ValueError(
                f"{self.name}: expected logits with {self.num_pretext_classes} columns, "
                f"got {logits.shape[1]}"
            )
        return cross_entropy(logits, targets)
