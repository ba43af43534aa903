"""Benchmark: retrieval evaluation time and peak memory against gallery size.

Random class-structured features (345 classes, 4096-d by default) are written to float16
``.npy`` files, then :func:`evaluation.metrics.retrieval.retrieval_metrics` ranks the whole gallery for
every query, streaming both files in blocks, in a fresh process per size, and reports wall
time and the process's peak resident memory (``ru_maxrss``: everything, torch included).

    python bench/bench_eval.py                                  # 10k, 50k, 345k gallery
    python bench/bench_eval.py --sizes 345000 --queries 34500   # the full protocol size

Each size uses ``gallery / 10`` queries unless ``--queries`` says otherwise (34,500 x
345,000 is the full protocol). Ranking time is linear in the number of queries (the gallery
is swept once per query chunk), so a run with fewer queries extrapolates; the table marks
extrapolated rows. At the smallest size the result is checked against the plain argsort
definition (:func:`evaluation.metrics.retrieval.reference_metrics`) on the first queries.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FULL_QUERIES = 34_500


def rss_mb() -> float:
    """Current resident memory of this process in MiB."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def generate(path: Path, n: int, dim: int, classes: int, seed: int, dtype: str, block: int = 8192) -> None:
    """Write (n, dim) features: class centre + noise, label i % classes, block by block."""
    import numpy as np
    import torch

    from evaluation.feature_matrix import NpyWriter

    g = torch.Generator().manual_seed(1234)  # the same class centres for queries and gallery
    centres = torch.randn(classes, dim, generator=g)
    g.manual_seed(seed)
    with NpyWriter(path, n, dtype) as w:
        for a in range(0, n, block):
            labels = torch.arange(a, min(a + block, n)) % classes
            w.write(0.2 * centres[labels] + torch.randn(len(labels), dim, generator=g))
    np.save(path.with_name(path.stem + ".labels.npy"), (np.arange(n) % classes).astype(np.int64))


def cmd_generate(args: argparse.Namespace) -> None:
    work = Path(args.work)
    for name, n, seed in (("gallery", args.gallery, 1), ("query", args.queries, 2)):
        path = work / f"{name}-{n}-{args.dim}-{args.classes}-{args.dtype}.npy"
        if not path.exists():
            generate(path, n, args.dim, args.classes, seed, args.dtype)


def cmd_run(args: argparse.Namespace) -> None:
    import numpy as np
    import torch

    from evaluation.feature_matrix import NpyReader
    from evaluation.metrics.retrieval import plan_chunks, reference_metrics, retrieval_metrics

    torch.set_num_threads(args.threads or torch.get_num_threads())
    work = Path(args.work)
    gp = work / f"gallery-{args.gallery}-{args.dim}-{args.classes}-{args.dtype}.npy"
    qp = work / f"query-{args.queries}-{args.dim}-{args.classes}-{args.dtype}.npy"
    g, q = NpyReader(gp), NpyReader(qp)
    gl = np.load(gp.with_name(gp.stem + ".labels.npy"))
    ql = np.load(qp.with_name(qp.stem + ".labels.npy"))
    base = rss_mb()
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    out = retrieval_metrics(q, ql, g, gl, topk=(1, 10, 100, 1000), memory_mb=args.memory_mb)
    seconds = time.perf_counter() - t0
    peak = peak_rss_mb()
    load_after = os.getloadavg()[0]
    exact = max_diff = None
    if args.check:
        # The same scores (one product of the same shape) must give the argsort reference's
        # AP (up to the order of a float sum, ~1e-16); the streamed run multiplied other block
        # shapes, so float32 rounding may swap near-tied items: report its largest difference.
        n = min(args.check, len(q))
        qs, ql_t = q.read(0, n), torch.tensor(ql[:n])
        gs = torch.cat([g.read(a, min(a + 8192, len(g))) for a in range(0, len(g), 8192)])
        ref = reference_metrics(qs, ql_t, gs, torch.tensor(gl), topk=(1, 10, 100, 1000))
        same = retrieval_metrics(qs, ql_t, gs, gl, topk=(1, 10, 100, 1000), chunk=n, block=len(g))
        exact = float((ref["ap"] - same["ap"]).abs().max())  # float sums in another order: ~1e-16
        max_diff = float((ref["ap"] - out["ap"][:n]).abs().max())
    print(json.dumps({
        "gallery": len(g), "queries": len(q), "dim": g.dim, "dtype": args.dtype, "memory_mb": args.memory_mb,
        "threads": torch.get_num_threads(), "seconds": round(seconds, 2),
        "ns_per_score": round(seconds / (len(g) * len(q)) * 1e9, 1),
        "peak_rss_mb": round(peak, 1), "rss_before_mb": round(base, 1), "plan": out["plan"],
        "plan_bytes_mb": round(plan_chunks(len(q), len(g), g.dim, int(np.bincount(gl).max()),
                                           args.memory_mb)["bytes"] / 2**20, 1),
        "mAP": round(out["mAP"], 4), "P@100": round(out["P@100"], 4), "exact_vs_argsort": exact,
        "streamed_max_abs_ap_diff": max_diff, "load_avg_before": round(load_before, 2),
        "load_avg_after": round(load_after, 2),
    }))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 50_000, 345_000], help="gallery sizes")
    p.add_argument("--queries", type=int, nargs="+", help="queries per size (default gallery / 10)")
    p.add_argument("--dim", type=int, default=4096)
    p.add_argument("--classes", type=int, default=345)
    p.add_argument("--dtype", choices=("float16", "float32"), default="float16", help="storage of the features")
    p.add_argument("--memory-mb", type=float, default=512, help="retrieval_metrics working-memory budget")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--work", help="folder for the feature files (default: a temporary folder, deleted)")
    p.add_argument("--keep", action="store_true", help="keep the generated files")
    p.add_argument("--check", type=int, default=200, help="queries checked against the argsort reference "
                   "at the smallest size (0: none)")
    p.add_argument("--_one", choices=("generate", "run"), help=argparse.SUPPRESS)
    p.add_argument("--gallery", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args._one:
        args.queries = args.queries[0]
        (cmd_generate if args._one == "generate" else cmd_run)(args)
        return 0

    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bench-eval-"))
    work.mkdir(parents=True, exist_ok=True)
    queries = args.queries or [max(1, n // 10) for n in args.sizes]
    if len(queries) == 1 and len(args.sizes) > 1:
        queries = queries * len(args.sizes)
    rows = []
    try:
        for i, (n, nq) in enumerate(zip(args.sizes, queries)):
            common = [sys.executable, __file__, "--gallery", str(n), "--queries", str(nq), "--dim", str(args.dim),
                      "--classes", str(args.classes), "--dtype", args.dtype, "--work", str(work),
                      "--memory-mb", str(args.memory_mb), "--threads", str(args.threads)]
            subprocess.run(common + ["--_one", "generate"], check=True)
            check = str(args.check if i == 0 else 0)
            done = subprocess.run(common + ["--_one", "run", "--check", check], check=True, capture_output=True,
                                  text=True)
            row = json.loads(done.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(json.dumps(row), flush=True)
            if not args.keep:
                for f in work.glob(f"*-{n}-*"):
                    f.unlink()
    finally:
        if not args.keep and not args.work:
            for f in work.iterdir():
                f.unlink()
            work.rmdir()

    print(f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"python {platform.python_version()}")
    print("| gallery | queries | dim | storage | budget | time (s) | ns / score | peak RSS (MiB) | "
          "RSS before ranking (MiB) | mAP | chunk / block | load avg before / after |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        plan = r["plan"]
        print(f"| {r['gallery']:,} | {r['queries']:,} | {r['dim']} | {r['dtype']} | {r['memory_mb']:g} MiB | "
              f"{r['seconds']:.1f} | {r['ns_per_score']} | {r['peak_rss_mb']:.0f} | {r['rss_before_mb']:.0f} | "
              f"{r['mAP']:.4f} | {plan['chunk']} / {plan['block']} | {r['load_avg_before']} / {r['load_avg_after']} |")
    for r in rows:
        if r["queries"] != FULL_QUERIES and r["gallery"] == 345_000:
            print(f"345,000 gallery x {FULL_QUERIES:,} queries, extrapolated linearly in the queries: "
                  f"{r['seconds'] * FULL_QUERIES / r['queries']:.0f} s")
        if r["exact_vs_argsort"] is not None:
            print(f"check at {r['gallery']:,}, first queries against the argsort reference: same scores, largest "
                  f"|AP difference| {r['exact_vs_argsort']:.2g}; streamed run, {r['streamed_max_abs_ap_diff']:.2g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
