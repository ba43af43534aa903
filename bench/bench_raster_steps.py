"""Where a batch of raster rotation views goes: each step of the batched path timed alone,
per sketch, on one core, from a store prepared from real Quick, Draw! files.

    python bench/bench_raster_steps.py [--src ../shared/quickdraw/simplified] [--batch 64]
                                       [--size 224] [--batches 30] [--rounds 3] [--work DIR]

The steps are those the trainer runs for ``cnn_rotation`` with ``--workers 0``: the
dataset packs and fits the batch (``_packed_fitted``) and draws it (``render_packed``,
uint8 ink levels), ``collate_samples`` hands the stacked batch on (the default collate,
timed beside it, would split and re-stack it), and the rotation views turn the levels
(``cv2.rotate``) and convert the four views to float32 (``ink_to_float``). With
``data.raster_cache`` the first two steps become one gather from the rasters drawn once
(built before the timing). Each step runs on
the outputs of the step before, made beforehand, over ``--batches`` batches; a figure is the
best of ``--rounds`` passes. The last rows are the whole views and the whole path.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import default_collate

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout
sys.path.insert(0, str(ROOT / "bench"))

from algorithms import build_algorithm  # noqa: E402
from algorithms.base import ink_to_float  # noqa: E402
from algorithms.rotation import _level_views_cv2  # noqa: E402
from bench_pipeline import add_sample_arguments  # noqa: E402
from bench_prepare import _cpu  # noqa: E402
from data.datasets import RasterDataset, collate_samples  # noqa: E402
from data.prepare import prepare  # noqa: E402
from data.render import render_packed  # noqa: E402
from data.store import StoreSketches  # noqa: E402
from utils.host_memory import keep_freed_memory  # noqa: E402


def per_sketch_us(step, inputs: list, batch: int, rounds: int) -> float:
    """Best over ``rounds`` passes of ``step`` over every input, in microseconds a sketch."""
    step(inputs[0])  # warm
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        for item in inputs:
            step(item)
        best = min(best, time.perf_counter() - t0)
    return best / len(inputs) / batch * 1e6


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_sample_arguments(p)
    p.add_argument("--batches", type=int, default=30, help="batches timed per pass")
    p.add_argument("--rounds", type=int, default=3, help="passes; the best is kept")
    p.add_argument("--work", help="folder for the store (default: a temporary one, removed)")
    args = p.parse_args(argv)
    if min(args.batch, args.batches, args.rounds, args.size) < 1:
        p.error("--batch, --batches, --rounds and --size must be >= 1")
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    kept = keep_freed_memory()
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bench_raster_steps_"))
    try:
        store = work / "store"
        if not (store / "meta.json").is_file():
            prepare([args.src], store, per_class={"train": args.limit or 10**9, "val": 0, "query": 0, "gallery": 0},
                    progress=False, log=lambda _: None)
        source = StoreSketches(store, "train")
        ds = RasterDataset(source, image_size=args.size, ink_levels=True)
        cached = RasterDataset(source, image_size=args.size, ink_levels=True, cache=True)
        if cached.cached_rasters() is None:
            raise SystemExit(f"{store}: no room for the raster cache (see above)")
        algorithm = build_algorithm("rotation", "raster")
        rng = np.random.default_rng(0)
        orders = [rng.choice(len(ds), size=args.batch, replace=len(ds) < args.batch).tolist()
                  for _ in range(args.batches)]
        packed = [ds._packed_fitted(order) for order in orders]
        items = [ds.__getitems__(order) for order in orders]
        batches = [collate_samples(item) for item in items]
        turned = [_level_views_cv2(x) for x, _ in batches]
        steps = (
            ("pack and fit the batch (_packed_fitted)", ds._packed_fitted, orders),
            ("draw (render_packed)", lambda f: render_packed(*f[:3], size=args.size), packed),
            ("dataset in all (__getitems__)", ds.__getitems__, orders),
            ("or: the levels drawn once (data.raster_cache, __getitems__)", cached.__getitems__, orders),
            ("collate (collate_samples: handed on)", collate_samples, items),
            ("(default_collate: split and stacked again)", lambda i: default_collate(list(i)), items),
            ("the four turns of the levels (cv2.rotate)", lambda b: _level_views_cv2(b[0]), batches),
            ("the four views to float32 (ink_to_float)", ink_to_float, turned),
            ("views in all (algorithm.views)", lambda b: algorithm.views(*b), batches),
            ("drawn once + collate + views", lambda o: algorithm.views(*collate_samples(cached.__getitems__(o))),
             orders),
            ("dataset + collate + views", lambda o: algorithm.views(*collate_samples(ds.__getitems__(o))), orders),
        )
        print(f"machine: {_cpu()}, {os.cpu_count()} logical CPUs; torch {torch.__version__}, OpenCV {cv2.__version__}; "
              f"torch and OpenCV 1 thread; {'freed host memory kept' if kept else 'glibc default malloc'}")
        print(f"data: {len(ds)} real sketches ({args.src}), batch {args.batch}, {args.size} px; "
              f"{args.batches} batches a pass, best of {args.rounds} passes\n")
        print("| step | us / sketch |\n|---|---|")
        got = {}
        for name, step, inputs in steps:
            got[name] = per_sketch_us(step, inputs, args.batch, args.rounds)
            print(f"| {name} | {got[name]:.1f} |")
        return got
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
