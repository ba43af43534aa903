"""The stroke warp's two forms after the cast to float32, over every float32 t in [0, 1].

    python bench/warp_forms.py [--step 1]

The deformation of strokes evaluates f in float64 and casts the result to float32. For the
released settings (a = 0, b = 1) ``AxisWarp.f`` takes the direct form, one sine,
``t + (t * (lam / 2)) * (sin 2t - sin 2)``; before, it took the sum-to-product form
``t + (lam t) * (cos(t + 1) sin(t - 1))`` (algorithms/warps.py). This counts, for each
released lam, the float32 inputs whose two float32 results differ, and by how many ulps,
over all 1,065,353,217 float32 values in [0, 1] (``--step k``: every k-th one). torch on
one thread, chunks of 2**24 values; about 100 s for both settings on one core.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from algorithms.warps import COMPRESS, EXPAND, AxisWarp, _warp  # noqa: E402

ONE_BITS = 0x3F800000  # the bits of 1.0f: float32 values 0 .. 1 are the bit patterns 0 .. ONE_BITS
CHUNK = 1 << 24


def compare(warp: AxisWarp, step: int = 1) -> dict:
    """Inputs counted, inputs whose float32 results differ, the largest difference in ulps
    and the largest differing input."""
    counted = differ = worst = 0
    largest = 0.0
    for lo in range(0, ONE_BITS + 1, CHUNK * step):
        hi = min(lo + CHUNK * step, ONE_BITS + 1)
        t32 = torch.arange(lo, hi, step, dtype=torch.int64).to(torch.int32).view(torch.float32)
        t = t32.double()
        direct = warp.f(t).float()
        product = _warp(t, warp.lam, warp.a, warp.b, torch.sin, torch.cos).float()
        ulps = (direct.view(torch.int32).long() - product.view(torch.int32).long()).abs()
        mask = ulps > 0
        counted += len(t32)
        if bool(mask.any()):
            differ += int(mask.sum())
            worst = max(worst, int(ulps.max()))
            largest = max(largest, float(t32[mask].max()))
    return {"inputs": counted, "differ": differ, "max_ulps": worst, "largest_input": largest}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--step", type=int, default=1, help="count every k-th float32 value (1: all of them)")
    args = p.parse_args(argv)
    if args.step < 1:
        p.error("--step must be >= 1")
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, one thread; float32 inputs in [0, 1], every {args.step}\n")
    print("| lam | inputs | results that differ | at most | largest such input | seconds |")
    print("| --- | --- | --- | --- | --- | --- |")
    found = {}
    for warp in (EXPAND, COMPRESS):
        t0 = time.perf_counter()
        got = found[warp.lam] = compare(warp, args.step)
        print(f"| {warp.lam:g} | {got['inputs']:,} | {got['differ']:,} | {got['max_ulps']} ulp | "
              f"{got['largest_input']:.3g} | {time.perf_counter() - t0:.0f} |")
    return found


if __name__ == "__main__":
    main()
