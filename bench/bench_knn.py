"""Benchmark: what the kNN neighbours cost the retrieval pass.

kNN classification reads each query's nearest gallery items from the same streamed pass
that computes mAP (:func:`evaluation.metrics.retrieval.retrieval_metrics` with
``neighbours=k``): a running top-k merge per gallery block. This measures that pass with
``neighbours=0`` (the reference, measured in the same run) and with k = 20 (the default) and
200, on random class-structured features held in memory, repetitions interleaved, and
prints the medians and their ratios to the reference. CPU time of the process is reported
beside wall time because it is less disturbed by other jobs on a shared machine.

    python bench/bench_knn.py                       # 1,725 x 34,500, 1024-d, 3 repetitions
    python bench/bench_knn.py --gallery 345000 --queries 3450 --dim 4096
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evaluation.metrics.knn import knn_classify  # noqa: E402
from evaluation.metrics.retrieval import retrieval_metrics  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gallery", type=int, default=34_500)
    p.add_argument("--queries", type=int, default=1_725)
    p.add_argument("--dim", type=int, default=1024)
    p.add_argument("--classes", type=int, default=345)
    p.add_argument("--neighbours", type=int, nargs="+", default=[20, 200])
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args(argv)

    g = torch.Generator().manual_seed(0)
    centres = torch.randn(args.classes, args.dim, generator=g)
    gl, ql = torch.arange(args.gallery) % args.classes, torch.arange(args.queries) % args.classes
    gallery = 0.2 * centres[gl] + torch.randn(args.gallery, args.dim, generator=g)
    query = 0.2 * centres[ql] + torch.randn(args.queries, args.dim, generator=g)
    settings = [0] + list(args.neighbours)
    wall: dict[int, list[float]] = {n: [] for n in settings}
    cpu: dict[int, list[float]] = {n: [] for n in settings}
    results = {}
    load_before = os.getloadavg()[0]
    for _ in range(args.repeat):
        for n in settings:
            w, c = time.perf_counter(), time.process_time()
            out = retrieval_metrics(query, ql, gallery, gl, topk=(1, 10, 100), neighbours=n)
            wall[n].append(time.perf_counter() - w)
            cpu[n].append(time.process_time() - c)
            results[n] = out
    for n in settings[1:]:  # the neighbours change nothing else
        assert torch.equal(results[n]["ap"], results[0]["ap"])
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, python "
          f"{platform.python_version()}, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after")
    print(f"{args.queries:,} queries x {args.gallery:,} gallery, {args.dim}-d, {args.classes} classes, "
          f"median of {args.repeat}")
    print("| neighbours | wall (s) | CPU (s) | wall / reference | CPU / reference | kNN top-1 |")
    print("|---|---|---|---|---|---|")
    w0, c0 = statistics.median(wall[0]), statistics.median(cpu[0])
    for n in settings:
        w, c = statistics.median(wall[n]), statistics.median(cpu[n])
        top1 = "-"
        if n:
            nb = results[n]["neighbours"]
            top1 = f"{knn_classify(nb['index'], nb['score'], gl, ql, k=n)['top1']:.4f}"
        print(f"| {n or '0 (reference)'} | {w:.2f} | {c:.2f} | {w / w0:.3f} | {c / c0:.3f} | {top1} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
