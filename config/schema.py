"""Typed experiment configuration.

A config module (``config/<name>.py``) defines ``CONFIG``, a plain nested dict. ``from_dict``
turns it into an :class:`ExperimentConfig` and refuses, with one line, anything it does not
understand: an unknown key, a value of the wrong type, an unknown choice. Checks that need
other packages (does the head match the pretext task? does the model name exist?) are made
by ``engine.build`` before training starts, because ``config`` is a leaf package.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Optional, Union


class ConfigError(ValueError):
    """A configuration that cannot be run. The message is one line meant for the user."""


#: The input each entry point trains on: rasters (CNN), stroke tensors (TCN), or both forms
#: of every sketch (a dual model holding a CNN and a TCN, trained together).
MODALITY_OF_BRANCH = {"cnn": "raster", "tcn": "stroke", "dual": "paired"}


@dataclass
class DataConfig:
    """Where sketches come from and how they are turned into network inputs."""

    source: str = "synthetic"  # "synthetic" (built-in generator) or "store" (prepared Quick, Draw!)
    path: Optional[str] = None  # directory of a prepared store (source == "store")
    modality: str = "raster"  # "raster" (CNN), "stroke" (TCN) or "paired" (both, a dual model)
    image_size: int = 224  # raster side in pixels (paper: 224)
    line_width: float = 3.0  # pen width in 256-box units, scaled with image_size
    max_points: int = 100  # stroke tensor rows (paper: 100)
    center: bool = True  # centre drawings in the box (removes the top-left alignment shortcut)
    # Raster (and paired) training batches read from a store's rasters drawn once (cached beside the
    # store, image_size**2 bytes a sketch: 50 kB at 224 px, 192 GB for the paper's 3.8 M sketches;
    # never built without the disk space) instead of drawn every epoch. Same pixels. Store only.
    # None (default): only a cache of at most 2 GB; True: any size; False: never.
    raster_cache: Optional[bool] = None
    num_classes: int = 12  # synthetic classes used (a store defines its own)
    train_per_class: int = 200  # pretext training sketches per class (synthetic)
    val_per_class: int = 20  # pretext validation sketches per class (synthetic)
    query_per_class: int = 10  # retrieval queries per class (synthetic)
    gallery_per_class: int = 50  # retrieval gallery per class (synthetic)
    seed: int = 0  # synthetic generator seed (independent of the training seed)

    def check(self) -> None:
        _choice("data.source", self.source, ("synthetic", "store"))
        _choice("data.modality", self.modality, MODALITY_OF_BRANCH.values())
        if self.source == "store" and not self.path:
            raise ConfigError("data.source is 'store' but data.path is not set (pass --data DIR)")
        _positive("data.image_size", self.image_size)
        _positive("data.max_points", self.max_points)
        _positive("data.line_width", self.line_width)
        _positive("data.num_classes", self.num_classes)
        for name in ("train_per_class", "val_per_class", "query_per_class", "gallery_per_class"):
            _positive(f"data.{name}", getattr(self, name))


@dataclass
class ModelConfig:
    name: str = "alexnet"  # a key of models.MODELS
    # Size of the output head. None: sized from the task (4 rotation, 2 deformation, the
    # number of data classes for supervised); an explicit value must match the task.
    num_classes: Optional[int] = None
    params: dict = field(default_factory=dict)  # constructor keyword arguments

    def check(self) -> None:
        if self.num_classes is not None:
            _positive("model.num_classes", self.num_classes)


@dataclass
class AlgorithmConfig:
    name: str = "rotation"  # a key of algorithms.ALGORITHMS
    params: dict = field(default_factory=dict)


@dataclass
class OptimConfig:
    name: str = "sgd"  # "sgd" or "adam"
    # Learning rate by epoch as [[first_epoch, lr], ...] (epochs count from 1). This is the
    # value in effect: the released configs carried an initial lr that the schedule
    # overwrote before the first step, so we keep only the schedule.
    lr_schedule: list = field(default_factory=lambda: [[1, 0.01]])
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    betas: list = field(default_factory=lambda: [0.9, 0.999])

    def check(self) -> None:
        _choice("optim.name", self.name, ("sgd", "adam"))
        sched = self.lr_schedule
        if not sched or not all(isinstance(s, (list, tuple)) and len(s) == 2 for s in sched):
            raise ConfigError("optim.lr_schedule must be a non-empty list of [first_epoch, lr] pairs")
        epochs = [s[0] for s in sched]
        if epochs[0] != 1 or any(not isinstance(e, int) for e in epochs) or epochs != sorted(set(epochs)):
            raise ConfigError(
                f"optim.lr_schedule epochs must be integers starting at 1 and increasing, got {epochs}"
            )
        if any(not isinstance(s[1], (int, float)) or s[1] <= 0 for s in sched):
            raise ConfigError("optim.lr_schedule learning rates must be positive numbers")
        if self.nesterov and self.name == "sgd" and self.momentum <= 0:
            raise ConfigError("optim.nesterov needs optim.momentum > 0")


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 256  # sketches per step; a pretext task turns them into more inputs
    workers: int = 0  # DataLoader worker processes
    seed: int = 0
    device: str = "auto"  # "auto" (CUDA when available), "cpu", "cuda", "cuda:N"
    out: str = "experiments"  # runs go to <out>/<experiment name>/
    max_steps_per_epoch: Optional[int] = None  # cap for quick runs and tests
    log_every: int = 10  # TensorBoard scalar interval, in steps
    # CPU threads of each training process (torch.set_num_threads). None: torch's default,
    # the machine's cores, so float results then depend on the core count (the summed order
    # of a matrix product follows the threads); a fixed count removes that dependence on the
    # CPU's size (not on its kernels: docs/REPRODUCTION.md, "What varies").
    threads: Optional[int] = None
    # Speed switches. None of them changes what is computed beyond float rounding.
    views: str = "batched"  # "batched" tensor ops on the device, or the "per_sample" reference
    # Rasters cross the loader as uint8 ink levels, turned into float32 inside the batched
    # views, for the algorithms that take them (rotation, deformation): the same views bit
    # for bit, a quarter of the bytes to collate, pin and copy to the device.
    uint8_rasters: bool = True
    amp: str = "none"  # "bf16": bfloat16 autocast on CUDA (ignored on the CPU)
    channels_last: bool = False  # channels-last memory format for raster models on CUDA
    compile: bool = False  # torch.compile the model
    pin_memory: bool = True  # pinned host memory for batches (CUDA only)
    prefetch_factor: Optional[int] = None  # batches each worker loads ahead (workers > 0)
    persistent_workers: bool = False  # keep loader workers alive across epochs (workers > 0)
    cudnn_benchmark: bool = True  # let cuDNN time and pick its fastest convolutions (CUDA only)
    # bf16 autocast (+ channels_last for raster models) on the CPU: 1.4-2.8x faster steps on
    # CPUs with AMX or AVX512-BF16 (bench/RESULTS.md), slower on others; bf16 rounding.
    cpu_bf16: bool = False
    # glibc: keep freed host memory for the next step instead of unmapping it (1.1-1.4x
    # faster CNN steps on the CPU, utils/host_memory.py); the process holds its peak memory.
    keep_host_memory: bool = True
    # The validation metric that picks best.pt: "val_loss" or "val_<name>" for a metric the
    # algorithm reports (pretext tasks and supervised: "val_acc"; simclr: "val_top1"; byol:
    # "val_cos"; vicreg: "val_inv", "val_var", "val_cov"; stroke autoencoder: "val_pen_acc"), and
    # whether higher ("max") or lower ("min") is better. engine.build checks the algorithm
    # reports it.
    best_metric: str = "val_acc"
    best_mode: str = "max"

    def check(self) -> None:
        _positive("train.epochs", self.epochs)
        _positive("train.batch_size", self.batch_size)
        if self.workers < 0:
            raise ConfigError(f"train.workers must be >= 0, got {self.workers}")
        if self.max_steps_per_epoch is not None:
            _positive("train.max_steps_per_epoch", self.max_steps_per_epoch)
        _positive("train.log_every", self.log_every)
        if self.threads is not None:
            _positive("train.threads", self.threads)
        _choice("train.views", self.views, ("batched", "per_sample"))
        _choice("train.amp", self.amp, ("none", "bf16"))
        if self.prefetch_factor is not None:
            _positive("train.prefetch_factor", self.prefetch_factor)
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ConfigError(f"train.device must be auto, cpu, cuda or cuda:N, got '{self.device}'")
        _choice("train.best_mode", self.best_mode, ("max", "min"))
        if not self.best_metric.startswith("val_") or self.best_metric == "val_":
            raise ConfigError(f"train.best_metric must name a validation metric (val_loss, val_acc, ...), "
                              f"got '{self.best_metric}'")


@dataclass
class EvalConfig:
    feature: Optional[str] = None  # layer read out for retrieval; None: the model's default
    metric: str = "cosine"  # "cosine" or "euclidean"
    topk: list = field(default_factory=lambda: [1, 10, 100])
    batch_size: int = 256

    def check(self) -> None:
        _choice("eval.metric", self.metric, ("cosine", "euclidean"))
        if not self.topk or any(not isinstance(k, int) or k < 1 for k in self.topk):
            raise ConfigError(f"eval.topk must be a list of positive integers, got {self.topk}")
        _positive("eval.batch_size", self.batch_size)


@dataclass
class ExperimentConfig:
    name: str
    branch: str  # "cnn", "tcn" or "dual": which entry point runs it (train_<branch>.py)
    description: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def check(self) -> None:
        _choice("branch", self.branch, tuple(MODALITY_OF_BRANCH))
        want = MODALITY_OF_BRANCH[self.branch]
        if self.data.modality != want:
            raise ConfigError(
                f"experiment '{self.name}' is a {self.branch.upper()} experiment but "
                f"data.modality is '{self.data.modality}' (expected '{want}')"
            )
        for section in (self.data, self.model, self.optim, self.train, self.eval):
            section.check()

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def from_dict(raw: dict, where: str = "config") -> ExperimentConfig:
    """Build and check an :class:`ExperimentConfig` from a nested dict (strict)."""
    cfg = _build(ExperimentConfig, raw, where)
    cfg.check()
    return cfg


def _build(cls: type, raw: Any, where: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - fields)
    if unknown:
        raise ConfigError(f"{where}: unknown key '{unknown[0]}' (known: {', '.join(sorted(fields))})")
    kwargs = {}
    for name, value in raw.items():
        hint = hints[name]
        path = f"{where}.{name}" if where != "config" else name
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, value, path)
        else:
            kwargs[name] = _coerce(value, hint, path)
    try:
        return cls(**kwargs)
    except TypeError as err:  # a required field is missing
        raise ConfigError(f"{where}: {err}") from None


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Check ``value`` against a simple type hint; ints are accepted where floats are."""
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], where)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is int and isinstance(value, bool):
        raise ConfigError(f"{where}: expected int, got bool {value!r}")
    base = origin or hint
    if base in (list, tuple) and isinstance(value, tuple):
        value = list(value)
    if not isinstance(value, base):
        raise ConfigError(f"{where}: expected {base.__name__}, got {type(value).__name__} {value!r}")
    return value


def _choice(where: str, value: str, choices) -> None:
    choices = tuple(choices)
    if value not in choices:
        raise ConfigError(f"{where} must be one of {', '.join(choices)}; got '{value}'")


def _positive(where: str, value: float) -> None:
    if value <= 0:
        raise ConfigError(f"{where} must be positive, got {value}")
