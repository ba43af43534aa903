"""The one trainer behind ``train_cnn.py`` and ``train_tcn.py``.

Per epoch: set the learning rate from the config's table, run the pretext task over the
training split (progress bar with loss and pretext accuracy, TensorBoard scalars), measure
validation loss and accuracy without gradients, then save ``last.pt`` and, when validation
accuracy is strictly higher than before, ``best.pt``. ``experiments/NAME/`` holds the
resolved config, both checkpoints, ``metrics.jsonl`` and the TensorBoard events.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch
from tqdm import tqdm

from algorithms.losses import accuracy
from config import ConfigError, ExperimentConfig
from engine import build
from utils.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from utils.device import resolve_device
from utils.logger import RunLogger
from utils.meters import AverageMeter
from utils.rng import rng_state, seed_everything, set_rng_state
from utils.schedule import lr_at

CHECKPOINT_VERSION = 1


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


class Trainer:
    """Trains one experiment. ``fit()`` runs the remaining epochs and returns the history."""

    def __init__(self, cfg: ExperimentConfig, resume: bool = False, progress: bool = True) -> None:
        self.cfg = cfg
        self.progress = progress
        self.out_dir = experiment_dir(cfg)
        self.device = resolve_device(cfg.train.device)
        seed_everything(cfg.train.seed)

        self.algorithm = build.build_algorithm(cfg)
        self.num_outputs = build.head_size(cfg, self.algorithm)
        self.model = build.build_model(cfg, self.num_outputs).to(self.device)
        self.optimizer = make_optimizer(cfg, self.model.parameters())
        self.train_set = build.build_dataset(cfg, "train")
        self.val_set = build.build_dataset(cfg, "val")
        if len(self.train_set) == 0:
            raise ConfigError(f"experiment '{cfg.name}': the training split is empty")

        self.start_epoch = 1  # first epoch still to run
        self.best_acc = -math.inf
        self.history: list[dict] = []
        if resume:
            self._resume()

    # ------------------------------------------------------------------ checkpoints
    def _state(self, epoch: int) -> dict:
        return {
            "version": CHECKPOINT_VERSION,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "epoch": epoch,
            "best_acc": self.best_acc,
            "history": self.history,
            "rng": rng_state(),
            "config": self.cfg.to_dict(),
            "algorithm": self.algorithm.describe(),
            "num_outputs": self.num_outputs,
        }

    def _resume(self) -> None:
        path = self.out_dir / "last.pt"
        if not path.exists():
            raise CheckpointError(f"{path}: --resume was given but there is no checkpoint to resume from")
        state = load_checkpoint(path, map_location=self.device)
        saved = state["config"]
        for section, key in (("model", "name"), ("algorithm", "name"), ("data", "modality")):
            old, new = saved[section][key], getattr(getattr(self.cfg, section), key)
            if old != new:
                raise CheckpointError(f"{path}: was trained with {section}.{key} '{old}', this run asks for '{new}'")
        if state.get("num_outputs") != self.num_outputs:
            raise CheckpointError(
                f"{path}: head has {state.get('num_outputs')} outputs, this run needs {self.num_outputs}"
            )
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as err:
            raise CheckpointError(f"{path}: does not fit this model ({str(err).splitlines()[0]})") from None
        self.start_epoch = int(state["epoch"]) + 1
        self.best_acc = float(state["best_acc"])
        self.history = list(state.get("history", []))
        set_rng_state(state["rng"])

    # ------------------------------------------------------------------ data
    def _loader(self, dataset, epoch: int | None) -> torch.utils.data.DataLoader:
        t = self.cfg.train
        shuffle = epoch is not None
        generator = None
        if shuffle:
            # The order of epoch e depends only on (seed, e): a resumed run sees the same data
            # order as an uninterrupted one.
            generator = torch.Generator().manual_seed(t.seed * 100_003 + epoch)
        return torch.utils.data.DataLoader(
            dataset,
            batch_size=t.batch_size,
            shuffle=shuffle,
            generator=generator,
            num_workers=t.workers,
            pin_memory=self.device.type == "cuda",
            # A 1-sample training batch would break batch norm in the supervised task.
            drop_last=shuffle and len(dataset) > t.batch_size,
            persistent_workers=False,
        )

    # ------------------------------------------------------------------ loops
    def _step_count(self, loader) -> int:
        cap = self.cfg.train.max_steps_per_epoch
        return min(len(loader), cap) if cap else len(loader)

    def train_epoch(self, epoch: int, logger: RunLogger) -> dict:
        self.model.train()
        lr = lr_at(self.cfg.optim.lr_schedule, epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        loader = self._loader(self.train_set, epoch)
        steps = self._step_count(loader)
        loss_m, acc_m = AverageMeter(), AverageMeter()
        bar = tqdm(total=steps, desc=f"epoch {epoch}/{self.cfg.train.epochs}", disable=not self.progress, leave=False)
        for step, (x, y) in enumerate(loader):
            if step >= steps:
                break
            x = x.to(self.device, non_blocking=True)
            y = y.to(self.device, non_blocking=True)
            inputs, targets = self.algorithm.views(x, y)
            logits = self.model(inputs)
            loss = self.algorithm.loss(logits, targets)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"non-finite loss {loss.item()} at epoch {epoch}, step {step + 1}; "
                    f"the last good checkpoint is {self.out_dir / 'last.pt'}"
                )
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            n = len(targets)
            loss_m.update(loss.item(), n)
            acc_m.update(accuracy(logits.detach(), targets), n)
            global_step = (epoch - 1) * steps + step + 1
            if global_step % self.cfg.train.log_every == 0:
                logger.scalar("train/loss_step", loss.item(), global_step)
            bar.set_postfix(loss=f"{loss_m.avg:.4f}", acc=f"{acc_m.avg:.3f}", lr=f"{lr:g}")
            bar.update(1)
        bar.close()
        return {"loss": loss_m.avg, "acc": acc_m.avg, "lr": lr}

    @torch.no_grad()
    def validate(self) -> dict:
        self.model.eval()
        loader = self._loader(self.val_set, None)
        loss_m, acc_m = AverageMeter(), AverageMeter()
        for x, y in loader:
            x, y = x.to(self.device), y.to(self.device)
            inputs, targets = self.algorithm.views(x, y)
            logits = self.model(inputs)
            n = len(targets)
            loss_m.update(self.algorithm.loss(logits, targets).item(), n)
            acc_m.update(accuracy(logits, targets), n)
        return {"loss": loss_m.avg, "acc": acc_m.avg}

    def fit(self) -> list[dict]:
        cfg = self.cfg
        self.out_dir.mkdir(parents=True, exist_ok=True)
        (self.out_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
        if self.start_epoch > cfg.train.epochs:
            print(f"[{cfg.name}] already trained for {self.start_epoch - 1} epochs; nothing to do")
            return self.history
        print(
            f"[{cfg.name}] {cfg.model.name} + {cfg.algorithm.name} on {cfg.data.source} "
            f"{cfg.data.modality} data: {len(self.train_set)} train / {len(self.val_set)} val sketches, "
            f"device {self.device}, epochs {self.start_epoch}..{cfg.train.epochs} -> {self.out_dir}"
        )
        logger = RunLogger(self.out_dir)
        try:
            for epoch in range(self.start_epoch, cfg.train.epochs + 1):
                t0 = time.time()
                train = self.train_epoch(epoch, logger)
                val = self.validate()
                record = {
                    "epoch": epoch,
                    "lr": train["lr"],
                    "train_loss": train["loss"],
                    "train_acc": train["acc"],
                    "val_loss": val["loss"],
                    "val_acc": val["acc"],
                    "seconds": round(time.time() - t0, 2),
                }
                self.history.append(record)
                for key in ("train_loss", "train_acc", "val_loss", "val_acc", "lr"):
                    logger.scalar(key.replace("_", "/", 1), record[key], epoch)
                logger.epoch(record)
                improved = val["acc"] > self.best_acc
                if improved:
                    self.best_acc = val["acc"]
                state = self._state(epoch)
                save_checkpoint(state, self.out_dir / "last.pt")
                if improved:
                    save_checkpoint(state, self.out_dir / "best.pt")
                print(
                    f"[{cfg.name}] epoch {epoch}/{cfg.train.epochs}  lr {train['lr']:g}  "
                    f"train loss {train['loss']:.4f} acc {train['acc']:.3f}  "
                    f"val loss {val['loss']:.4f} acc {val['acc']:.3f}{'  (best)' if improved else ''}  "
                    f"{record['seconds']:.1f}s"
                )
        finally:
            logger.close()
        return self.history
