"""The one trainer behind ``train_cnn.py``, ``train_tcn.py`` and ``train_dual.py``.

Per epoch: set the learning rate from the config's table, run the algorithm over the
training split (progress bar with the loss and the algorithm's own metrics, TensorBoard
scalars), measure the validation loss and metrics without gradients, then save ``last.pt``
and, when the validation metric named by ``train.best_metric`` improved strictly
(``train.best_mode``: higher or lower; pretext accuracy by default), ``best.pt``.
``experiments/NAME/`` holds the resolved config, both checkpoints, ``metrics.jsonl`` and
the TensorBoard events.

One step, the same for every algorithm (:meth:`Trainer.train_step`, which the benchmarks
call too): the loader batch goes to the device, ``algorithm.prepare`` makes its views
(pretext views, or random augmentations drawn from the run's seeded generator), the
:class:`algorithms.Networks` container (encoder + the algorithm's heads + its target)
computes the loss and metrics under the configured autocast, then backward, the optimiser
step over the encoder and the heads, and ``algorithm.after_step`` (e.g. BYOL's EMA target).
A checkpoint keeps the encoder in ``state["model"]`` (what evaluation reads) and the heads
and target in ``state["algorithm"]``.

Trustworthy runs:

- Exact resume. The data order of an epoch depends only on ``(seed, epoch)``
  (:class:`utils.sampler.EpochSampler`); a checkpoint holds the model, the algorithm's heads
  and target, the optimiser, every RNG (the augmentations' generator included), the epoch
  *and the step inside it*, and the epoch's running sums. So N epochs straight and k epochs
  (or k epochs and s steps), stop, ``--resume`` give the same weights bit for bit on the CPU.
- SIGTERM / SIGINT (preemption, Ctrl-C) save ``last.pt`` at the current step and end with
  :class:`utils.signals.TrainingStopped` (exit 143 / 130 from the command line).
- A non-finite loss stops with the epoch and step; no checkpoint is written after it, so
  ``last.pt`` stays the last good one.
- ``best.pt`` is always the checkpoint of the best epoch that ``last.pt`` records
  (``best_epoch``): when an epoch improves, ``best.pt`` is written *before* ``last.pt``, so a
  kill between the two leaves ``best.pt`` one epoch ahead, never behind; ``--resume`` then
  continues from ``best.pt`` and completes the interrupted save of ``last.pt``.
- One run per folder: a run holds ``<out>/.lock`` (:mod:`utils.run_lock`), so a second run
  on the same folder is refused, and the temporaries a killed run left are removed safely
  before anything else happens.
- A write that fails (a full disk) ends the run with one line naming the file
  (:class:`utils.atomic.WriteError`); everything written before stays readable.
- Under torchrun (``engine.distributed``) the networks container (encoder and heads) is
  wrapped in DistributedDataParallel; each of the W processes loads ``batch_size / W``
  sketches per step, so the global batch is the config's; augmentations are drawn for the
  global batch (each process keeps its rows), so they are those of one process; SimCLR's
  and the cross-modal InfoNCE's negatives are gathered from every process
  (``distributed.gather_with_grad``); only rank 0 writes files or prints.
- A dual run (``data.modality = "paired"``, ``train_dual.py``) is the same loop: its loader
  batches are ``(SketchPair(raster, strokes), y)`` (moved to the device field by field), its
  encoder a ``models.DualEncoder``, so ``state["model"]`` holds both branches.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from tqdm import tqdm

from algorithms import Draws, StepOutput
from algorithms.reference import reference_views
from config import ConfigError, ExperimentConfig
from engine import build, distributed
from data.datasets import collate_samples
from data.store import StoreError, read_meta
from utils.atomic import atomic_write, atomic_write_text
from utils.checkpoint import (
    CheckpointError,
    checkpoint_progress,
    load_checkpoint,
    remove_stale_temporaries,
    save_checkpoint,
)
from utils.host_memory import keep_freed_memory
from utils.logger import RunLogger
from utils.meters import AverageMeter
from utils.rng import rng_state, seed_everything, set_rng_state
from utils.run_lock import RunLock
from utils.sampler import EpochSampler, SamplerSlot, epoch_generator
from utils.schedule import lr_at
from utils.signals import StopSignals, TrainingStopped

# 2: adds "step" (steps done in the epoch after "epoch"), "meters" and "world_size";
#    "best_epoch" (the epoch best.pt holds; absent in older files) needs no version bump.
# 3: "algorithm" holds {"settings", "heads", "target"} (was the settings alone); "best_value",
#    "best_metric", "best_mode" replace "best_acc"; rng["draws"] is the augmentations'
#    generator; meters hold "<metric>_total" for each of the algorithm's metrics.
CHECKPOINT_VERSION = 3
#: Files of a run folder whose leftover temporaries a starting run removes.
RUN_FILES = ("last.pt", "best.pt", "config.json", "metrics.jsonl")
# Settings a resumed run must share with its checkpoint (other architecture, other task).
RESUME_MUST_MATCH = (
    ("model", "name"),
    ("model", "params"),
    ("algorithm", "name"),
    ("algorithm", "params"),
    ("data", "modality"),
    ("train", "best_metric"),
    ("train", "best_mode"),
)
# What a config saved before a setting existed meant by it.
SETTING_DEFAULTS = {("train", "best_metric"): "val_acc", ("train", "best_mode"): "max"}
TRAINING_KEYS = ("optimizer", "rng", "num_outputs")
# Offset of the augmentations' generator seed from train.seed (any fixed number; the
# validation generator uses another, so the two never share a stream).
TRAIN_DRAWS_SEED, VAL_DRAWS_SEED = 1_000_003, 2_000_003


def experiment_dir(cfg: ExperimentConfig) -> Path:
    return Path(cfg.train.out) / cfg.name


def make_optimizer(cfg: ExperimentConfig, params) -> torch.optim.Optimizer:
    o = cfg.optim
    lr = lr_at(o.lr_schedule, 1)
    if o.name == "sgd":
        return torch.optim.SGD(
            params, lr=lr, momentum=o.momentum, nesterov=o.nesterov, weight_decay=o.weight_decay
        )
    return torch.optim.Adam(params, lr=lr, betas=tuple(o.betas), weight_decay=o.weight_decay)


def check_data_path(cfg: ExperimentConfig) -> None:
    """A prepared store must be a readable folder; say so in one line before building anything."""
    if cfg.data.source != "store":
        return
    path = Path(cfg.data.path)
    if not path.exists():
        raise ConfigError(f"data path {path} does not exist")
    if not path.is_dir():
        raise ConfigError(f"data path {path} is not a folder (expected a prepared Quick, Draw! store)")
    if not os.access(path, os.R_OK | os.X_OK):
        raise ConfigError(f"data path {path} is not readable (permission denied)")
    try:
        read_meta(path)
    except StoreError as err:
        raise ConfigError(str(err)) from None


def _meters(names: tuple[str, ...], totals: dict | None = None) -> dict[str, AverageMeter]:
    """One meter per name ("loss" and the algorithm's metrics), from saved sums if given."""
    meters = {name: AverageMeter() for name in names}
    if totals:
        for name, meter in meters.items():
            meter.total, meter.count = float(totals[f"{name}_total"]), int(totals["count"])
    return meters


def cpu_has_bf16() -> bool:
    """Whether this CPU does bfloat16 matrix maths in hardware (AMX tiles or AVX512-BF16)."""
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")  # private: missing means no
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def _same_sequence(like: tuple | list, items: list) -> tuple | list:
    """``items`` in a sequence of ``like``'s type: a named tuple (``data.SketchPair``) is
    rebuilt field by field, a plain tuple or list from the items."""
    if isinstance(like, tuple) and hasattr(like, "_fields"):
        return type(like)(*items)
    return type(like)(items)


class NonFiniteLoss(FloatingPointError):
    """A step's loss was not finite (on this process or another); nothing was updated."""


class Trainer:
    """Trains one experiment. ``fit()`` runs the remaining epochs and returns the history.

    The step is public, so that benchmarks and tests drive exactly what training drives:
    :meth:`train_step` (one loader batch -> one optimiser step) = :meth:`prepare_batch`
    (device, views / augmentations, memory format) + :meth:`optimise` (forward under
    autocast, non-finite check, backward, optimiser step, the algorithm's post-step
    update); :meth:`evaluation_step` is the validation counterpart; :meth:`train_loader`
    and :meth:`train_epoch` (whose ``wrap_loader`` lets a benchmark time the loader) are
    the epoch around it.

    Attributes (after construction): ``algorithm``; ``model`` (the encoder, whose
    ``state_dict`` is a checkpoint's ``"model"``); ``networks`` (the
    :class:`algorithms.Networks` container of the encoder and the algorithm's heads and
    target); ``net`` (what the forward pass goes through: ``networks``, wrapped in DDP
    and/or ``torch.compile`` when asked); ``optimizer``; ``train_set`` / ``val_set``;
    ``steps_per_epoch``; ``steps_done`` (optimiser steps of the run so far).
    """

    def __init__(self, cfg: ExperimentConfig, resume: bool = False, progress: bool = True) -> None:
        self.cfg = cfg
        self.out_dir = experiment_dir(cfg)
        self.dist, self.device = distributed.setup(cfg.train.device)
        if cfg.train.threads is not None:
            torch.set_num_threads(cfg.train.threads)  # the process's intra-op threads, from here on
        self.is_main = self.dist.is_main
        self.progress = progress and self.is_main
        if cfg.train.batch_size % self.dist.world_size:
            raise ConfigError(
                f"train.batch_size {cfg.train.batch_size} is the global batch and must be divisible "
                f"by the {self.dist.world_size} torchrun processes"
            )
        # The data first: a wrong --data must not hide behind "last.pt already exists".
        check_data_path(cfg)
        self._lock = RunLock(self.out_dir)
        if self.is_main and self.out_dir.is_dir():
            # Nobody else writes here once we hold the lock, so a killed run's temporaries
            # can go now, before a refusal below could leave them behind.
            self._lock.acquire()
            for name in RUN_FILES:
                remove_stale_temporaries(self.out_dir / name)
        try:
            self._build(resume)
        except BaseException:
            self._lock.release()  # a refused run leaves the folder to the next one at once
            raise

    def _build(self, resume: bool) -> None:
        """Everything after the folder checks: checkpoints, model, data, optimiser, switches."""
        cfg = self.cfg
        self._complete_save: Path | None = None  # best.pt to copy to last.pt (an interrupted save)
        resume_from = self._resume_source() if resume else None
        if not resume:
            existing = [n for n in ("last.pt", "best.pt") if (self.out_dir / n).exists()]
            if existing:
                # Starting over would overwrite that run's checkpoints after one epoch.
                raise ConfigError(
                    f"{self.out_dir / existing[0]} already exists: add --resume to continue that run, "
                    f"or remove {self.out_dir} (or choose another --out) to start over"
                )
        seed_everything(cfg.train.seed)
        # Before the model and the loaders' workers exist, so both live under the setting.
        self.host_memory_kept = cfg.train.keep_host_memory and keep_freed_memory()

        self.algorithm = build.build_algorithm(cfg)
        self.metric_names: tuple[str, ...] = tuple(self.algorithm.metric_names)
        advice = self.algorithm.batch_warning(cfg.train.batch_size)
        if advice and self.is_main:
            print(f"warning: {advice}", file=sys.stderr)
        self.num_outputs = build.head_size(cfg, self.algorithm)
        self.model = build.build_model(cfg, self.num_outputs).to(self.device)
        # The encoder plus the algorithm's own modules (none for the pretext tasks, whose
        # parameters, optimiser and random numbers are then exactly the model's).
        self.networks = build.build_networks(cfg, self.algorithm, self.model).to(self.device)
        if self.dist.enabled and self.device.type == "cuda":
            # Batch statistics over the global batch, as on one GPU. torch's SyncBatchNorm
            # runs on GPUs only; on the CPU (gloo) each process normalises its own sub-batch.
            self.networks = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.networks)
            self.model = self.networks.encoder
        if self.dist.enabled:
            self.networks.gather = distributed.gather_with_grad
        self.optimizer = make_optimizer(cfg, self.networks.trainable_parameters())
        # The augmentations' random numbers: a generator of their own on the training
        # device, checkpointed with the other RNGs (the pretext tasks never draw from it).
        self.draw_generator = torch.Generator(device=self.device)
        self.draw_generator.manual_seed(cfg.train.seed + TRAIN_DRAWS_SEED)
        self.train_set = build.build_dataset(cfg, "train", cfg.data.raster_cache)
        self.val_set = build.build_dataset(cfg, "val", cfg.data.raster_cache)
        for split, dataset in (("train", self.train_set), ("val", self.val_set)):
            if len(dataset) == 0:
                raise ConfigError(f"experiment '{cfg.name}': split '{split}' is empty")
            # uint8 rasters to views that take them (train.uint8_rasters): the same views.
            if (cfg.train.uint8_rasters and cfg.train.views == "batched" and self.algorithm.takes_ink_levels
                    and hasattr(dataset, "ink_levels")):
                dataset.ink_levels = True
        self.steps_per_epoch = self._steps_in_epoch()
        self.steps_done = 0  # optimiser steps of the run so far (set per epoch by train_epoch)

        self.start_epoch = 1  # first epoch still to run
        self.start_step = 0  # steps of start_epoch already done (a mid-epoch checkpoint)
        self._start_meters: dict | None = None
        self.resumed = False
        self.best_metric, self.best_mode = cfg.train.best_metric, cfg.train.best_mode
        self.best_value = -math.inf if self.best_mode == "max" else math.inf
        self.best_epoch: int | None = None
        self.history: list[dict] = []
        if resume_from is not None:
            self._resume(resume_from)

        t = cfg.train
        on_cuda = self.device.type == "cuda"
        if on_cuda:
            # Fixed input sizes (drop_last), so cuDNN's one-off timing pays back at once.
            torch.backends.cudnn.benchmark = t.cudnn_benchmark
        # With persistent workers the loaders are built once and kept (see train_loader).
        self._persistent = t.persistent_workers and t.workers > 0
        self._kept_train_loader: tuple[torch.utils.data.DataLoader, SamplerSlot] | None = None
        self._kept_val_loader: torch.utils.data.DataLoader | None = None
        # Per-sample reference views exist to show the batched path changes no number.
        if t.views == "per_sample":
            self._prepare = lambda x, y, draws: reference_views(self.algorithm, x, y)
        else:
            self._prepare = self.algorithm.prepare
        cpu_bf16 = self.device.type == "cpu" and t.cpu_bf16
        if cpu_bf16 and self.is_main and not cpu_has_bf16():
            print("warning: train.cpu_bf16 on a CPU without AMX or AVX512-BF16: bfloat16 is emulated "
                  "there and usually slower than float32", file=sys.stderr)
        self._autocast = partial(torch.autocast, device_type=self.device.type, dtype=torch.bfloat16,
                                 enabled=(on_cuda and t.amp == "bf16") or cpu_bf16)
        # Raster models only (a dual model's raster branch; _memory_format skips stroke batches).
        self._channels_last = ((on_cuda and t.channels_last) or cpu_bf16) and cfg.data.modality in ("raster", "paired")
        if self._channels_last:
            self.networks = self.networks.to(memory_format=torch.channels_last)
        if t.compile:
            # The encoder's forward is compiled (the algorithm's loss and metrics, with their
            # .item() calls, stay eager); checkpoints keep self.model's plain keys, and the
            # compiled wrapper shares its parameters (optimiser, BYOL's EMA pairs unchanged).
            self.networks.encoder = torch.compile(self.model)
        self.net: torch.nn.Module = self.networks
        if self.dist.enabled:
            self.net = torch.nn.parallel.DistributedDataParallel(
                self.networks, device_ids=[self.device.index] if on_cuda else None
            )

    def _steps_in_epoch(self) -> int:
        """Global optimiser steps per epoch (the same for every epoch)."""
        t = self.cfg.train
        # The count does not depend on the order (shuffle=False skips drawing a permutation).
        full = EpochSampler(len(self.train_set), t.batch_size, seed=t.seed, epoch=1, shuffle=False, drop_last=True,
                            rank=self.dist.rank, world_size=self.dist.world_size).num_steps
        return min(full, t.max_steps_per_epoch) if t.max_steps_per_epoch else full

    @property
    def total_steps(self) -> int:
        """Optimiser steps of the whole run (``train.epochs`` x steps per epoch)."""
        return self.cfg.train.epochs * self.steps_per_epoch

    # ------------------------------------------------------------------ checkpoints
    def _state(self, epoch: int, step: int = 0, meters: dict | None = None) -> dict:
        """Everything needed to continue. ``epoch``: epochs completed; ``step``: steps of
        epoch ``epoch + 1`` completed (0 at an epoch boundary); ``meters``: that epoch's
        running sums over all processes."""
        return {
            "version": CHECKPOINT_VERSION,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "epoch": epoch,
            "step": step,
            "meters": meters,
            "best_metric": self.best_metric,
            "best_mode": self.best_mode,
            "best_value": self.best_value,
            "best_epoch": self.best_epoch,
            "history": self.history,
            "rng": {**rng_state(), "draws": self.draw_generator.get_state()},
            "config": self.cfg.to_dict(),
            "algorithm": {"settings": self.algorithm.describe(), **self.networks.method_state_dict()},
            "num_outputs": self.num_outputs,
            "world_size": self.dist.world_size,
        }

    def _resume_source(self) -> Path:
        """The checkpoint ``--resume`` continues from: ``last.pt``, unless ``best.pt`` is
        further along (a run killed after writing ``best.pt`` and before ``last.pt``: see
        :meth:`_save`), in which case ``best.pt`` holds the newest state."""
        last, best = self.out_dir / "last.pt", self.out_dir / "best.pt"
        if not last.exists() and not best.exists():
            raise CheckpointError(f"{last}: --resume was given but there is no checkpoint to resume from")
        if not best.exists():
            return last
        if not last.exists() or checkpoint_progress(best) > checkpoint_progress(last):
            self._complete_save = best
            return best
        return last

    def _resume(self, path: Path) -> None:
        # CPU first: RNG states must stay CPU tensors; load_state_dict moves weights over.
        state = load_checkpoint(path, map_location="cpu")
        missing = [k for k in TRAINING_KEYS if k not in state]
        if "best_value" not in state and "best_acc" not in state:  # best_acc: format 2
            missing.append("best_value")
        if missing:
            raise CheckpointError(f"{path}: not a training checkpoint (missing {', '.join(missing)})")
        if int(state.get("version", 1)) > CHECKPOINT_VERSION:
            raise CheckpointError(
                f"{path}: written by a newer version of this code (format {state['version']}, "
                f"this code reads up to {CHECKPOINT_VERSION})"
            )
        saved = state["config"]
        for section, key in RESUME_MUST_MATCH:
            old = saved.get(section, {}).get(key, SETTING_DEFAULTS.get((section, key)))
            new = getattr(getattr(self.cfg, section), key)
            if old != new:
                raise CheckpointError(f"{path}: was trained with {section}.{key} {old!r}, this run asks for {new!r}")
        if state["num_outputs"] != self.num_outputs:
            raise CheckpointError(
                f"{path}: head has {state['num_outputs']} outputs, this run needs {self.num_outputs}"
            )
        step = int(state.get("step", 0))
        old_batch = saved.get("train", {}).get("batch_size")
        if step and old_batch != self.cfg.train.batch_size:
            raise CheckpointError(
                f"{path}: stopped in the middle of an epoch with train.batch_size {old_batch}; "
                f"resume with the same batch size (this run asks for {self.cfg.train.batch_size})"
            )
        method_state = state.get("algorithm") or {}
        if "heads" not in method_state:  # format 2: the algorithm's settings alone, no modules
            method_state = {"heads": {}, "target": None}
        try:
            self.model.load_state_dict(state["model"])
            self.networks.load_method_state_dict(method_state)
            self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as err:
            raise CheckpointError(f"{path}: does not fit this model ({str(err).splitlines()[0]})") from None
        self.start_epoch = int(state["epoch"]) + 1
        self.start_step = step
        # Rank 0 carries the interrupted epoch's sums; the epoch's end adds the ranks up.
        self._start_meters = state.get("meters") if self.is_main else None
        self.best_value = float(state["best_value"] if "best_value" in state else state["best_acc"])
        self.history = list(state.get("history", []))
        self.best_epoch = state.get("best_epoch")
        if self.best_epoch is None and self.history:  # a checkpoint from before best_epoch was kept
            pick = max if self.best_mode == "max" else min
            self.best_epoch = pick(self.history, key=lambda r: r[self.best_metric])["epoch"]
        if path.name == "best.pt" and self.is_main:
            print(f"[{self.cfg.name}] {path} is newer than last.pt (a run stopped while saving): "
                  f"resuming from it", file=sys.stderr)
        # Every process draws the same random numbers (same seed, same calls), so rank 0's
        # state is every rank's state.
        set_rng_state(state["rng"])
        if "draws" in state["rng"]:
            try:
                self.draw_generator.set_state(state["rng"]["draws"])
            except RuntimeError:
                raise CheckpointError(f"{path}: its augmentation generator state is from another device type "
                                      f"(this run trains on {self.device.type})") from None
        self.resumed = True

    def _save(self, state: dict, best: bool = False) -> None:
        """Write ``last.pt`` and, when the epoch improved, ``best.pt`` first: killed between
        the two, the pair is best.pt one epoch ahead of last.pt, which ``--resume`` detects
        and completes (never best.pt one improvement behind what last.pt records)."""
        if self.is_main:
            if best:
                save_checkpoint(state, self.out_dir / "best.pt")
            save_checkpoint(state, self.out_dir / "last.pt")

    # ------------------------------------------------------------------ data
    def train_loader(self, epoch: int, start_step: int = 0) -> tuple[torch.utils.data.DataLoader, int]:
        """This process's loader for epoch ``epoch`` from global step ``start_step`` on, and
        the number of global steps in the epoch (``train.max_steps_per_epoch`` applied)."""
        t = self.cfg.train
        sampler = EpochSampler(
            len(self.train_set),
            t.batch_size,
            seed=t.seed,
            epoch=epoch,
            # A 1-sample training batch would break batch norm in the supervised task.
            drop_last=True,
            rank=self.dist.rank,
            world_size=self.dist.world_size,
            start_step=start_step,
        )
        cap = t.max_steps_per_epoch
        steps = min(sampler.num_steps, cap) if cap else sampler.num_steps
        if self._kept_train_loader is not None:
            loader, slot = self._kept_train_loader
            slot.sampler = sampler  # the kept workers read this epoch's order
            return loader, steps
        slot = SamplerSlot(sampler)
        loader = torch.utils.data.DataLoader(
            self.train_set,
            batch_size=sampler.local_batch,
            sampler=slot,
            collate_fn=collate_samples,  # a batch the dataset built at once is not re-stacked
            num_workers=t.workers,
            pin_memory=self.device.type == "cuda" and t.pin_memory,
            prefetch_factor=t.prefetch_factor if t.workers > 0 else None,
            persistent_workers=self._persistent,
            # Worker seeds come from this generator, not the global RNG, so building a loader
            # (at an epoch start or on resume) does not shift anyone's random numbers. (Kept
            # workers keep their first seeds; the datasets draw no random numbers in workers.)
            generator=epoch_generator(t.seed, epoch),
        )
        if self._persistent:
            self._kept_train_loader = (loader, slot)
        return loader, steps

    def _val_loader(self) -> torch.utils.data.DataLoader:
        t = self.cfg.train
        dataset = self.val_set
        if self.dist.enabled:
            dataset = torch.utils.data.Subset(dataset, distributed.shard_indices(len(dataset)))
        if self._kept_val_loader is not None:
            return self._kept_val_loader
        loader = torch.utils.data.DataLoader(
            dataset,
            batch_size=t.batch_size,
            shuffle=False,
            collate_fn=collate_samples,
            num_workers=t.workers,
            pin_memory=self.device.type == "cuda" and t.pin_memory,
            persistent_workers=self._persistent,
            generator=torch.Generator().manual_seed(t.seed),
        )
        if self._persistent:
            self._kept_val_loader = loader
        return loader

    # ------------------------------------------------------------------ one step
    def _to_device(self, batch: Any) -> Any:
        """Every tensor of a loader batch on the training device; tuples, lists and dicts
        keep their shape (a paired batch ``((raster, strokes), y)`` moves like ``(x, y)``)."""
        if isinstance(batch, torch.Tensor):
            return batch.to(self.device, non_blocking=True)
        if isinstance(batch, (tuple, list)):
            return _same_sequence(batch, [self._to_device(b) for b in batch])
        if isinstance(batch, dict):
            return {k: self._to_device(v) for k, v in batch.items()}
        return batch

    def _memory_format(self, views: Any) -> Any:
        """Raster tensors (4-d) of the views channels-last when the run asks for it."""
        if not self._channels_last:
            return views
        if isinstance(views, torch.Tensor):
            return views.contiguous(memory_format=torch.channels_last) if views.dim() == 4 else views
        if isinstance(views, (tuple, list)):
            return _same_sequence(views, [self._memory_format(v) for v in views])
        if isinstance(views, dict):
            return {k: self._memory_format(v) for k, v in views.items()}
        return views

    def train_draws(self) -> Draws:
        """The random numbers of the next training batch's augmentations (the run's seeded,
        checkpointed generator; drawn for the global batch, this process's rows kept)."""
        return Draws(self.draw_generator, self.dist.rank, self.dist.world_size)

    def validation_draws(self) -> Draws:
        """A generator seeded the same way at every validation, so every epoch's validation
        sees the same augmentations (each process draws for its own share)."""
        generator = torch.Generator(device=self.device)
        generator.manual_seed(self.cfg.train.seed + VAL_DRAWS_SEED)
        return Draws(generator)

    def prepare_batch(self, batch, draws: Draws | None = None) -> Any:
        """A loader batch ``(x, y)`` -> the algorithm's views on the device: pretext views
        and targets, or random augmentations (from :meth:`train_draws` unless ``draws`` is
        given), channels-last when the run asks for it."""
        x, y = self._to_device(batch)[:2]
        return self._memory_format(self._prepare(x, y, draws if draws is not None else self.train_draws()))

    def forward(self, views: Any) -> StepOutput:
        """Loss and metrics of prepared views through :attr:`net` (DDP / compiled when
        asked), under the configured autocast."""
        with self._autocast():
            return self.net(views)

    def update(self, loss: torch.Tensor) -> None:
        """Backward, one optimiser step, then the algorithm's post-step update (e.g. an EMA
        target), which is told how many of the run's steps came before."""
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.algorithm.after_step(self.networks, self.steps_done, self.total_steps)
        self.steps_done += 1

    def optimise(self, views: Any, stop: StopSignals | None = None) -> tuple[StepOutput, bool]:
        """One optimisation step on prepared views: :meth:`forward`, the non-finite check,
        :meth:`update`. Returns the step's output and whether a stop was requested (on any
        process). One small collective per step, so that all processes raise or stop
        together. Raises :class:`NonFiniteLoss` (nothing updated) when the loss is not
        finite on this or another process."""
        out = self.forward(views)
        finite = bool(torch.isfinite(out.loss))
        bad, stopped = distributed.any_rank(not finite, stop is not None and stop.requested)
        if bad:
            raise NonFiniteLoss(f"loss {out.loss.item()}" if not finite else "loss on another process")
        self.update(out.loss)
        return out, stopped

    def train_step(self, batch, stop: StopSignals | None = None) -> tuple[StepOutput, bool]:
        """One optimisation step on one loader batch ``(x, y)``: :meth:`prepare_batch` then
        :meth:`optimise`. The networks must be in training mode (``trainer.networks.train()``;
        :meth:`train_epoch` does it)."""
        return self.optimise(self.prepare_batch(batch), stop)

    @torch.no_grad()
    def evaluation_step(self, batch, draws: Draws | None = None) -> StepOutput:
        """Loss and metrics of one loader batch without gradients, through the plain
        networks (not DDP); call ``trainer.networks.eval()`` first (:meth:`validate` does)."""
        views = self.prepare_batch(batch, draws if draws is not None else self.validation_draws())
        with self._autocast():
            return self.networks(views)

    # ------------------------------------------------------------------ loops
    def _global_meters(self, meters: dict[str, AverageMeter]) -> dict:
        """The epoch's running sums added over all processes."""
        names = list(meters)
        count = next(iter(meters.values())).count
        s = distributed.all_reduce_sum(torch.tensor([meters[n].total for n in names] + [float(count)],
                                                    dtype=torch.float64))
        out = {f"{n}_total": float(v) for n, v in zip(names, s[:-1])}
        out["count"] = int(round(float(s[-1])))
        return out

    def train_epoch(self, epoch: int, logger: RunLogger, stop: StopSignals | None = None,
                    wrap_loader: Callable[[Iterable], Iterable] | None = None) -> dict:
        """Train one epoch (from ``start_step`` when it is the resumed one). Returns ``loss``,
        the algorithm's metrics by name, ``lr``, ``steps`` (done this epoch), ``stopped`` (a
        stop was requested) and ``meters`` (running sums over all processes).
        ``wrap_loader`` wraps the epoch's loader (a benchmark timing each batch's wait)."""
        self.net.train()
        lr = lr_at(self.cfg.optim.lr_schedule, epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        first = self.start_step if epoch == self.start_epoch else 0
        names = ("loss",) + self.metric_names
        meters = _meters(names, self._start_meters if epoch == self.start_epoch else None)
        loader, steps = self.train_loader(epoch, first)
        if wrap_loader is not None:
            loader = wrap_loader(loader)
        self.steps_done = (epoch - 1) * steps + first
        bar = tqdm(total=steps, initial=min(first, steps), desc=f"epoch {epoch}/{self.cfg.train.epochs}",
                   disable=not self.progress, leave=False)
        step, stopped = first, False
        for batch in loader if first < steps else ():
            if step >= steps:
                break
            try:
                out, stopped = self.train_step(batch, stop)
            except NonFiniteLoss as err:
                raise FloatingPointError(
                    f"non-finite {err} at epoch {epoch}, step {step + 1}; "
                    f"the last good checkpoint is {self.out_dir / 'last.pt'}"
                ) from None
            step += 1
            loss = out.loss.item()
            meters["loss"].update(loss, out.count)
            for name in self.metric_names:
                meters[name].update(out.metrics[name], out.count)
            global_step = (epoch - 1) * steps + step
            if global_step % self.cfg.train.log_every == 0:
                logger.scalar("train/loss_step", loss, global_step)
            bar.set_postfix(loss=f"{meters['loss'].avg:.4f}",
                            **{n: f"{meters[n].avg:.3f}" for n in self.metric_names}, lr=f"{lr:g}")
            bar.update(1)
            if stopped:
                break
        bar.close()
        sums = self._global_meters(meters)
        totals = _meters(names, sums)
        return {**{n: totals[n].avg for n in names}, "lr": lr, "steps": step, "stopped": stopped, "meters": sums}

    @torch.no_grad()
    def validate(self, stop: StopSignals | None = None) -> dict | None:
        """Validation ``loss`` and the algorithm's metrics (e.g. ``acc``); each process takes
        a contiguous share of the split and the sums are added up. ``None`` when a stop was
        requested on the way."""
        self.networks.eval()
        distributed.broadcast_buffers(self.networks)  # everyone uses rank 0's BN statistics
        loader = self._val_loader()
        draws = self.validation_draws()
        # Shares differ by up to one sketch, so count rounds from the largest share: every
        # process then makes the same number of stop checks (collectives).
        rounds = math.ceil(math.ceil(len(self.val_set) / self.dist.world_size) / self.cfg.train.batch_size)
        batches = iter(loader)
        names = ("loss",) + self.metric_names
        sums = torch.zeros(len(names) + 1, dtype=torch.float64)  # value * n for each name, n
        for _ in range(rounds):
            if distributed.any_rank(stop is not None and stop.requested)[0]:
                return None
            batch = next(batches, None)
            if batch is None:
                continue
            out = self.evaluation_step(batch, draws)
            n = out.count
            values = [out.loss.item()] + [out.metrics[m] for m in self.metric_names]
            sums += torch.tensor([v * n for v in values] + [n], dtype=torch.float64)
        sums = distributed.all_reduce_sum(sums)
        count = float(sums[-1])
        if count == 0:
            return {name: float("nan") for name in names}
        return {name: float(v) / count for name, v in zip(names, sums[:-1])}

    def _stopped(self, stop: StopSignals, epoch: int, step: int, meters: dict | None) -> TrainingStopped:
        """Save ``last.pt`` at step ``step`` of epoch ``epoch`` (unless ``meters`` is None: the
        epoch is complete and already saved) and build the exception that ends the run."""
        if meters is not None:
            self._save(self._state(epoch - 1, step=step, meters=meters))
        distributed.barrier()  # nobody exits before rank 0 has written the checkpoint
        return TrainingStopped(
            f"[{self.cfg.name}] stopped at epoch {epoch} step {step}; resume with --resume",
            stop.signum or signal.SIGTERM,
        )

    def _prepare_out_dir(self) -> None:
        if not self.is_main:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if not self._lock.held:
            self._lock.acquire()
            for name in RUN_FILES:
                remove_stale_temporaries(self.out_dir / name)
        if self._complete_save is not None:
            # Finish the save that was interrupted: last.pt becomes the state resumed from.
            source = self._complete_save
            atomic_write(self.out_dir / "last.pt", lambda fh: fh.write(source.read_bytes()))
            self._complete_save = None
        atomic_write_text(self.out_dir / "config.json", json.dumps(self.cfg.to_dict(), indent=2) + "\n")
        if self.resumed:
            # metrics.jsonl says what the checkpoint says: a run killed between a save and
            # the log line, or after a log line whose save failed, is consistent again.
            atomic_write_text(self.out_dir / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in self.history))

    def fit(self) -> list[dict]:
        """Run the remaining epochs; the folder's lock is released however this ends."""
        try:
            return self._fit()
        finally:
            self._lock.release()

    def _fit(self) -> list[dict]:
        cfg = self.cfg
        self._prepare_out_dir()
        if self.start_epoch > cfg.train.epochs:
            if self.is_main:
                print(f"[{cfg.name}] already trained for {self.start_epoch - 1} epochs; nothing to do")
            return self.history
        if self.is_main:
            where = f" step {self.start_step}" if self.start_step else ""
            procs = f" x {self.dist.world_size} processes" if self.dist.enabled else ""
            print(
                f"[{cfg.name}] {cfg.model.name} + {cfg.algorithm.name} on {cfg.data.source} "
                f"{cfg.data.modality} data: {len(self.train_set)} train / {len(self.val_set)} val sketches, "
                f"device {self.device}{procs}, epochs {self.start_epoch}{where}..{cfg.train.epochs} -> {self.out_dir}"
            )
        logger = RunLogger(self.out_dir, enabled=self.is_main)
        try:
            with StopSignals() as stop:
                for epoch in range(self.start_epoch, cfg.train.epochs + 1):
                    steps = self._run_epoch(epoch, logger, stop)
                    if epoch < cfg.train.epochs and distributed.any_rank(stop.requested)[0]:
                        raise self._stopped(stop, epoch, steps, None)
        finally:
            logger.close()
        return self.history

    def _run_epoch(self, epoch: int, logger: RunLogger, stop: StopSignals) -> int:
        """Train, validate, save and log one epoch; returns its number of steps."""
        cfg = self.cfg
        t0 = time.time()
        train = self.train_epoch(epoch, logger, stop)
        if train["stopped"]:
            raise self._stopped(stop, epoch, train["steps"], train["meters"])
        val = self.validate(stop)
        if val is None:
            raise self._stopped(stop, epoch, train["steps"], train["meters"])
        names = ("loss",) + self.metric_names
        record = {"epoch": epoch, "lr": train["lr"]}
        record.update({f"train_{n}": train[n] for n in names})
        record.update({f"val_{n}": val[n] for n in names})
        record["seconds"] = round(time.time() - t0, 2)
        self.history.append(record)
        value = record[self.best_metric]
        improved = value > self.best_value if self.best_mode == "max" else value < self.best_value
        if improved:
            self.best_value = value
            self.best_epoch = epoch
        # Checkpoint first, log second: a resumed run rewrites metrics.jsonl from the history.
        self._save(self._state(epoch), best=improved)
        for key in [f"train_{n}" for n in names] + [f"val_{n}" for n in names] + ["lr"]:
            logger.scalar(key.replace("_", "/", 1), record[key], epoch)
        logger.history(self.history)
        if self.is_main:
            def line(split: str) -> str:
                return " ".join([f"{split} loss {record[split + '_loss']:.4f}"]
                                + [f"{n} {record[f'{split}_{n}']:.3f}" for n in self.metric_names])
            print(
                f"[{cfg.name}] epoch {epoch}/{cfg.train.epochs}  lr {train['lr']:g}  "
                f"{line('train')}  {line('val')}{'  (best)' if improved else ''}  "
                f"{record['seconds']:.1f}s"
            )
        return train["steps"]
