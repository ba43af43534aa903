"""How an epoch's data cost grows with the dataset size (built-in synthetic sketches, 1 thread).

    python bench/bench_growth.py [--sizes 1000 4000 16000] [--image-size 224]

For each N it measures, on the CPU in one process (``num_workers=0``, as with
``--workers 0``):

- *synthetic*: build ``SyntheticSketches`` + the dataset, then one shuffled epoch of N
  sketches through a DataLoader (batch 64) for ``RasterDataset`` (``--image-size`` px) and
  ``StrokeDataset`` (100 x 4). Synthetic sketches are drawn on demand, so this includes
  the drawing (about 1 ms a sketch), which a real store does not pay.
- *store*: the same N sketches written to a packed store (``data.store``, the format
  ``data.prepare`` writes; coordinates rounded to the 0..255 grid), then opening it
  (``StoreSketches``: meta.json + memory-mapped arrays) and the same two epochs from it.

Per-sketch cost should be flat in N (nothing in a dataset is O(N) per item) and opening a
store should not grow with N (it reads headers only). Prints Markdown tables.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data.datasets import RasterDataset, StrokeDataset  # noqa: E402
from data.store import StoreSketches, StoreWriter  # noqa: E402
from data.synthetic import SyntheticSketches  # noqa: E402

NUM_CLASSES = 12
BATCH = 64


def epoch_seconds(dataset) -> float:
    """One shuffled pass over the dataset in batches of 64, in this process."""
    loader = DataLoader(dataset, batch_size=BATCH, shuffle=True, num_workers=0,
                        generator=torch.Generator().manual_seed(0))
    t0 = time.perf_counter()
    for _ in loader:
        pass
    return time.perf_counter() - t0


def write_store(path: Path, sketches: list, class_names: tuple[str, ...]) -> None:
    """A train split holding the given sketches, grouped by class as data.prepare does."""
    with StoreWriter(path, len(class_names)) as writer:
        for label in range(len(class_names)):
            mine = [s for s in sketches if s.label == label]
            rows, lengths = [], []
            for sketch in mine:
                n = 0
                for stroke in sketch.strokes:
                    r = np.zeros((len(stroke), 3), dtype=np.uint8)
                    r[:, :2] = np.clip(np.rint(stroke), 0, 255)
                    r[-1, 2] = 1
                    rows.append(r)
                    n += len(stroke)
                lengths.append(n)
            points = np.concatenate(rows) if rows else np.zeros((0, 3), np.uint8)
            writer.append("train", points, np.asarray(lengths), label, [s.key_id for s in mine])
        writer.commit({"class_names": list(class_names), "seed": 0, "source": "bench_growth (synthetic)"})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 4000, 16000])
    p.add_argument("--image-size", type=int, default=224)
    args = p.parse_args()
    torch.set_num_threads(1)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, 1 thread, "
          f"workers 0; rasters {args.image_size} px, strokes 100 x 4, DataLoader batch {BATCH}, shuffled")
    print()
    print("| source | N | open/build ms | raster epoch s | raster us/sketch | stroke epoch s | stroke us/sketch |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            per_class = -(-n // NUM_CLASSES)
            t0 = time.perf_counter()
            source = SyntheticSketches("train", per_class=per_class, num_classes=NUM_CLASSES, seed=0)
            raster, stroke = RasterDataset(source, image_size=args.image_size), StrokeDataset(source)
            build = time.perf_counter() - t0
            count = len(source)
            t_r, t_s = epoch_seconds(raster), epoch_seconds(stroke)
            print(f"| synthetic | {count:,} | {1000 * build:.2f} | {t_r:.2f} | {1e6 * t_r / count:,.0f} | "
                  f"{t_s:.2f} | {1e6 * t_s / count:,.0f} |", flush=True)

            path = Path(tmp) / f"store_{n}"
            write_store(path, [source[i] for i in range(count)], source.class_names)
            t0 = time.perf_counter()
            store = StoreSketches(path, "train")
            raster, stroke = RasterDataset(store, image_size=args.image_size), StrokeDataset(store)
            opened = time.perf_counter() - t0
            t_r, t_s = epoch_seconds(raster), epoch_seconds(stroke)
            print(f"| store | {len(store):,} | {1000 * opened:.2f} | {t_r:.2f} | {1e6 * t_r / count:,.0f} | "
                  f"{t_s:.2f} | {1e6 * t_s / count:,.0f} |", flush=True)


if __name__ == "__main__":
    main()
