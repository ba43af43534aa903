"""The one in-memory sketch form, and the geometry that needs nothing else.

Every other module of :mod:`data` (rendering, stroke tensors, synthetic drawings, file
formats) speaks in terms of :class:`Sketch` or of its ``strokes`` tuple; this module
imports none of them.

Coordinate frame ("the 256 box"): absolute ``(x, y)`` positions in float32, ``x`` to the
right and ``y`` *down* (image convention, as in Google's Quick, Draw! files), nominally
inside ``[0, 255] x [0, 255]``. ``box`` below is the side of that square, 255 by default.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Union

import numpy as np

BOX: float = 255.0
"""Side of the coordinate box that Quick, Draw! simplified drawings live in (0..255)."""

Strokes = tuple[np.ndarray, ...]
"""A drawing: one float32 array of shape (n_i, 2) per stroke, in drawing order."""

StrokesLike = Union[Sequence[np.ndarray], Sequence[Sequence[Sequence[float]]]]


def validate_strokes(strokes: StrokesLike) -> None:
    """Check that ``strokes`` is a usable drawing; raise ``ValueError`` (one line) if not.

    Args:
        strokes: sequence of array-likes, each of shape (n_i, 2) with n_i >= 1.

    Raises:
        ValueError: no strokes, a stroke that is not (n, 2), a stroke with no point, or a
            non-finite coordinate.
    """
    if isinstance(strokes, np.ndarray) and strokes.dtype != object:
        raise ValueError(
            f"strokes must be a sequence of (n, 2) arrays, got one array of shape {strokes.shape}"
        )
    if len(strokes) == 0:
        raise ValueError("a sketch needs at least one stroke, got none")
    for i, stroke in enumerate(strokes):
        arr = np.asarray(stroke)
        if arr.ndim != 2 or arr.shape[1] != 2:
            raise ValueError(f"stroke {i} must have shape (n, 2), got {arr.shape}")
        if arr.shape[0] < 1:
            raise ValueError(f"stroke {i} has no points")
        if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
            raise ValueError(f"stroke {i} must hold real numbers, got dtype {arr.dtype}")
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"stroke {i} has a non-finite coordinate")


def as_strokes(strokes: StrokesLike) -> Strokes:
    """Validate and convert to the canonical form: a tuple of float32 (n_i, 2) arrays.

    The returned arrays are fresh copies, so callers may modify them.
    """
    validate_strokes(strokes)
    return tuple(np.array(s, dtype=np.float32).reshape(-1, 2) for s in strokes)


@dataclass(frozen=True, eq=False)
class Sketch:
    """One free-hand drawing.

    Attributes:
        strokes: tuple of float32 arrays, each (n_i, 2) absolute ``(x, y)`` in the 256 box
            (0..255, y down), in drawing order. Stored read-only (the sketch is frozen);
            anything that changes a drawing builds a new one.
        label: class index, -1 when unknown.
        key_id: the drawing's id. Quick, Draw! ``key_id`` values are decimal strings that
            can exceed 2**53, so they are kept as strings, never as numbers.
    """

    strokes: Strokes
    label: int = -1
    key_id: str = ""

    def __post_init__(self) -> None:
        strokes = as_strokes(self.strokes)
        for s in strokes:
            s.setflags(write=False)
        if not isinstance(self.key_id, str):
            raise ValueError(f"key_id must be a str (ids can exceed 2**53), got {type(self.key_id).__name__}")
        object.__setattr__(self, "strokes", strokes)
        object.__setattr__(self, "label", int(self.label))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sketch):
            return NotImplemented
        return (
            self.label == other.label
            and self.key_id == other.key_id
            and len(self.strokes) == len(other.strokes)
            and all(np.array_equal(a, b) for a, b in zip(self.strokes, other.strokes))
        )

    __hash__ = None  # type: ignore[assignment]  # arrays are not hashable

    def __repr__(self) -> str:
        return (
            f"Sketch(strokes={len(self.strokes)}, points={num_points(self)}, "
            f"label={self.label}, key_id={self.key_id!r})"
        )


def _strokes_of(sketch_or_strokes: Sketch | StrokesLike) -> Sequence[np.ndarray]:
    if isinstance(sketch_or_strokes, Sketch):
        return sketch_or_strokes.strokes
    return sketch_or_strokes  # type: ignore[return-value]


def num_points(sketch: Sketch | StrokesLike) -> int:
    """Total number of points over all strokes of a sketch (or of a strokes sequence)."""
    return int(sum(len(s) for s in _strokes_of(sketch)))


def bounds(strokes: Sketch | StrokesLike) -> tuple[float, float, float, float]:
    """Bounding box ``(xmin, ymin, xmax, ymax)`` of all points, in the drawing's units."""
    pts = np.concatenate([np.asarray(s, dtype=np.float64).reshape(-1, 2) for s in _strokes_of(strokes)])
    xmin, ymin = pts.min(axis=0)
    xmax, ymax = pts.max(axis=0)
    return float(xmin), float(ymin), float(xmax), float(ymax)


def fit_to_box(strokes: Sketch | StrokesLike, box: float = BOX, center: bool = True) -> Strokes:
    """Scale a drawing uniformly so that its larger extent equals ``box``, then place it.

    Args:
        strokes: the drawing (any units).
        box: side of the target square ``[0, box]^2`` (255 for the 256 box).
        center: True puts the centre of the bounding box at ``(box/2, box/2)``; False
            aligns it to the top-left corner (min x = min y = 0), as in Google's
            simplified data.

    Returns:
        New float32 strokes. A drawing with zero extent (one point, or all points equal)
        is not scaled (there is nothing to scale, and no division by zero): it is just
        moved to the centre, or to the origin when ``center`` is False.
    """
    src = as_strokes(_strokes_of(strokes))
    xmin, ymin, xmax, ymax = bounds(src)
    extent = max(xmax - xmin, ymax - ymin)
    scale = box / extent if extent > 0 else 1.0
    if center:
        offset = np.array([box - (xmax - xmin) * scale, box - (ymax - ymin) * scale]) / 2.0
    else:
        offset = np.zeros(2)
    origin = np.array([xmin, ymin])
    # Exact arithmetic stays inside [0, box]; the clip only removes rounding error
    # (e.g. -5e-17 where the larger axis should start at exactly 0).
    return tuple(
        np.clip((s.astype(np.float64) - origin) * scale + offset, 0.0, box).astype(np.float32) for s in src
    )


def rotate_quarter(strokes: Sketch | StrokesLike, k: int, box: float = BOX) -> Strokes:
    """Rotate a drawing by ``k`` counter-clockwise quarter turns *as displayed* (y down).

    The turn is about the centre of the box ``[0, box]^2``; one turn maps
    ``(x, y) -> (y, box - x)``. With the renderer's pixel mapping
    (``c * (size - 1) / box``) this is exactly ``np.rot90(image, k)`` (equivalently
    ``torch.rot90(img, k, dims=(-2, -1))``) of the rendered image. ``k`` may be any
    integer (taken mod 4; negative is clockwise).

    Returns:
        New float32 strokes, same shapes as the input.
    """
    src = as_strokes(_strokes_of(strokes))
    k = int(k) % 4
    out = []
    for s in src:
        x = s[:, 0].astype(np.float64)
        y = s[:, 1].astype(np.float64)
        for _ in range(k):
            x, y = y, box - x
        out.append(np.stack([x, y], axis=1).astype(np.float32))
    return tuple(out)


# ----------------------------------------------------------------------------- packed sketches
# Many sketches as one array of points: ``xy`` (P, 2) with the points of sketch b at
# ``xy[offsets[b]:offsets[b + 1]]``, ``stroke_end`` (P,) bool True on the last point of each
# stroke, and ``offsets`` (B + 1,) int64. The batched paths of the loaders (rendering, stroke
# tensors) work on this form with array operations instead of one Python call per sketch.


def ragged_index(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """int64 indices ``starts[0] .. starts[0] + lengths[0] - 1, starts[1] .. , ...`` in one array."""
    starts = np.asarray(starts, dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    firsts = np.cumsum(lengths) - lengths  # where each run begins in the output
    return np.repeat(starts - firsts, lengths) + np.arange(int(lengths.sum()), dtype=np.int64)


def pack_sketches(sketches: Sequence[Sketch | StrokesLike]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sketches (or their strokes) -> packed ``(xy float32 (P, 2), stroke_end bool (P,), offsets (B + 1,))``."""
    strokes = [as_strokes(_strokes_of(s)) for s in sketches]
    pieces = [s for sk in strokes for s in sk]
    if not pieces:
        return np.zeros((0, 2), np.float32), np.zeros(0, bool), np.zeros(1, np.int64)
    xy = np.concatenate(pieces)
    stroke_end = np.zeros(len(xy), dtype=bool)
    stroke_end[np.cumsum([len(s) for s in pieces]) - 1] = True
    offsets = np.zeros(len(strokes) + 1, dtype=np.int64)
    np.cumsum([sum(len(s) for s in sk) for sk in strokes], out=offsets[1:])
    return xy, stroke_end, offsets


def fit_packed(xy: np.ndarray, offsets: np.ndarray, box: float = BOX, center: bool = True) -> np.ndarray:
    """:func:`fit_to_box` of every sketch of a packed batch, with array operations.

    The same float64 operations in the same order as :func:`fit_to_box`, so the result is
    bit for bit what it gives sketch by sketch (tested on the real sample).

    Args:
        xy: (P, 2) coordinates of the packed sketches (any real dtype).
        offsets: (B + 1,) sketch boundaries; every sketch needs at least one point.
        box, center: as in :func:`fit_to_box`.

    Returns:
        float32 (P, 2).
    """
    offsets = np.asarray(offsets, dtype=np.int64)
    lengths = np.diff(offsets)
    if len(lengths) == 0:
        return np.zeros((0, 2), np.float32)
    if lengths.min() < 1:
        raise ValueError("every packed sketch needs at least one point")
    pts = np.asarray(xy, dtype=np.float32).astype(np.float64)
    starts = offsets[:-1]
    lo = np.minimum.reduceat(pts, starts, axis=0)  # (B, 2): xmin, ymin
    extents = np.maximum.reduceat(pts, starts, axis=0) - lo  # xmax - xmin, ymax - ymin
    extent = extents.max(axis=1)
    scale = np.ones_like(extent)
    np.divide(box, extent, out=scale, where=extent > 0)
    if center:
        shift = (box - extents * scale[:, None]) / 2.0
    else:
        shift = np.zeros_like(extents)
    out = (pts - np.repeat(lo, lengths, axis=0)) * np.repeat(scale, lengths)[:, None] + np.repeat(shift, lengths, axis=0)
    return np.clip(out, 0.0, box).astype(np.float32)
