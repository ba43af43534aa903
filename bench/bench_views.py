"""Pretext views per second per CPU core: batched tensor path vs the per-sample reference.

    python bench/bench_views.py [--batch 64] [--size 224] [--repeats 5]
    python bench/bench_views.py --growth [--batches 16 64 256] [--sizes 64 112 224] [--repeats 3]
    python bench/bench_views.py --keep-host-memory ...   # under the trainer's default malloc setting
    python bench/bench_views.py --fresh 16 ...           # a different copy of the batch each call

Both paths run in the same process on the same batch, pinned to one thread, so the ratio is
what matters (these machines are noisy). The copy floor is the time to fill a fresh output of
the same size with plain copies of the batch: the memory traffic any implementation pays, so
"batched / floor" says how close the batched path is to memory speed. A "view" is one model input (rotation makes 4 per
sketch, deformation 2). With --growth it prints how the cost grows instead: one table over
batch sizes (at --size px) and one over raster sizes (at --batch sketches; strokes do not
depend on the raster size, so that table has raster rows only). With --keep-host-memory both
paths run under ``train.keep_host_memory``'s setting (utils/host_memory.py), as they do in
training: freed blocks are reused instead of faulted in afresh on every call. By default every
call gets the same batch, which then stays in the CPU's caches (a 64 x 224^2 float32 batch is
12.8 MB); training hands over a new batch each step, read from memory. ``--fresh N`` gives
each call the next of N copies of the batch (both paths), so that the input comes in cold.
"""

from __future__ import annotations

import argparse
import itertools
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from algorithms import build_algorithm  # noqa: E402
from algorithms.base import new_views_like  # noqa: E402
from algorithms.reference import reference_views  # noqa: E402
from data.datasets import RasterDataset, StrokeDataset  # noqa: E402
from data.synthetic import SyntheticSketches  # noqa: E402
from utils.host_memory import keep_freed_memory  # noqa: E402

TASKS = (("rotation", {}), ("deformation", {"module": "released"}))


def best_time(fn, repeats: int, budget_s: float = 0.3, cap: int = 300) -> float:
    """Fastest of at least `repeats` calls (more, up to `cap`, while under `budget_s` seconds).

    The minimum is the least disturbed run (as timeit advises); a fast call is repeated more
    so that its minimum is as settled as a slow call's (whose one call already spans many
    small operations).
    """
    fn()  # warm-up (index-map caches, allocator)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < repeats or (len(times) < cap and time.perf_counter() - start < budget_s):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def make_batch(modality: str, batch: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `batch` synthetic training sketches as a raster or stroke batch."""
    source = SyntheticSketches("train", per_class=max(1, batch // 12 + 1), num_classes=12, seed=0)
    ds = RasterDataset(source, image_size=size) if modality == "raster" else StrokeDataset(source)
    items = [ds[i] for i in range(batch)]
    return torch.stack([x for x, _ in items]), torch.tensor([y for _, y in items])


def copies_of(x: torch.Tensor, fresh: int) -> list[torch.Tensor]:
    """x and fresh - 1 clones of it: the inputs ``measure`` and ``copy_floor`` cycle over."""
    return [x] + [x.clone() for _ in range(fresh - 1)]


def measure(task: str, params: dict, modality: str, copies: list[torch.Tensor], y: torch.Tensor,
            repeats: int) -> tuple[int, float, float]:
    """(views per batch, reference seconds, batched seconds), best of `repeats`; each call
    takes the next of the copies of the batch (one copy: the same batch, warm in the caches;
    several: cold)."""
    algorithm = build_algorithm(task, modality, **params)
    n_views = len(algorithm.views(copies[0], y)[1])
    ref_inputs, fast_inputs = itertools.cycle(copies), itertools.cycle(copies)
    t_ref = best_time(lambda: reference_views(algorithm, next(ref_inputs), y), repeats)
    t_fast = best_time(lambda: algorithm.views(next(fast_inputs), y), repeats)
    return n_views, t_ref, t_fast


def copy_floor(copies: list[torch.Tensor], n_views: int, repeats: int) -> float:
    """Seconds to fill a fresh views-sized output with plain copies of the batch: the memory
    traffic every implementation pays (read the batch, write the views), a floor for the
    batched path. Each call reads the next of the copies, as in ``measure``."""
    per_batch = n_views // copies[0].shape[0]
    inputs = itertools.cycle(copies)

    def fill() -> None:
        source = next(inputs)
        out = new_views_like(source, n_views)
        for k in range(per_batch):
            out[k * source.shape[0] : (k + 1) * source.shape[0]].copy_(source)

    return best_time(fill, repeats)


def row(*cells: object) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--growth", action="store_true", help="tables over --batches and --sizes instead")
    p.add_argument("--batches", type=int, nargs="+", default=[16, 64, 256])
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 112, 224])
    p.add_argument("--keep-host-memory", action="store_true", help="reuse freed host memory, as training does")
    p.add_argument("--fresh", type=int, default=1, metavar="N",
                   help="cycle through N copies of each batch, so inputs come in cold as in training")
    args = p.parse_args(argv)
    if args.fresh < 1:
        p.error(f"--fresh must be >= 1, got {args.fresh}")
    torch.set_num_threads(1)
    kept = args.keep_host_memory and keep_freed_memory()
    memory = "freed host memory kept (train.keep_host_memory)" if kept else "glibc's default malloc"
    memory += f", inputs cycled over {args.fresh} copies of the batch" if args.fresh > 1 else ", one batch reused"
    machine = f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, 1 thread, {memory}"

    if not args.growth:
        batches = {m: make_batch(m, args.batch, args.size) for m in ("raster", "stroke")}
        print(f"{machine}; batch {args.batch} sketches, rasters {args.size} px, strokes 100 x 4, "
              f"best of {args.repeats}")
        print(row("task", "branch", "views/batch", "per-sample views/s", "batched views/s", "speed-up",
                  "copy-floor views/s", "batched / floor"))
        print(row(*["---"] * 8))
        for task, params in TASKS:
            for modality in ("raster", "stroke"):
                copies = copies_of(batches[modality][0], args.fresh)
                n_views, t_ref, t_fast = measure(task, params, modality, copies, batches[modality][1], args.repeats)
                t_floor = copy_floor(copies, n_views, args.repeats)
                print(row(task, modality, n_views, f"{n_views / t_ref:,.0f}", f"{n_views / t_fast:,.0f}",
                          f"{t_ref / t_fast:.1f}x", f"{n_views / t_floor:,.0f}", f"{t_floor / t_fast:.0%}"))
        return

    header = row("task", "branch", "batch", "raster px", "per-sample views/s", "batched views/s",
                 "batched ms/batch", "speed-up")
    print(f"{machine}; best of {args.repeats}")
    print(f"\nBatch size (rasters {args.size} px, strokes 100 x 4):\n")
    print(header)
    print(row(*["---"] * 8))
    largest = {m: make_batch(m, max(args.batches), args.size) for m in ("raster", "stroke")}
    for task, params in TASKS:
        for modality in ("raster", "stroke"):
            for b in args.batches:
                x, y = (t[:b] for t in largest[modality])
                n_views, t_ref, t_fast = measure(task, params, modality, copies_of(x, args.fresh), y, args.repeats)
                print(row(task, modality, b, args.size if modality == "raster" else "-",
                          f"{n_views / t_ref:,.0f}", f"{n_views / t_fast:,.0f}", f"{1000 * t_fast:.2f}",
                          f"{t_ref / t_fast:.1f}x"))
    print(f"\nRaster size (batch {args.batch}):\n")
    print(header)
    print(row(*["---"] * 8))
    rasters = {s: make_batch("raster", args.batch, s) for s in args.sizes}
    for task, params in TASKS:
        for s in args.sizes:
            x, y = rasters[s]
            n_views, t_ref, t_fast = measure(task, params, "raster", copies_of(x, args.fresh), y, args.repeats)
            print(row(task, "raster", args.batch, s, f"{n_views / t_ref:,.0f}", f"{n_views / t_fast:,.0f}",
                      f"{1000 * t_fast:.2f}", f"{t_ref / t_fast:.1f}x"))


if __name__ == "__main__":
    main()
