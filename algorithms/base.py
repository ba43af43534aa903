"""The interface every algorithm (pretext task, generic self-supervised method or supervised
baseline) implements, and the pieces the trainer drives it through.

An algorithm owns one training objective. It works on tensors and ``torch.nn`` modules only
and knows nothing of models, datasets or the trainer; the trainer drives it through three
calls per step (RotNet's ``train_step`` shape, solo-learn's method-owned heads)::

    views = algorithm.prepare(x, y, draws)       # pretext views / random augmentations, no gradient
    out = networks(views)                        # = algorithm.forward(networks, views): loss + metrics
    ...backward, optimiser step...
    algorithm.after_step(networks, step, total)  # e.g. the EMA update of a momentum target

``networks`` is a :class:`Networks` container built by :meth:`Algorithm.build_networks`: the
encoder (any model called as ``model(x, out_feat_keys)``), the algorithm's own trainable
modules (``heads``: projector, predictor, decoder) and its non-optimised state (``target``:
a momentum copy). The container is what the optimiser, DistributedDataParallel and the
checkpoint see; evaluation reads the encoder alone.

Tensor conventions:

- raster batch: float (B, C, H, W), values in [0, 1], ink bright (1) on background 0,
  image y pointing down. Algorithms whose :attr:`Algorithm.takes_ink_levels` is true
  (rotation, deformation) also take uint8 ink levels 0..255, the renderer's own pixels, and
  make from them exactly the float views of ``level / 255`` (:func:`ink_to_float`): the
  loader then moves a quarter of the bytes.
- stroke batch: float (B, L, 4), rows [x, y, p1, p2], x and y normalised to [0, 1]
  (y down), p1/p2 one-hot pen state; padding rows are all zero; a row is valid when
  p1 + p2 > 0.
- labels: int64 (B,).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable, ClassVar, Mapping

import cv2
import numpy as np
import torch
from torch import Tensor, nn

from .losses import accuracy, cross_entropy

MODALITIES: tuple[str, ...] = ("raster", "stroke")
#: The input of an algorithm that trains a raster and a stroke encoder together: both forms
#: of each sketch, a pair ``(raster (B, C, H, W), strokes (B, L, 4))``.
PAIRED: str = "paired"


def numpy_dtype(dtype: torch.dtype) -> np.dtype | None:
    """The NumPy dtype of a torch dtype, None where NumPy has none (bfloat16)."""
    try:
        return torch.empty(0, dtype=dtype).numpy().dtype
    except TypeError:
        return None


def new_views_like(x: Tensor, count: int, dtype: torch.dtype | None = None) -> Tensor:
    """Uninitialised contiguous (count, *x.shape[1:]) tensor of x's device and dtype (or
    ``dtype`` when given).

    On the CPU the block comes from NumPy (shared with the returned tensor, no copy):
    NumPy asks Linux for transparent huge pages on large blocks, while torch's CPU
    allocator maps blocks above glibc's 32 MB mmap threshold afresh on every call, so
    each batch of views would otherwise pay a 4 KiB page fault per page touched (about
    10 ms for the 51 MB of 4 x 64 x 224^2 float32 rotation views on the project's VM).
    Other devices and dtypes NumPy lacks (bfloat16) use ``torch.empty``.
    """
    shape = (count, *x.shape[1:])
    dtype = x.dtype if dtype is None else dtype
    np_dtype = numpy_dtype(dtype) if x.device.type == "cpu" else None
    if np_dtype is not None:
        return torch.from_numpy(np.empty(shape, dtype=np_dtype))
    return torch.empty(shape, dtype=dtype, device=x.device)


#: Ink levels of a uint8 raster: level L is the float32 value ``L / 255``.
INK_SCALE: int = 255


@lru_cache(maxsize=8)
def _ink_table(device: torch.device) -> Tensor:
    # data.render.INK_LEVELS on the device; written again here because the leaf packages
    # (algorithms, data) import no other project package (STYLE.md, tested).
    return torch.from_numpy(np.arange(INK_SCALE + 1, dtype=np.float32) / np.float32(INK_SCALE)).to(device)


def ink_to_float(x: Tensor, out: Tensor | None = None) -> Tensor:
    """uint8 ink levels -> float32 ``level / 255``, each value the correctly rounded
    float32 quotient (the renderer's ``levels / 255``, bit for bit).

    On the CPU one OpenCV ``divide`` into float32 (one pass, about the speed of a copy; a
    cast then an in-place division, two passes, for a non-contiguous x); on other devices a
    lookup in a 256-entry table (a device's division by a scalar may multiply by the
    reciprocal instead, which differs in the last bit for 126 of the 256 levels). Both are
    tested against the exact quotients of all 256 levels.

    Args:
        x: (N, ...) uint8 tensor.
        out: optional contiguous float32 tensor of x's shape and device to write into.

    Returns:
        float32 tensor of x's shape: ``out`` when given, otherwise a new contiguous one.
    """
    if x.dtype != torch.uint8:
        raise TypeError(f"ink levels must be uint8, got {x.dtype}")
    if x.dim() == 0:
        raise ValueError("ink levels need at least one dimension")
    if out is None:
        out = new_views_like(x, x.shape[0], dtype=torch.float32)
    elif out.shape != x.shape or out.dtype != torch.float32 or out.device != x.device or not out.is_contiguous():
        raise ValueError(f"out must be a contiguous float32 {tuple(x.shape)} tensor on {x.device}, "
                         f"got {out.dtype} {tuple(out.shape)} on {out.device}")
    if x.device.type == "cpu":
        src, dst = x.numpy(), out.numpy()
        if src.flags.c_contiguous and src.size:
            # As rows of the last dimension: one OpenCV call for the whole batch.
            rows, into = src.reshape(-1, src.shape[-1]), dst.reshape(-1, src.shape[-1])
            cv2.divide(rows, float(INK_SCALE), dst=into, dtype=cv2.CV_32F)
        else:
            np.copyto(dst, src)
            np.divide(dst, np.float32(INK_SCALE), out=dst)
        return out
    return _ink_by_table(x, out)


def _ink_by_table(x: Tensor, out: Tensor) -> Tensor:
    """:func:`ink_to_float`'s lookup (the path of devices other than the CPU)."""
    torch.index_select(_ink_table(x.device), 0, x.reshape(-1).int(), out=out.view(-1))
    return out


@lru_cache(maxsize=64)
def _view_targets(views: int, batch: int, device: torch.device) -> Tensor:
    return torch.arange(views, device=device).repeat_interleave(batch)


def view_targets(views: int, batch: int, device: torch.device | str) -> Tensor:
    """(views * batch,) int64 targets [0] * batch + [1] * batch + ... on device.

    A fresh tensor on every call (a clone of one made once per shape and device: on
    small stroke batches building it anew was a few percent of the views' time).
    """
    return _view_targets(views, batch, torch.device(device)).clone()


# --------------------------------------------------------------------------- randomness
@dataclass(frozen=True)
class Draws:
    """Where the random numbers of one batch's augmentations come from.

    Under torchrun each of W processes holds rows ``rank, rank + W, rank + 2W, ...`` of the
    global batch (the samplers' layout, ``utils.sampler.EpochSampler``). Every process draws
    for the *global* batch from the same generator (same seed, same calls) and keeps its own
    rows, so W processes augment each sketch exactly as one process with the whole batch
    would, and every process's generator stays in step with the others'.

    Attributes:
        generator: a ``torch.Generator`` on the training device (its state is saved in the
            checkpoint, so a resumed run draws what an uninterrupted one would).
        rank, world_size: this process's share of the global batch.
    """

    generator: torch.Generator
    rank: int = 0
    world_size: int = 1

    def _local(self, full: Tensor) -> Tensor:
        return full if self.world_size == 1 else full[self.rank :: self.world_size]

    def uniform(self, n: int, *shape: int, low: float = 0.0, high: float = 1.0) -> Tensor:
        """(n, *shape) float32 uniform in [low, high) for this process's n rows."""
        g = self.generator
        full = torch.rand((n * self.world_size, *shape), generator=g, device=g.device)
        if (low, high) != (0.0, 1.0):
            full = full.mul_(high - low).add_(low)
        return self._local(full)

    def normal(self, n: int, *shape: int) -> Tensor:
        """(n, *shape) float32 standard normal for this process's n rows."""
        g = self.generator
        return self._local(torch.randn((n * self.world_size, *shape), generator=g, device=g.device))


# --------------------------------------------------------------------------- one step
@dataclass
class StepOutput:
    """What an algorithm's forward pass returns for one batch.

    Attributes:
        loss: scalar tensor to minimise (float32; carries the graph in training).
        count: samples that ``loss`` and ``metrics`` are means over; the trainer weights
            epoch averages by it (a short last batch counts for what it holds).
        metrics: the method's own per-batch means (e.g. pretext accuracy, contrastive
            top-1), as Python floats; keys are the algorithm's ``metric_names``.
    """

    loss: Tensor
    count: int
    metrics: dict[str, float] = field(default_factory=dict)


def _identity(x: Tensor) -> Tensor:
    return x


class Networks(nn.Module):
    """Everything an algorithm trains or keeps: the encoder, its own modules, its target.

    ``forward(views)`` is ``algorithm.forward(self, views)``, so the trainer can wrap this
    one module in DistributedDataParallel (every trainable module is synchronised, the
    heads included) and ``torch.compile``, and checkpoint it in two parts: ``encoder``
    (``state["model"]``, what evaluation reads) and :meth:`method_state_dict` (heads and
    target).

    Attributes:
        encoder: the network being pretrained (``encoder(x, out_feat_keys)``); for a
            method that reads several inputs (e.g. a raster and a stroke encoder trained
            together) any module holding them.
        heads: the algorithm's trainable modules (projector, predictor, decoder); empty for
            the pretext tasks, whose head is the encoder's classifier.
        target: modules updated outside the optimiser (a momentum copy), or None; its
            parameters never require gradients.
        gather: how embeddings of the local batch become the global batch's under torchrun
            (``engine.distributed.gather_with_grad``); the identity in one process. Methods
            use it in training only (validation batches are each process's own).
    """

    def __init__(self, algorithm: "Algorithm", encoder: nn.Module, heads: nn.ModuleDict | None = None,
                 target: nn.Module | None = None) -> None:
        super().__init__()
        self.encoder = encoder
        self.heads = heads if heads is not None else nn.ModuleDict()
        self.target = target
        if target is not None:
            target.requires_grad_(False)
        self.algorithm = algorithm  # a plain object, not a submodule
        self.gather: Callable[[Tensor], Tensor] = _identity

    def forward(self, views: Any) -> StepOutput:
        return self.algorithm.forward(self, views)

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters the optimiser updates: the encoder's that require a gradient, then
        the heads'. (For the pretext tasks: exactly ``encoder.parameters()``, in order.)"""
        return [p for p in self.encoder.parameters() if p.requires_grad] + list(self.heads.parameters())

    def method_state_dict(self) -> dict[str, Any]:
        """``{"heads": ..., "target": ... or None}``: the algorithm's part of a checkpoint."""
        return {"heads": self.heads.state_dict(),
                "target": None if self.target is None else self.target.state_dict()}

    def load_method_state_dict(self, state: Mapping[str, Any]) -> None:
        """Load what :meth:`method_state_dict` saved (strict: every key must fit)."""
        self.heads.load_state_dict(state.get("heads") or {})
        saved_target = state.get("target")
        if (saved_target is None) != (self.target is None):
            raise KeyError("target network: the checkpoint has "
                           f"{'none' if saved_target is None else 'one'}, this algorithm "
                           f"{'has none' if self.target is None else 'needs one'}")
        if self.target is not None:
            self.target.load_state_dict(saved_target)


# --------------------------------------------------------------------------- algorithms
class Algorithm:
    """Base class: validates the modality and the parameters; by default a classification
    objective on the encoder's logits (the pretext tasks and the supervised baseline).

    Subclasses set ``name``, accept their parameters as keyword-only arguments of
    ``__init__`` (after ``modality``) and implement ``num_outputs`` and ``views`` (a
    classification task) or override ``prepare`` / ``build_networks`` / ``forward`` /
    ``after_step`` (a method with its own heads, loss and state).

    Class attributes:
        metric_names: the per-batch metrics ``forward`` reports besides the loss; the
            trainer logs ``train_<name>`` and ``val_<name>`` for each.
        uses_logits: whether the loss reads the encoder's classifier. When False the
            classifier is a frozen placeholder (``num_outputs`` wide) that no step changes.
        randomized: whether ``prepare`` draws random numbers.
    """

    name: ClassVar[str] = "base"
    metric_names: ClassVar[tuple[str, ...]] = ("acc",)
    uses_logits: ClassVar[bool] = True
    randomized: ClassVar[bool] = False
    #: The modalities the algorithm reads (the cross-modal ones: ``(PAIRED,)``).
    modalities: ClassVar[tuple[str, ...]] = MODALITIES

    def __init__(self, modality: str) -> None:
        if modality not in self.modalities:
            raise ValueError(
                f"{self.name}: modality must be one of {list(self.modalities)}, got {modality!r}"
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
    @property
    def takes_ink_levels(self) -> bool:
        """Whether :meth:`prepare` also takes a raster batch of uint8 ink levels (module
        docstring) and makes from it exactly the views of the float batch ``level / 255``.
        The trainer then has the loader send uint8 (``train.uint8_rasters``). Default: no."""
        return False

    def num_outputs(self, num_classes: int) -> int:
        """Width of the encoder's classification head."""
        raise NotImplementedError

    def views(self, x: Tensor, y: Tensor | None) -> tuple[Tensor, Tensor]:
        """Map a loader batch to (model inputs, int64 targets) on ``x.device``."""
        raise NotImplementedError

    def loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        """Mean cross-entropy of logits (N, K) against targets (N,)."""
        return cross_entropy(logits, targets)

    def prepare(self, x: Tensor, y: Tensor | None, draws: Draws | None = None) -> Any:
        """What ``forward`` needs from a loader batch, computed without gradients: pretext
        views and their targets, or randomly augmented views drawn from ``draws``.
        Default: ``views(x, y)``."""
        return self.views(x, y)

    def build_networks(self, encoder: nn.Module, feature: str, sample: Tensor) -> Networks:
        """The container this algorithm trains: ``encoder`` plus the algorithm's own modules.

        Args:
            encoder: the model, already on its device.
            feature: the encoder feature the loss reads (``out_feat_keys``) when it does not
                read the logits.
            sample: a small input batch of the encoder's shape, for sizing heads.
        """
        return Networks(self, encoder)

    def forward(self, nets: Networks, views: Any) -> StepOutput:
        """Loss and metrics of one batch of prepared views.

        Default: classification of ``views = (inputs, targets)`` by the encoder's logits,
        mean cross-entropy, accuracy as the metric, ``count`` = the number of inputs.
        """
        inputs, targets = views
        logits = nets.encoder(inputs)
        loss = self.loss(logits.float(), targets)
        return StepOutput(loss, len(targets), {"acc": accuracy(logits.detach(), targets)})

    def after_step(self, nets: Networks, step: int, total_steps: int) -> None:
        """Called after each optimiser step (``step`` optimiser steps were done before this
        one, of ``total_steps`` in the run): the place for updates outside the optimiser."""

    def batch_warning(self, global_batch: int) -> str | None:
        """One line when ``global_batch`` sketches a step are known to train this method
        badly (the trainer prints it as a warning before training), else None. Default: None."""
        return None

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
