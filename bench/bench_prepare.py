"""Time and disk of ``data.prepare`` on the real Quick, Draw! sample, per 1,000 sketches,
extrapolated to the paper's 3,829,500-sketch store (345 classes x 11,100).

    python bench/bench_prepare.py [--sample ../shared/quickdraw] [--repeat 3]

Prints Markdown tables (recorded in bench/RESULTS.md). What is measured:

- *index*: reading every line of the simplified ndjson files for its key_id, plus the
  split hash. On the full dataset this runs over every drawing of every class file
  (about 50 million, Google's count), not only the 11,100 per class that are kept.
- *prepare*: a whole run (index + decode + write) over one folder of the sample, where
  every sketch is kept, so its rate is the cost per *kept* sketch.
- *store*: bytes on disk per 1,000 kept sketches; *open*: opening a 3.8-million-sketch split
  (sparse files of the full size) and reading one sketch; *read*: sketches per second
  through ``StoreSketches`` and through the raster dataset at 224 px.

Everything runs in one process (``--workers 1``): with N workers the decode part divides
by about N, the index part is limited by disk reads.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from data.datasets import RasterDataset  # noqa: E402
from data.formats import NdjsonSource, Report  # noqa: E402
from data.prepare import prepare, split_hash  # noqa: E402
from data.store import StoreSketches  # noqa: E402

FULL_KEPT = 3_829_500  # 345 x (9,000 + 1,000 + 100 + 1,000)
FULL_DRAWINGS = 50_000_000  # Google: "50 million drawings across 345 categories" (rounded)


def _best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def _size(path: Path) -> int:
    """Bytes of a store's arrays (meta.json and report.json are a fixed few hundred kB)."""
    return sum(p.stat().st_size for p in path.rglob("*.npy"))


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sample", default=str(Path(__file__).resolve().parents[2] / "shared" / "quickdraw"))
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    sample = Path(args.sample)
    tmp = Path(tempfile.mkdtemp(prefix="bench_prepare_"))
    huge = {"train": 10**9, "val": 0, "query": 0, "gallery": 0}  # keep everything in one split
    print(f"machine: {platform.system()} {platform.machine()}, {_cpu()}, {os.cpu_count()} logical CPUs; "
          f"python {platform.python_version()}, numpy {np.__version__}\n")
    try:
        # --- index only (every line's key_id + split hash), simplified ndjson
        files = sorted((sample / "simplified").glob("*.ndjson"))
        n_lines = sum(1 for f in files for line in f.open("rb") if line.strip())
        in_bytes = sum(f.stat().st_size for f in files)

        def index_all():
            for f in files:
                src = NdjsonSource(f)
                for key, _ in src.index(Report()):
                    split_hash(0, key)
                src.close()

        t_index = _best(index_all, args.repeat)

        rows = []
        for folder in ("simplified", "raw", "sketchrnn_npz"):
            out = tmp / f"store_{folder}"

            def run():
                if out.exists():
                    shutil.rmtree(out)
                prepare([sample / folder], out, per_class=huge, progress=False, log=lambda _: None)

            t = _best(run, args.repeat)
            meta = json.loads((out / "meta.json").read_text())
            n = sum(s["sketches"] for s in meta["splits"].values())
            pts = sum(s["points"] for s in meta["splits"].values())
            src_bytes = sum(f.stat().st_size for f in (sample / folder).iterdir())
            rows.append((folder, n, pts / n, src_bytes / n * 1000, _size(out) / n * 1000, t / n * 1000))

        print("| input (sample folder) | sketches | points/sketch | input bytes / 1,000 | store arrays / 1,000 "
              "| prepare s / 1,000 |")
        print("|---|---|---|---|---|---|")
        for folder, n, ppt, ib, sb, ts in rows:
            print(f"| {folder} | {n} | {ppt:.1f} | {ib / 1e3:,.0f} kB | {sb / 1e3:,.0f} kB | {ts:.3f} |")
        print(f"\nindex only (key_id + split hash), simplified ndjson: {n_lines} lines, {in_bytes / 1e6:.1f} MB, "
              f"{t_index / n_lines * 1000:.4f} s / 1,000 lines")

        # --- opening a full-size split, random reads
        big = tmp / "big"
        (big / "train").mkdir(parents=True)
        n_big = FULL_KEPT
        ppt = rows[0][2]
        per = int(round(ppt))
        fmt = np.lib.format
        fmt.open_memmap(big / "train" / "points.npy", "w+", np.uint8, (n_big * per, 3)).flush()
        off = fmt.open_memmap(big / "train" / "offsets.npy", "w+", np.int64, (n_big + 1,))
        off[:] = np.arange(n_big + 1, dtype=np.int64) * per
        off.flush()
        del off
        fmt.open_memmap(big / "train" / "labels.npy", "w+", np.int16, (n_big,)).flush()
        fmt.open_memmap(big / "train" / "key_ids.npy", "w+", "S16", (n_big,)).flush()
        (big / "meta.json").write_text(json.dumps({
            "format": "quickdraw-sketch-store", "version": 1, "class_names": ["x"], "num_classes": 1,
            "splits": {"train": {"sketches": n_big, "points": n_big * per}}}))
        t0 = time.perf_counter()
        src = StoreSketches(big, "train")
        _ = src[n_big - 1]
        t_open = time.perf_counter() - t0
        t0 = time.perf_counter()
        _ = src.labels
        t_labels = time.perf_counter() - t0

        real = StoreSketches(tmp / "store_simplified", "train")
        rng = np.random.default_rng(0)
        idx = rng.integers(0, len(real), 2000)
        t_get = _best(lambda: [real[int(i)] for i in idx], args.repeat) / len(idx)
        ds = RasterDataset(real, image_size=224)
        t_raster = _best(lambda: [ds[int(i)] for i in idx[:300]], 1) / 300
        print(f"\nopen a {n_big:,}-sketch split + read its last sketch: {t_open * 1000:.1f} ms; "
              f"all its labels: {t_labels * 1000:.0f} ms")
        print(f"random access: {1 / t_get:,.0f} sketches/s (StoreSketches), "
              f"{1 / t_raster:,.0f} sketches/s (RasterDataset, 224 px), one process")

        # --- extrapolation to the full store
        simp = rows[0]
        store_gb = simp[4] / 1000 * FULL_KEPT / 1e9
        dl_gb = simp[3] / 1000 * FULL_DRAWINGS / 1e9
        t_full = t_index / n_lines * FULL_DRAWINGS + simp[5] / 1000 * FULL_KEPT
        t_raw = rows[1][5] / 1000 * FULL_KEPT
        print("\n| full dataset (extrapolated) | value |")
        print("|---|---|")
        print(f"| download, simplified ndjson ({FULL_DRAWINGS / 1e6:.0f} M drawings x sample bytes/drawing) "
              f"| {dl_gb:.1f} GB |")
        print(f"| store, {FULL_KEPT:,} sketches | {store_gb:.2f} GB |")
        print(f"| peak disk while re-preparing (old store + new one) | {2 * store_gb:.2f} GB |")
        print(f"| prepare from simplified: index {FULL_DRAWINGS / 1e6:.0f} M lines + decode/write kept | "
              f"{t_full / 60:.0f} min (1 process) |")
        print(f"| prepare the same count from raw ndjson (decode incl. simplification only) | "
              f"{t_raw / 60:.0f} min (1 process) |")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
