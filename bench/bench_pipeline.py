"""End to end: a prepared store -> a batch of pretext views, sketches per second per core,
against the released pipeline and the per-sample reference path, measured in the same run.

    python bench/bench_pipeline.py [--src ../shared/quickdraw/simplified] [--batch 64] [--size 224]
                                   [--workers 0 1 2] [--rounds 3] [--work DIR]

Four paths, each a torch DataLoader (batch of ``--batch`` sketches in a shuffled order, the
default collate) followed by the views of the pretext task in the main process, as the
trainer runs them:

- **released**: the paper's released pipeline. Every sketch is a file made beforehand (not
  timed): a 224 px PNG (8-bit grey, rendered by ``data.render.render``) or a ``.npy`` stroke
  tensor (100 x 4 float32), read one sample at a time (``PIL.Image.open`` + ``np.array``,
  ``np.load``) and then turned into views one sample at a time
  (``algorithms.reference.reference_views``). It pays neither rendering nor tensorising.
- **reference**: this project's per-sample reference path from the store: ``RasterDataset``
  / ``StrokeDataset`` one sketch at a time (``batched = False``), then ``reference_views``.
- **per-sketch loader**: the datasets one sketch at a time, then the batched views
  (``algorithm.views``): this project before its loaders built whole batches (issue 19's
  "this project" column).
- **float32 batches** (rasters): the datasets build whole batches with array operations
  (packed drawings, ``render_packed``) as float32 and ``algorithm.views`` makes the views
  of the batch: this project before its loaders sent uint8 ink levels.
- **loader alone**: the batched path without the views: what the host pays a sketch when
  the views are made on a GPU, as the trainer makes them on the training device (the
  released pipeline made its views on the host, per sample, so its column includes them).
- **batched**: this project's path, as the trainer runs it on the CPU: the datasets build whole
  batches with array operations (stroke tensors gathered from the split prepared once;
  rasters drawn by ``render_packed`` and sent as uint8 ink levels, ``train.uint8_rasters``)
  and ``algorithm.views`` makes the views of the batch (turning levels into float32).
- **drawn once** (rasters): the batched path with ``data.raster_cache``: the levels are
  gathered from the split's rasters drawn once and cached beside the store (built before
  the runs, timed) instead of drawn. The same pixels; 50 kB a 224 px sketch on disk. The
  trainer does this by default for a split whose cache takes at most 2 GB (this sample's
  does); **batched** is then its path for larger splits, or ``data.raster_cache=False``.

Every path collates as the trainer does (``data.collate_samples``: a batch the dataset
built at once is handed on as it is).

With ``--workers 0`` everything runs in this process, torch and OpenCV on one thread: the per-core
rate. With N workers, N loader processes fill batches while this process makes the views;
on a machine with fewer than N + 1 cores they share them. "Floor" (rasters) is the time to
write the bytes every path must write for a sketch (its raster in the loader's batch and
its views, all float32 as before ink levels) with plain copies, as ``bench_views.copy_floor``
measures it.

Timing: the first two batches of each run (worker start-up, first-touch page faults) are
not timed; each figure is the best of ``--rounds`` runs, the paths taking turns, so a
neighbour's load on a shared machine hits them alike. Disk: the store's arrays, and the
stroke tensors and rasters cached beside it, per 1,000 sketches and extrapolated to the
paper's 3,829,500 sketches, and the time to prepare each once.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout
sys.path.insert(0, str(ROOT / "bench"))

from algorithms import build_algorithm  # noqa: E402
from algorithms.reference import reference_views  # noqa: E402
from bench_prepare import _cpu  # noqa: E402
from bench_views import copy_floor  # noqa: E402
from data.datasets import RasterDataset, StrokeDataset, collate_samples  # noqa: E402
from data.prepare import prepare  # noqa: E402
from data.render import render  # noqa: E402
from data.sketch import BOX, fit_to_box  # noqa: E402
from data.store import StoreSketches  # noqa: E402
from data.strokes import to_stroke_tensor  # noqa: E402
from utils.host_memory import keep_freed_memory  # noqa: E402

FULL_KEPT = 3_829_500  # the paper's store: 345 classes x 11,100 sketches
TASKS = (("rotation", "raster", {}), ("deformation", "raster", {"module": "released"}),
         ("rotation", "stroke", {}), ("deformation", "stroke", {"module": "released"}))
PATHS = ("released", "reference", "per-sketch loader", "float32 batches", "batched", "drawn once", "loader alone")
#: Paths that build whole batches (timed over --batches; the others over --slow-batches).
FAST = ("float32 batches", "batched", "drawn once", "loader alone")
#: Paths only rasters have.
RASTER_ONLY = ("float32 batches", "drawn once")
WARM_BATCHES = 2


def paths_for(modality: str) -> tuple[str, ...]:
    """The paths measured for a branch: float32 batches are the batched path for strokes, and
    strokes are prepared once anyway."""
    return PATHS if modality == "raster" else tuple(p for p in PATHS if p not in RASTER_ONLY)


class ReleasedFiles(Dataset):
    """One file per sketch, read per sample as the released code reads its PNG / .npy files."""

    def __init__(self, files: list[Path], labels: np.ndarray) -> None:
        self.files, self.labels = files, labels

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path = self.files[i]
        if path.suffix == ".png":
            with Image.open(path) as image:
                x = torch.from_numpy(np.array(image)).unsqueeze(0).float().div_(255.0)
        else:
            x = torch.from_numpy(np.load(path))
        return x, int(self.labels[i])


def write_released_files(source: StoreSketches, folder: Path, size: int) -> dict[str, list[Path]]:
    """Every sketch of ``source`` as a PNG raster and a .npy stroke tensor (the released
    pipeline's inputs), made once by this project's own reference encoders."""
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, list[Path]] = {"raster": [], "stroke": []}
    for i in range(len(source)):
        strokes = fit_to_box(source[i].strokes, box=BOX, center=True)
        png, npy = folder / f"{i}.png", folder / f"{i}.npy"
        image = np.round(render(strokes, size=size) * 255.0).astype(np.uint8)
        Image.fromarray(image).save(png)
        np.save(npy, to_stroke_tensor(strokes))
        out["raster"].append(png)
        out["stroke"].append(npy)
    return out


def datasets_for(modality: str, path: str, source: StoreSketches, files: dict[str, list[Path]],
                 size: int, algorithm) -> Dataset:
    if path == "released":
        return ReleasedFiles(files[modality], source.labels)
    if modality == "raster":
        # uint8 ink levels where the trainer sends them (train.uint8_rasters, its default).
        levels = path in ("batched", "drawn once", "loader alone") and algorithm.takes_ink_levels
        ds = RasterDataset(source, image_size=size, ink_levels=levels, cache=path == "drawn once")
    else:
        ds = StrokeDataset(source)
    ds.batched = path in FAST
    return ds


def views_for(path: str, algorithm):
    if path in ("released", "reference"):
        return lambda x, y: reference_views(algorithm, x, y)
    if path == "loader alone":
        return lambda x, y: None  # the views are made on the training device (a GPU)
    return algorithm.views


def rate(ds: Dataset, views, batch: int, batches: int, workers: int, seed: int) -> float:
    """Sketches per second from the loader to the views, after WARM_BATCHES untimed batches."""
    need = (batches + WARM_BATCHES) * batch
    generator = torch.Generator().manual_seed(seed)
    order = torch.cat([torch.randperm(len(ds), generator=generator) for _ in range(-(-need // len(ds)))])[:need]
    loader = DataLoader(ds, batch_size=batch, sampler=order.tolist(), num_workers=workers, collate_fn=collate_samples)
    it = iter(loader)
    for _ in range(WARM_BATCHES):
        views(*next(it))
    t0 = time.perf_counter()
    for _ in range(batches):
        views(*next(it))
    elapsed = time.perf_counter() - t0
    del it
    return batches * batch / elapsed


def folder_bytes(paths) -> int:
    return sum(p.stat().st_size for p in paths)


def row(*cells: object) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def add_sample_arguments(p: argparse.ArgumentParser) -> None:
    """--src, --limit, --batch and --size: the real sketches and the batch (shared with
    bench_raster_steps.py)."""
    p.add_argument("--src", default=str(ROOT.parent / "shared" / "quickdraw" / "simplified"),
                   help="Quick, Draw! files to prepare the store from (default: the shared real sample)")
    p.add_argument("--limit", type=int, default=0, help="keep only this many sketches per class (0: all)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--size", type=int, default=224, help="raster side in pixels")


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_sample_arguments(p)
    p.add_argument("--batches", type=int, default=40, help="timed batches of the batched path per run")
    p.add_argument("--slow-batches", type=int, default=8, help="timed batches of the other two paths per run")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--rounds", type=int, default=3, help="runs of each measurement; the best is kept")
    p.add_argument("--work", help="folder for the store and the released files (default: a temporary one, removed)")
    p.add_argument("--no-keep-host-memory", action="store_true",
                   help="glibc's default malloc instead of the trainer's default train.keep_host_memory")
    args = p.parse_args(argv)
    if args.batch < 1 or args.batches < 1 or args.slow_batches < 1 or args.rounds < 1:
        p.error("--batch, --batches, --slow-batches and --rounds must be >= 1")
    if any(w < 0 for w in args.workers) or 0 not in args.workers:
        p.error("--workers must be >= 0 and include 0 (the per-core rate)")
    torch.set_num_threads(1)
    cv2.setNumThreads(1)  # the per-core rate: OpenCV's own thread pool would split large calls
    kept = not args.no_keep_host_memory and keep_freed_memory()
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bench_pipeline_"))
    try:
        return _run(args, work, kept)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)


def _run(args, work: Path, kept: bool) -> dict:
    store = work / "store"
    per_class = {"train": args.limit or 10**9, "val": 0, "query": 0, "gallery": 0}
    if not (store / "meta.json").is_file():
        prepare([args.src], store, per_class=per_class, progress=False, log=lambda _: None)
    source = StoreSketches(store, "train")
    n = len(source)
    # Stroke tensors prepared once (timed from scratch), then the released pipeline's files.
    for old in (store / "train").glob("stroke_tensors_*"):
        shutil.rmtree(old)
    t0 = time.perf_counter()
    source.stroke_tensors(100, center=True, progress=False)
    prepare_s = time.perf_counter() - t0
    for old in (store / "train").glob("rasters_*"):
        shutil.rmtree(old)
    t0 = time.perf_counter()
    raster_table = source.raster_levels(args.size, progress=False)
    if raster_table is None:
        raise SystemExit(f"{store}: no room for the raster cache (see above): pass --limit or --work elsewhere")
    raster_s = time.perf_counter() - t0
    files = write_released_files(source, work / "released", args.size)

    store_bytes = folder_bytes((store / "train").glob("*.npy"))
    cache_bytes = folder_bytes((store / "train" / "stroke_tensors_T100_centred").glob("*"))
    raster_bytes = folder_bytes(raster_table.folder.glob("*"))
    released_bytes = folder_bytes(files["raster"]) + folder_bytes(files["stroke"])

    print(f"machine: {_cpu()}, {os.cpu_count()} logical CPUs; python {platform.python_version()}, "
          f"torch {torch.__version__}, numpy {np.__version__}; torch and OpenCV 1 thread in the main process; "
          f"{'freed host memory kept (train.keep_host_memory)' if kept else 'glibc default malloc'}")
    print(f"data: {n} real sketches ({args.src}), batch {args.batch}, rasters {args.size} px, strokes 100 x 4; "
          f"best of {args.rounds} runs; {args.batches} timed batches (batched), {args.slow_batches} (others)\n")

    results: dict[tuple, float] = {}
    floors: dict[str, float] = {}
    for task, modality, params in TASKS:
        algorithm = build_algorithm(task, modality, **params)
        paths = paths_for(modality)
        views = {path: views_for(path, algorithm) for path in paths}
        sets = {path: datasets_for(modality, path, source, files, args.size, algorithm) for path in paths}
        for workers in args.workers:
            for r in range(args.rounds):
                for path in paths:
                    batches = args.batches if path in FAST else args.slow_batches
                    got = rate(sets[path], views[path], args.batch, batches, workers, seed=r)
                    key = (task, modality, path, workers)
                    results[key] = max(results.get(key, 0.0), got)
        if modality == "raster":
            x = torch.stack([sets["float32 batches"][i][0] for i in range(args.batch)])
            n_views = len(algorithm.views(x, torch.zeros(args.batch, dtype=torch.long))[1])
            # The loader's batch plus the views: (1 + views per sketch) copies of the batch.
            floors[task] = args.batch / copy_floor([x], n_views + args.batch, args.rounds)

    print(row("task", "branch", *[f"{path} sketches/s" for path in PATHS], "vs released", "vs reference",
              "vs per-sketch loader", "vs float32 batches", "write floor sketches/s", "batched / floor",
              "drawn once vs released", "drawn once / floor", "loader alone vs released"))
    print(row(*["---"] * (len(PATHS) + 11)))
    for task, modality, _ in TASKS:
        rel, ref, before, f32, fast, once, alone = (results.get((task, modality, path, 0)) for path in PATHS)
        floor = floors.get(task) if modality == "raster" else None
        print(row(task, modality, *[f"{v:,.0f}" if v else "-" for v in (rel, ref, before, f32, fast, once, alone)],
                  f"{fast / rel:.1f}x", f"{fast / ref:.1f}x", f"{fast / before:.1f}x",
                  f"{fast / f32:.2f}x" if f32 else "-", f"{floor:,.0f}" if floor else "-",
                  f"{fast / floor:.0%}" if floor else "-", f"{once / rel:.1f}x" if once else "-",
                  f"{once / floor:.0%}" if once and floor else "-", f"{alone / rel:.1f}x"))

    others = [w for w in args.workers if w != 0]
    if others:
        print(f"\nLoader workers (sketches/s; the views in the main process; {os.cpu_count()} logical CPUs):\n")
        print(row("task", "branch", "path", *[f"workers {w}" for w in args.workers], *[f"{w} vs 0" for w in others]))
        print(row(*["---"] * (3 + len(args.workers) + len(others))))
        for task, modality, _ in TASKS:
            for path in paths_for(modality):
                rates = [results[(task, modality, path, w)] for w in args.workers]
                base = results[(task, modality, path, 0)]
                print(row(task, modality, path, *[f"{v:,.0f}" for v in rates],
                          *[f"{results[(task, modality, path, w)] / base:.2f}x" for w in others]))

    per_k = lambda b: b / n * 1000  # noqa: E731
    print("\nDisk (measured on these sketches; extrapolated linearly to the paper's 3,829,500):\n")
    print(row("what", "bytes / 1,000 sketches", "3,829,500 sketches"))
    print(row(*["---"] * 3))
    for what, b in (("store arrays (uint8 points, offsets, labels, key_ids)", store_bytes),
                    ("stroke tensors prepared once (T = 100, centred)", cache_bytes),
                    (f"rasters drawn once ({args.size} px uint8 levels, data.raster_cache)", raster_bytes),
                    (f"released pipeline's files ({args.size} px PNG + .npy per sketch, file sizes)", released_bytes)):
        print(row(what, f"{per_k(b) / 1000:,.0f} kB", f"{per_k(b) * FULL_KEPT / 1000 / 1e9:.2f} GB"))
    print(f"\npreparing the stroke tensors once: {prepare_s:.2f} s for {n} sketches, "
          f"{prepare_s / n * 1000:.3f} s / 1,000, {prepare_s / n * FULL_KEPT / 60:.1f} min for 3,829,500 (one core)")
    print(f"drawing the rasters once: {raster_s:.2f} s for {n} sketches, "
          f"{raster_s / n * 1000:.3f} s / 1,000, {raster_s / n * FULL_KEPT / 60:.1f} min for 3,829,500 (one core)")
    return {"results": results, "floors": floors, "sketches": n, "store_bytes": store_bytes,
            "cache_bytes": cache_bytes, "raster_bytes": raster_bytes, "released_bytes": released_bytes,
            "prepare_s": prepare_s, "raster_s": raster_s}


if __name__ == "__main__":
    main()
