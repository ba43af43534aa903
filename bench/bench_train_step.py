"""Training steps per second for each experiment on the CPU, split into data and compute time.

    python bench/bench_train_step.py [--batch 8] [--steps 6] [--workers 0]
    python bench/bench_train_step.py --cpu-bf16 [--batch 32] [--exp ...]   # float32 vs train.cpu_bf16
    python bench/bench_train_step.py --host-memory [--batch 32] [--exp ...]   # train.keep_host_memory off vs on

For each experiment the trainer's own step runs on the built-in synthetic sketches at the
experiment's own input size: "data" is the wait for the next batch of ``Trainer.train_loader``
(rendering or stroke tensors), "compute" is ``Trainer.train_step`` (views or augmentations,
forward, the algorithm's loss, backward, optimiser step, its post-step update such as BYOL's
EMA). "inputs/step" counts what the encoder sees per step (pretext views, both augmented
views, or the sketches themselves). The first step is a warm-up and not counted. With --workers N the loader prefetches in N processes.
With --cpu-bf16 each experiment runs twice, in float32 and with ``train.cpu_bf16`` (bf16
autocast + channels_last), and the table gives both compute times and the speed-up. With
--host-memory each experiment runs in two fresh processes, ``train.keep_host_memory`` off
then on (the malloc setting is process-wide and cannot be undone), same table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from config import available_experiments, load_config  # noqa: E402
from engine.trainer import Trainer, cpu_has_bf16  # noqa: E402


def measure(name: str, batch: int, steps: int, workers: int, out: str,
            cpu_bf16: bool = False, keep_host_memory: bool = True) -> tuple[float, float, int]:
    cfg = load_config(name, {"train.batch_size": batch, "train.device": "cpu", "train.workers": workers,
                             "train.out": out, "data.train_per_class": max(2, batch * (steps + 1) // 12 + 1),
                             "train.cpu_bf16": cpu_bf16, "train.keep_host_memory": keep_host_memory})
    trainer = Trainer(cfg, progress=False)
    loader, _ = trainer.train_loader(1)
    trainer.net.train()
    it = iter(loader)
    data_s = compute_s = 0.0
    views = 0
    for step in range(steps + 1):
        t0 = time.perf_counter()
        batch = next(it)
        t1 = time.perf_counter()
        out, _ = trainer.train_step(batch)
        t2 = time.perf_counter()
        if step > 0:
            data_s += t1 - t0
            compute_s += t2 - t1
            views += out.count
    return data_s / steps, compute_s / steps, views // steps


def measure_in_process(name: str, args: argparse.Namespace, keep_host_memory: bool) -> tuple[float, float, int]:
    """``measure`` in a fresh Python process (for settings a process cannot undo)."""
    command = [sys.executable, __file__, "--measure-one", name, "--batch", str(args.batch), "--steps",
               str(args.steps), "--workers", str(args.workers)] + ([] if keep_host_memory else ["--no-keep"])
    return tuple(json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--exp", nargs="*", default=None)
    p.add_argument("--cpu-bf16", action="store_true", help="compare float32 with train.cpu_bf16")
    p.add_argument("--host-memory", action="store_true", help="compare train.keep_host_memory off and on")
    p.add_argument("--measure-one", help=argparse.SUPPRESS)  # internal: one measurement as JSON
    p.add_argument("--no-keep", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.measure_one:
        with tempfile.TemporaryDirectory() as out:
            print(json.dumps(measure(args.measure_one, args.batch, args.steps, args.workers, out,
                                     keep_host_memory=not args.no_keep)))
        return
    names = args.exp or [n for n in available_experiments()]
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads); batch {args.batch} sketches, {args.steps} timed steps, "
          f"workers {args.workers}" + (f"; bf16 in hardware: {cpu_has_bf16()}" if args.cpu_bf16 else ""))
    if args.cpu_bf16:
        print("| experiment | inputs/step | fp32 compute ms/step | cpu_bf16 compute ms/step | speed-up |")
        print("|---|---|---|---|---|")
    elif args.host_memory:
        print("| experiment | inputs/step | compute ms/step, memory returned | compute ms/step, memory kept | speed-up |")
        print("|---|---|---|---|---|")
    else:
        print("| experiment | inputs/step | steps/s | data ms/step | compute ms/step | data share |")
        print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as out:
        for name in names:
            if args.host_memory:
                _, returned, views = measure_in_process(name, args, keep_host_memory=False)
                _, kept, _ = measure_in_process(name, args, keep_host_memory=True)
                print(f"| {name} | {views} | {1000 * returned:.1f} | {1000 * kept:.1f} | {returned / kept:.2f}x |")
                continue
            data, compute, views = measure(name, args.batch, args.steps, args.workers, out)
            if args.cpu_bf16:
                _, low, _ = measure(name, args.batch, args.steps, args.workers, out, cpu_bf16=True)
                print(f"| {name} | {views} | {1000 * compute:.1f} | {1000 * low:.1f} | {compute / low:.2f}x |")
                continue
            print(f"| {name} | {views} | {1 / (data + compute):.2f} | {1000 * data:.1f} | {1000 * compute:.1f} | "
                  f"{data / (data + compute):.0%} |")


if __name__ == "__main__":
    main()
