"""Training steps per second for each experiment on the CPU, split into data and compute time.

    python bench/bench_train_step.py [--batch 8] [--steps 6] [--workers 0]
    python bench/bench_train_step.py --cpu-bf16 [--batch 32] [--exp ...]   # float32 vs train.cpu_bf16

For each experiment the real trainer pieces run on the built-in synthetic sketches at the
experiment's own input size: "data" is the wait for the next loader batch (rendering or
stroke tensors), "compute" is pretext views + forward + backward + optimiser step. The first
step is a warm-up and not counted. With --workers N the loader prefetches in N processes.
With --cpu-bf16 each experiment runs twice, in float32 and with ``train.cpu_bf16`` (bf16
autocast + channels_last), and the table gives both compute times and the speed-up.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from config import available_experiments, load_config  # noqa: E402
from engine.trainer import Trainer, cpu_has_bf16  # noqa: E402


def measure(name: str, batch: int, steps: int, workers: int, out: str,
            cpu_bf16: bool = False) -> tuple[float, float, int]:
    cfg = load_config(name, {"train.batch_size": batch, "train.device": "cpu", "train.workers": workers,
                             "train.out": out, "data.train_per_class": max(2, batch * (steps + 1) // 12 + 1),
                             "train.cpu_bf16": cpu_bf16})
    trainer = Trainer(cfg, progress=False)
    loader, _ = trainer._train_loader(1, 0)
    trainer.net.train()
    it = iter(loader)
    data_s = compute_s = 0.0
    views = 0
    for step in range(steps + 1):
        t0 = time.perf_counter()
        x, y = next(it)
        t1 = time.perf_counter()
        inputs, targets = trainer._inputs(x, y)
        trainer._update(trainer._forward(inputs, targets)[1])
        t2 = time.perf_counter()
        if step > 0:
            data_s += t1 - t0
            compute_s += t2 - t1
            views += len(targets)
    return data_s / steps, compute_s / steps, views // steps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--exp", nargs="*", default=None)
    p.add_argument("--cpu-bf16", action="store_true", help="compare float32 with train.cpu_bf16")
    args = p.parse_args()
    names = args.exp or [n for n in available_experiments()]
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads); batch {args.batch} sketches, {args.steps} timed steps, "
          f"workers {args.workers}" + (f"; bf16 in hardware: {cpu_has_bf16()}" if args.cpu_bf16 else ""))
    if args.cpu_bf16:
        print("| experiment | inputs/step | fp32 compute ms/step | cpu_bf16 compute ms/step | speed-up |")
        print("|---|---|---|---|---|")
    else:
        print("| experiment | inputs/step | steps/s | data ms/step | compute ms/step | data share |")
        print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as out:
        for name in names:
            data, compute, views = measure(name, args.batch, args.steps, args.workers, out)
            if args.cpu_bf16:
                _, low, _ = measure(name, args.batch, args.steps, args.workers, out, cpu_bf16=True)
                print(f"| {name} | {views} | {1000 * compute:.1f} | {1000 * low:.1f} | {compute / low:.2f}x |")
                continue
            print(f"| {name} | {views} | {1 / (data + compute):.2f} | {1000 * data:.1f} | {1000 * compute:.1f} | "
                  f"{data / (data + compute):.0%} |")


if __name__ == "__main__":
    main()
