"""The TCN input: a drawing as a fixed-size ``(max_len, 4)`` stroke tensor (PROTOCOL §1).

Row layout, in drawing order: ``[x / box, y / box, p1, p2]`` with absolute coordinates
(so x, y lie in [0, 1] for a drawing inside the box); ``p1 = 1`` for a point inside a
stroke, ``p2 = 1`` for the last point of each stroke, so exactly one of them is 1 on every
real row. Rows after the drawing (padding) are all zero.

Rule for drawings with more than ``max_len`` points (the released code has none and
crashes on them); drawings with at most ``max_len`` points are kept exactly:

1. Simplify every stroke with Ramer-Douglas-Peucker (:func:`rdp`) using one common
   epsilon, chosen by bisection (20 steps) on ``[0, hi]`` as the smallest epsilon found
   whose total point count is <= ``max_len``. ``hi`` is the box diagonal
   (``box * sqrt(2)``), or the largest RDP distance in the drawing if that is larger
   (only for points outside the box), so that at ``hi`` every stroke is reduced to its
   endpoints. RDP always keeps the first and last point of each stroke (a 1-point
   stroke stays 1 point), and the count never grows as epsilon grows.
2. If even the endpoints alone exceed ``max_len`` (drawings with many strokes), take
   ``max_len`` points of the endpoint-only drawing at evenly spaced indices over the
   concatenated point sequence, ``unique(round(linspace(0, n - 1, max_len)))``; a kept
   point gets ``p2 = 1`` when it is the last kept point of its stroke. The first and
   last point of the whole drawing are always kept; some strokes may vanish.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .sketch import BOX, Sketch, Strokes, StrokesLike, as_strokes, ragged_index

STROKE_RULE: int = 1
"""Version of the encoding rule above. Stroke tensors prepared once and cached
(:class:`PackedStrokeTensors`) record it, and a cache made under another rule is rebuilt."""

BISECTION_STEPS: int = 20
"""Bisection steps for the RDP epsilon of the >max_len rule (resolution ~ diagonal / 2**20)."""


def _segment_distances(points: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance of each point (m, 2) to the line through a and b (to a itself if a == b)."""
    d = b - a
    norm = math.hypot(float(d[0]), float(d[1]))
    rel = points - a
    if norm == 0.0:
        return np.hypot(rel[:, 0], rel[:, 1])
    return np.abs(d[0] * rel[:, 1] - d[1] * rel[:, 0]) / norm


def rdp_thresholds(points: np.ndarray) -> np.ndarray:
    """For each point, the largest epsilon at which RDP still drops it.

    RDP splits at the farthest point whatever epsilon is, so its recursion tree is the same
    for every epsilon and only gets cut off earlier for larger ones: a point survives
    ``rdp(points, eps)`` exactly when ``threshold > eps``. The threshold of an interior
    point is the minimum of the split distances on its path from the root (its own one
    included); points RDP never splits at get 0; both endpoints get ``inf``.

    Args:
        points: (n, 2) coordinates.

    Returns:
        float64 (n,) thresholds (same units as ``points``).
    """
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    n = len(pts)
    thr = np.zeros(n, dtype=np.float64)
    if n == 0:
        return thr
    thr[0] = thr[-1] = np.inf
    stack: list[tuple[int, int, float]] = [(0, n - 1, np.inf)]
    while stack:
        i, j, cap = stack.pop()
        if j - i < 2:
            continue
        dist = _segment_distances(pts[i + 1 : j], pts[i], pts[j])
        k = int(np.argmax(dist))
        dmax = float(dist[k])
        if dmax <= 0.0:
            continue  # all interior points on the chord: dropped at every epsilon >= 0
        k += i + 1
        t = min(cap, dmax)
        thr[k] = t
        stack.append((i, k, t))
        stack.append((k, j, t))
    return thr


def rdp(points: np.ndarray, epsilon: float) -> np.ndarray:
    """Ramer-Douglas-Peucker polyline simplification.

    Keeps the first and last point; recursively keeps the point farthest from the chord
    of a span when its distance is greater than ``epsilon`` (distance to the chord's line,
    or to its start when the chord has zero length, e.g. a closed loop).

    Args:
        points: (n, 2) coordinates, n >= 1.
        epsilon: tolerance (same units as ``points``), >= 0.

    Returns:
        (m, 2) array of the kept points, in order, same dtype as ``points``; m >= min(n, 2).
    """
    if epsilon < 0:
        raise ValueError(f"epsilon must be >= 0, got {epsilon}")
    pts = np.asarray(points)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"points must have shape (n, 2), got {pts.shape}")
    n = len(pts)
    if n <= 2:
        return pts.copy()
    work = pts.astype(np.float64)
    keep = np.zeros(n, dtype=bool)
    keep[0] = keep[-1] = True
    stack = [(0, n - 1)]
    while stack:
        i, j = stack.pop()
        if j - i < 2:
            continue
        dist = _segment_distances(work[i + 1 : j], work[i], work[j])
        k = int(np.argmax(dist))
        if dist[k] > epsilon:
            k += i + 1
            keep[k] = True
            stack.append((i, k))
            stack.append((k, j))
    return pts[keep].copy()


def _pen_rows(strokes: Strokes, box: float) -> np.ndarray:
    """(N, 4) float32 rows [x/box, y/box, p1, p2] for the given strokes, no padding."""
    rows = []
    for s in strokes:
        r = np.zeros((len(s), 4), dtype=np.float32)
        r[:, :2] = s / np.float32(box)
        r[:, 2] = 1.0
        r[-1, 2], r[-1, 3] = 0.0, 1.0
        rows.append(r)
    return np.concatenate(rows, axis=0)


def simplify_to_budget(strokes: Sketch | StrokesLike, max_len: int, box: float = BOX) -> np.ndarray:
    """Apply the module's >max_len rule; return the kept points as (N, 4) rows, N <= max_len.

    The rows are ``[x, y, p1, p2]`` in the drawing's own units (not divided by ``box``);
    ``box`` only sets the bisection range. Drawings with at most ``max_len`` points come
    back unchanged.
    """
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    src = as_strokes(strokes.strokes if isinstance(strokes, Sketch) else strokes)
    total = sum(len(s) for s in src)
    if total > max_len:
        thresholds = [rdp_thresholds(s) for s in src]
        finite = [t[np.isfinite(t)] for t in thresholds]
        largest = max((float(f.max()) for f in finite if f.size), default=0.0)
        lo, hi = 0.0, max(box * math.sqrt(2.0), largest)

        def count(eps: float) -> int:
            return int(sum(np.count_nonzero(t > eps) for t in thresholds))

        if count(hi) <= max_len:
            for _ in range(BISECTION_STEPS):
                mid = 0.5 * (lo + hi)
                if count(mid) <= max_len:
                    hi = mid
                else:
                    lo = mid
        src = tuple(s[t > hi] for s, t in zip(src, thresholds))
    rows = _pen_rows(src, box=1.0)
    if len(rows) > max_len:
        stroke_id = np.concatenate([np.full(len(s), i) for i, s in enumerate(src)])
        keep = np.unique(np.linspace(0, len(rows) - 1, max_len).round().astype(np.int64))
        rows = rows[keep]
        sid = stroke_id[keep]
        last = np.append(sid[1:] != sid[:-1], True)
        rows[:, 2] = (~last).astype(np.float32)
        rows[:, 3] = last.astype(np.float32)
    return rows


def to_stroke_tensor(strokes: Sketch | StrokesLike, max_len: int = 100, box: float = BOX) -> np.ndarray:
    """Encode a drawing as the TCN's stroke tensor (see the module docstring for the rule).

    Args:
        strokes: a Sketch or its strokes, (n_i, 2) absolute coordinates in the box.
        max_len: number of rows T (100 in the paper).
        box: coordinates are divided by this (255).

    Returns:
        float32 (T, 4): rows ``[x / box, y / box, p1, p2]``, zero rows as padding.
    """
    rows = simplify_to_budget(strokes, max_len, box=box)
    out = np.zeros((max_len, 4), dtype=np.float32)
    out[: len(rows)] = rows
    out[: len(rows), :2] = rows[:, :2] / np.float32(box)
    return out


def valid_rows(t: np.ndarray) -> np.ndarray:
    """Boolean mask (..., T) of real (non-padding) rows of stroke tensors (..., T, 4)."""
    t = np.asarray(t)
    return (t[..., 2] + t[..., 3]) > 0


def from_stroke_tensor(t: np.ndarray, box: float = BOX) -> Strokes:
    """Decode a stroke tensor (T, 4) back to strokes in box units.

    Drops padding rows (``p1 + p2 == 0``) and starts a new stroke after each row with
    ``p2 == 1``; trailing points without a closing ``p2`` form a last stroke.

    Returns:
        tuple of float32 (n_i, 2) arrays, coordinates multiplied by ``box``.

    Raises:
        ValueError: the tensor is not (T, 4) or has no real row.
    """
    arr = np.asarray(t, dtype=np.float32)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"stroke tensor must have shape (T, 4), got {arr.shape}")
    real = arr[valid_rows(arr)]
    if len(real) == 0:
        raise ValueError("stroke tensor has no real rows (all padding)")
    ends = np.nonzero(real[:, 3] > 0)[0] + 1
    pieces = np.split(real[:, :2] * np.float32(box), ends)
    return tuple(p.astype(np.float32) for p in pieces if len(p))


# ----------------------------------------------------------------------------- prepared once
# What the stroke tensor of a sketch holds does not change from epoch to epoch, so a whole
# split is encoded once (the >max_len rule is the costly part) into packed rows: the real
# rows of every sketch, concatenated, without padding. A batch is then one gather.


def packed_stroke_rows(
    xy: np.ndarray, stroke_end: np.ndarray, offsets: np.ndarray, max_len: int = 100, box: float = BOX
) -> tuple[np.ndarray, np.ndarray]:
    """The real rows of :func:`to_stroke_tensor` for every sketch of a packed batch.

    Sketches of at most ``max_len`` points are encoded with array operations; longer ones
    go through :func:`simplify_to_budget` one by one, as :func:`to_stroke_tensor` does.

    Args:
        xy: float32 (P, 2) points already fitted to the box (:func:`data.sketch.fit_packed`).
        stroke_end: (P,) True on the last point of each stroke.
        offsets: (B + 1,) sketch boundaries.
        max_len, box: as in :func:`to_stroke_tensor`.

    Returns:
        ``(rows, row_offsets)``: float32 (R, 4) rows ``[x / box, y / box, p1, p2]`` of all
        the sketches, no padding, and int64 (B + 1,) boundaries (at most ``max_len`` rows a
        sketch).
    """
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    xy = np.asarray(xy, dtype=np.float32)
    offsets = np.asarray(offsets, dtype=np.int64)
    lengths = np.diff(offsets)
    end = np.asarray(stroke_end, dtype=bool).copy()
    end[offsets[1:][lengths > 0] - 1] = True  # a sketch's last point ends its last stroke
    simplified = {}
    for b in np.flatnonzero(lengths > max_len).tolist():
        part = slice(offsets[b], offsets[b + 1])
        strokes = np.split(xy[part], np.flatnonzero(end[part])[:-1] + 1)
        simplified[b] = simplify_to_budget(strokes, max_len, box=box)
    counts = np.minimum(lengths, max_len)
    for b, kept in simplified.items():
        counts[b] = len(kept)
    row_offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(counts, out=row_offsets[1:])
    rows = np.empty((int(row_offsets[-1]), 4), dtype=np.float32)
    short = np.flatnonzero(lengths <= max_len)
    src = ragged_index(offsets[short], lengths[short])
    dst = ragged_index(row_offsets[short], lengths[short])
    rows[dst, :2] = xy[src] / np.float32(box)
    rows[dst, 2] = ~end[src]
    rows[dst, 3] = end[src]
    for b, kept in simplified.items():
        part = slice(row_offsets[b], row_offsets[b + 1])
        rows[part] = kept
        rows[part, :2] = kept[:, :2] / np.float32(box)
    return rows, row_offsets


class PackedStrokeTensors:
    """The stroke tensors of a whole split, prepared once; :meth:`gather` builds a batch.

    Args:
        rows: float32 (R + 1, 4): the real rows of every sketch (:func:`packed_stroke_rows`)
            followed by one row of zeros, which padding rows are gathered from. In memory
            or memory-mapped from a cache.
        row_offsets: int64 (N + 1,): sketch i's rows are ``rows[row_offsets[i]:row_offsets[i + 1]]``.
        max_len: T, the rows of a tensor.
    """

    def __init__(self, rows: np.ndarray, row_offsets: np.ndarray, max_len: int) -> None:
        # Plain ndarray views (of memory maps too): indexing an np.memmap costs more per call.
        rows, row_offsets = np.asarray(rows), np.asarray(row_offsets)
        if rows.ndim != 2 or rows.shape[1] != 4 or len(rows) != row_offsets[-1] + 1:
            raise ValueError(f"packed stroke rows of shape {rows.shape} do not fit offsets ending at {row_offsets[-1]} "
                             "(expected one more row: the zero row)")
        self.rows, self.row_offsets, self.max_len = rows, row_offsets, int(max_len)

    @classmethod
    def from_rows(cls, rows: np.ndarray, row_offsets: np.ndarray, max_len: int) -> "PackedStrokeTensors":
        """From :func:`packed_stroke_rows`'s output (the zero row is added here)."""
        return cls(np.concatenate([rows, np.zeros((1, 4), np.float32)]), row_offsets, max_len)

    def __len__(self) -> int:
        return len(self.row_offsets) - 1

    def gather(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """float32 (B, T, 4) stroke tensors of sketches ``indices``: bit for bit
        :func:`to_stroke_tensor` of each (tested on the real sample). One ``take`` of whole
        rows (a scatter into a zeroed batch measured three times slower)."""
        idx = np.asarray(indices, dtype=np.int64)
        starts = self.row_offsets[idx]
        step = np.arange(self.max_len)
        rows = np.where(step < (self.row_offsets[idx + 1] - starts)[:, None], starts[:, None] + step, len(self.rows) - 1)
        return self.rows.take(rows, axis=0)
