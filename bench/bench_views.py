"""Pretext views per second per CPU core: batched tensor path vs the per-sample reference.

    python bench/bench_views.py [--batch 64] [--size 224] [--repeats 5]

Both paths run in the same process on the same batch, pinned to one thread, so the ratio is
what matters (these machines are noisy). A "view" is one model input (rotation makes 4 per
sketch, deformation 2).
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from algorithms import build_algorithm  # noqa: E402
from algorithms.reference import reference_views  # noqa: E402
from data.datasets import RasterDataset, StrokeDataset  # noqa: E402
from data.synthetic import SyntheticSketches  # noqa: E402


def best_time(fn, repeats: int) -> float:
    fn()  # warm-up (index-map caches, allocator)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    torch.set_num_threads(1)

    source = SyntheticSketches("train", per_class=max(1, args.batch // 12 + 1), num_classes=12, seed=0)
    datasets = {"raster": RasterDataset(source, image_size=args.size), "stroke": StrokeDataset(source)}
    batches = {}
    for modality, ds in datasets.items():
        items = [ds[i] for i in range(args.batch)]
        batches[modality] = (torch.stack([x for x, _ in items]), torch.tensor([y for _, y in items]))

    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, 1 thread; "
          f"batch {args.batch} sketches, rasters {args.size} px, strokes 100 x 4")
    print("| task | branch | views/batch | per-sample views/s | batched views/s | speed-up |")
    print("|---|---|---|---|---|---|")
    for task, params in (("rotation", {}), ("deformation", {"module": "released"})):
        for modality in ("raster", "stroke"):
            algorithm = build_algorithm(task, modality, **params)
            x, y = batches[modality]
            n_views = len(algorithm.views(x, y)[1])
            t_ref = best_time(lambda: reference_views(algorithm, x, y), args.repeats)
            t_fast = best_time(lambda: algorithm.views(x, y), args.repeats)
            print(f"| {task} | {modality} | {n_views} | {n_views / t_ref:,.0f} | {n_views / t_fast:,.0f} | "
                  f"{t_ref / t_fast:.1f}x |")


if __name__ == "__main__":
    main()
