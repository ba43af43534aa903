"""Batch-norm statistics of a checkpoint recomputed on clean sketches, as a new checkpoint.

    python -m evaluation.recalibrate --ckpt runs/seed0/cnn_denoising/best.pt --out runs/seed0/cnn_denoising_bn/best.pt
    python eval_retrieval.py --ckpt runs/seed0/cnn_denoising_bn/best.pt

A method that trains on corrupted or heavily augmented inputs (a denoising autoencoder's
masked sketches, say) leaves running batch-norm statistics of those inputs, and evaluation
then normalises clean sketches with them. This tool separates that shift from the quality
of the weights: it resets every batch-norm layer's running mean and variance, passes one
split of the checkpoint's own data (the pretraining split by default, never query or gallery
sketches) through the network in evaluation mode with only the batch-norm layers gathering
statistics, and writes the same checkpoint with the new statistics and nothing else
changed. The statistics are torch's cumulative average over the batches (momentum None):
the mean of the batch means and of the batches' unbiased variances, in sketch order.

The output records what was done under ``state["recalibrated"]``; the input is never
overwritten. Single-branch checkpoints (``train_cnn.py`` / ``train_tcn.py``) only.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Iterable, Sequence

import torch
from torch import nn
from tqdm import tqdm

from config import ConfigError
from data import collate_samples
from engine import build
from engine.cli import parse_set, run_cli
from evaluation import encoders
from utils.checkpoint import load_checkpoint, save_checkpoint

__all__ = ["batch_norm_layers", "recalibrate_batch_norm", "recalibrate_checkpoint", "recalibrate_main"]


def batch_norm_layers(net: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The batch-norm layers of ``net`` that keep running statistics."""
    return [m for m in net.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


@torch.no_grad()
def recalibrate_batch_norm(net: nn.Module, batches: Iterable[torch.Tensor]) -> int:
    """Reset and recompute the running statistics of ``net``'s batch-norm layers from
    ``batches`` (the rest of the network in evaluation mode: no dropout); returns the number
    of batches seen. The layers' momentum and every module's training flag are restored."""
    layers = batch_norm_layers(net)
    if not layers:
        raise ValueError("the network has no batch-norm layer with running statistics")
    modes = {m: m.training for m in net.modules()}
    momenta = [m.momentum for m in layers]
    net.eval()
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over every batch
        m.train()
    seen = 0
    try:
        for x in batches:
            net(x)
            seen += 1
    finally:
        for m, momentum in zip(layers, momenta):
            m.momentum = momentum
        for m, mode in modes.items():
            m.train(mode)
    if seen == 0:
        raise ValueError("no batch to gather statistics from")
    return seen


def recalibrate_checkpoint(src: str | Path, dst: str | Path, overrides: dict | None = None, split: str = "train",
                           batch_size: int = 64, max_sketches: int | None = None, progress: bool = True) -> dict:
    """Write ``dst``: the checkpoint ``src`` with its batch-norm statistics recomputed on
    ``split`` of its own data (``overrides`` applied to its config, e.g. ``data.path``).
    Returns the record stored under ``state["recalibrated"]``."""
    src, dst = Path(src), Path(dst)
    if dst.resolve() == src.resolve():
        raise ConfigError(f"{dst}: --out must differ from --ckpt (the original checkpoint is kept)")
    if batch_size < 2:
        raise ConfigError(f"--batch-size must be at least 2 (batch norm needs a variance), got {batch_size}")
    if max_sketches is not None and max_sketches < batch_size:
        raise ConfigError(f"--max-sketches must be at least --batch-size ({batch_size}), got {max_sketches}")
    state = load_checkpoint(src)
    if state["config"].get("branch") not in ("cnn", "tcn"):
        raise ConfigError(f"{src}: a {state['config'].get('branch')} checkpoint; recalibration takes single-branch "
                          "ones (cnn, tcn)")
    encoder = encoders.load_encoder(src, overrides)  # the network exactly as evaluation builds it
    cfg, net = encoder.cfg, encoder.model(torch.device("cpu"))
    dataset = build.build_dataset(cfg, split)
    count = len(dataset) if max_sketches is None else min(len(dataset), max_sketches)
    if count >= batch_size:
        count -= count % batch_size  # whole batches: the cumulative average weighs each the same
    if count < 2:
        raise ConfigError(f"{src}: split '{split}' holds {len(dataset)} sketch(es); need at least 2")
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, range(count)), batch_size=min(batch_size, count),
                                         shuffle=False, collate_fn=collate_samples)

    def batches():
        for x, _ in tqdm(loader, desc=f"[recalibrate] {split}", disable=not progress, leave=False):
            yield x.float() / 255 if x.dtype == torch.uint8 else x

    seen = recalibrate_batch_norm(net, batches())
    record = {"from": str(src), "split": split, "sketches": count, "batches": seen,
              "layers": len(batch_norm_layers(net)), "data": cfg.data.path or cfg.data.source}
    out = {**state, "model": net.state_dict(), "recalibrated": record}
    dst.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(out, dst)
    return record


def recalibrate_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m evaluation.recalibrate",
        description="Recompute a checkpoint's batch-norm statistics on clean sketches of its own data and write "
        "them as a new checkpoint (weights unchanged), e.g. to tell a train/test shift of the statistics from the "
        "quality of the weights.")
    p.add_argument("--ckpt", required=True, help="checkpoint to read (best.pt or last.pt of a cnn or tcn run)")
    p.add_argument("--out", required=True, help="checkpoint to write (must differ from --ckpt)")
    p.add_argument("--split", default="train", choices=("train", "val"),
                   help="data split the statistics come from (never query or gallery)")
    p.add_argument("--data", help="prepared store to read (default: the checkpoint's data)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--max-sketches", type=int, help="use at most this many sketches of the split")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    p.add_argument("--no-progress", action="store_true")
    return p


def recalibrate_main(argv: Sequence[str] | None = None) -> int:
    args = recalibrate_parser().parse_args(argv)

    def go() -> None:
        over = parse_set(args.set)
        if args.data:
            over.update({"data.source": "store", "data.path": args.data})
        record = recalibrate_checkpoint(args.ckpt, args.out, over, args.split, args.batch_size, args.max_sketches,
                                        not args.no_progress)
        print(f"[recalibrate] {args.out}: {record['layers']} batch-norm layers from {record['sketches']} "
              f"'{record['split']}' sketches ({record['batches']} batches) of {record['data']}")

    return run_cli(go)


if __name__ == "__main__":
    raise SystemExit(recalibrate_main())
