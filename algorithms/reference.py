"""Per-sample reference path for every pretext view.

The released code built each view one sketch at a time in Python (a rotation or a
column-by-column warp per image). This module keeps that structure, in NumPy, one sample
at a time, so that the batched tensor path of ``algorithm.views`` can be checked against it
(``tests/algorithms/test_reference_views.py``) and measured against it (``bench/bench_views.py``).
It is not meant for training, though ``train.views="per_sample"`` selects it to show that
the fast path changes no number.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from .base import Algorithm, ink_to_float
from .deformation import deform_raster_reference
from .warps import AxisWarp


def _rotate_raster_one(img: np.ndarray, k: int) -> np.ndarray:
    """(C, H, W) image turned k counter-clockwise quarter turns as displayed."""
    return np.ascontiguousarray(np.rot90(img, k, axes=(1, 2)))


def _rotate_strokes_one(seq: np.ndarray, k: int) -> np.ndarray:
    """(L, 4) sequence turned k counter-clockwise quarter turns about (0.5, 0.5)."""
    out = seq.copy()
    valid = seq[:, 2] + seq[:, 3] > 0
    x, y = seq[valid, 0], seq[valid, 1]
    # The closed form of each turn (not k single turns: 1 - (1 - x) is not always x in float32).
    turned = {0: (x, y), 1: (y, 1 - x), 2: (1 - x, 1 - y), 3: (1 - y, x)}[k % 4]
    out[valid, 0], out[valid, 1] = turned
    return out


def _normalize_one(seq: np.ndarray) -> np.ndarray:
    """(L, 4) sequence re-centred and rescaled into the unit square, aspect kept."""
    out = seq.copy()
    valid = seq[:, 2] + seq[:, 3] > 0
    if not valid.any():
        return out
    xy = seq[valid, :2]
    lo, hi = xy.min(0), xy.max(0)
    scale = (hi - lo).max()
    scale = scale if scale > 0 else 1.0
    out[valid, :2] = (xy - (lo + hi) / 2) / scale + 0.5
    return out


def _warp_one(seq: np.ndarray, x_warp: AxisWarp, y_warp: AxisWarp) -> np.ndarray:
    out = seq.copy()
    valid = seq[:, 2] + seq[:, 3] > 0
    for column, warp in ((0, x_warp), (1, y_warp)):
        if not warp.is_identity:
            out[valid, column] = warp.f(seq[valid, column].astype(np.float64)).astype(seq.dtype)
    return out


def reference_views(algorithm: Algorithm, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Same contract as ``algorithm.views(x, y)``, computed one sample at a time (a uint8
    raster batch of ink levels is turned into floats first, ``level / 255``)."""
    algorithm.check_input(x)
    if x.dtype == torch.uint8:
        x = ink_to_float(x)
    name, raster = algorithm.name, algorithm.modality == "raster"
    batch = x.detach().cpu().numpy()
    if name == "supervised":
        return x, y
    if name == "rotation":
        turns = range(4)
        per_view = [[] for _ in turns]
        for sample in batch:
            for k in turns:
                per_view[k].append(_rotate_raster_one(sample, k) if raster else _rotate_strokes_one(sample, k))
    elif name == "deformation":
        module = algorithm.deformation
        per_view = [[], []]
        for sample in batch:
            if raster:
                per_view[0].append(sample.copy())
                per_view[1].append(np.stack([deform_raster_reference(c, module) for c in sample]))
            else:
                per_view[0].append(_normalize_one(sample))
                per_view[1].append(_normalize_one(_warp_one(sample, module.x, module.y)))
    else:
        raise ValueError(f"no per-sample reference for algorithm '{name}'")
    inputs = torch.from_numpy(np.stack([v for view in per_view for v in view])).to(x.device)
    targets = torch.arange(len(per_view), device=x.device).repeat_interleave(len(batch))
    return inputs, targets
