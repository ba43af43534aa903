"""Command lines of the entry points. Errors a user can fix are one line on stderr, exit 2
(an output that cannot be written, e.g. on a full disk, among them: the line names the file);
a run stopped by SIGTERM / SIGINT after saving its checkpoint exits 143 / 130."""

from __future__ import annotations

import argparse
import ast
import json
import os
import sys
import time
from typing import Callable, Sequence

from config import ConfigError, ExperimentConfig, available_experiments, load_config
from utils.atomic import WRITE_ERRNOS, WriteError
from utils.checkpoint import CheckpointError
from utils.device import DeviceError
from utils.run_lock import FolderBusy
from utils.signals import TrainingStopped

USER_ERRORS = (
    ConfigError,
    CheckpointError,
    DeviceError,
    FolderBusy,
    WriteError,
    FloatingPointError,
    FileNotFoundError,
    PermissionError,
    NotADirectoryError,
)


def parse_set(items: Sequence[str]) -> dict:
    """``["train.epochs=3", "data.center=False"]`` -> ``{"train.epochs": 3, "data.center": False}``.
    Values are Python literals; anything else is kept as a string."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects KEY=VALUE, got '{item}'")
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out


def train_parser(branch: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=f"train_{branch}.py",
        description=(f"Pretrain a {branch.upper()} on a sketch pretext task. " if branch != "dual" else
                     "Pretrain a CNN and a TCN together on both forms of the same sketches. ")
        + "Experiments: " + ", ".join(available_experiments()),
    )
    p.add_argument("--exp", required=True, help="experiment name: config/NAME.py")
    p.add_argument("--epochs", type=int, help="train.epochs")
    p.add_argument("--batch-size", type=int, help="train.batch_size (sketches per step)")
    p.add_argument("--data", help="prepared Quick, Draw! store directory (default: built-in synthetic sketches)")
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N (default auto: CUDA when available)")
    p.add_argument("--out", help="folder for experiment outputs (default experiments/)")
    p.add_argument("--workers", type=int, help="DataLoader worker processes")
    p.add_argument("--seed", type=int, help="training seed")
    p.add_argument("--max-steps", type=int, help="cap on steps per epoch (quick runs)")
    p.add_argument("--resume", action="store_true",
                   help="continue from OUT/NAME/last.pt (at the epoch and step it was saved at)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key, e.g. --set data.image_size=64 (repeatable)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def overrides_from_args(args: argparse.Namespace) -> dict:
    over = {}
    simple = {
        "epochs": "train.epochs",
        "batch_size": "train.batch_size",
        "device": "train.device",
        "out": "train.out",
        "workers": "train.workers",
        "seed": "train.seed",
        "max_steps": "train.max_steps_per_epoch",
    }
    for arg, key in simple.items():
        value = getattr(args, arg)
        if value is not None:
            over[key] = value
    if args.data is not None:
        over["data.source"] = "store"
        over["data.path"] = args.data
    over.update(parse_set(args.set))
    return over


def load_for_branch(name: str, branch: str, overrides: dict) -> ExperimentConfig:
    cfg = load_config(name, overrides)
    if cfg.branch != branch:
        raise ConfigError(
            f"experiment '{name}' is a {cfg.branch.upper()} experiment; run it with train_{cfg.branch}.py"
        )
    return cfg


def _rank_prefix() -> tuple[str, bool]:
    """(``"[rank R] "`` under torchrun with several processes else ``""``, is this rank 0)."""
    try:
        world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    except ValueError:
        return "", True
    return (f"[rank {rank}] " if world > 1 else ""), rank == 0


def _tell_torchrun(line: str) -> None:
    """Under torchrun, leave ``line`` in the worker's error file, so that torchrun's failure
    summary (printed after its own traceback, the part people read) shows it as the cause
    instead of "To enable traceback see: ...". Best effort: nothing happens without torchrun."""
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if not path:
        return
    try:
        with open(path, "w", encoding="utf-8") as fh:
            json.dump({"message": line, "timestamp": int(time.time())}, fh)
    except OSError:
        pass


def _error(prefix: str, text: str) -> None:
    line = f"{prefix}error: {text}"
    print(line, file=sys.stderr)
    _tell_torchrun(line)


def run_cli(fn: Callable[[], int | None]) -> int:
    """Run ``fn``; turn the errors a user can act on into one line and exit status 2, and a
    clean stop on a signal into its message and exit status 128 + signal number."""
    prefix, main = _rank_prefix()
    try:
        return fn() or 0
    except TrainingStopped as stop:
        if main:  # every process stops at the same step; one line is enough
            print(stop, file=sys.stderr)
        return stop.exit_code
    except USER_ERRORS as err:
        _error(prefix, str(err))
        return 2
    except OSError as err:
        if err.errno not in WRITE_ERRNOS:
            raise
        # Written outside utils.atomic (a library's own file): name it if the error does.
        where = f"{err.filename}: " if err.filename else ""
        _error(prefix, f"{where}{err.strerror or err}; files written before are intact")
        return 2
    except KeyboardInterrupt:
        print(f"{prefix}interrupted", file=sys.stderr)
        return 130


def train_main(branch: str, argv: Sequence[str] | None = None) -> int:
    from engine import distributed
    from engine.trainer import Trainer

    args = train_parser(branch).parse_args(argv)

    def go() -> None:
        cfg = load_for_branch(args.exp, branch, overrides_from_args(args))
        Trainer(cfg, resume=args.resume, progress=not args.no_progress).fit()

    try:
        return run_cli(go)
    finally:
        # Leave the torchrun process group, if any, here: run_cli has handled the error (if
        # one was raised), so no traceback keeps the trainer, and the group, alive.
        distributed.cleanup()
