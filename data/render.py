"""Raster rendering of a drawing: strokes in the 256 box -> a float32 image.

Pixel mapping: a box coordinate ``c`` (0..255) lands on pixel coordinate
``c * (size - 1) / 255``, with OpenCV's convention that integer pixel coordinates are pixel
*centres*. So box corners are the centres of the corner pixels, and a quarter turn of the
box (:func:`data.sketch.rotate_quarter`) is exactly a quarter turn of the pixel grid
(``np.rot90``), up to OpenCV's anti-aliasing, which is not perfectly rotation-symmetric.

Ink is bright (1.0) on a dark background (0.0), the polarity the released code uses (its
raster deformation merges columns with a bitwise OR, which keeps ink only when ink is the
bright value).
"""

from __future__ import annotations

import cv2
import numpy as np

from .sketch import BOX, Sketch, StrokesLike, as_strokes

INK_LEVELS: np.ndarray = np.arange(256, dtype=np.float32) / np.float32(255.0)
"""float32 value of each uint8 ink level: ``level / 255`` (what :func:`render` returns)."""

_SHIFT: int = 8
"""Fractional bits of the fixed-point coordinates handed to OpenCV (1/256 pixel)."""

RENDER_RULE: str = f"opencv-{cv2.__version__} anti-aliased polylines, {_SHIFT} fractional bits, ink 255 on 0, v1"
"""What the pixels depend on: a cache of rendered rasters made under another rule is
rebuilt (:meth:`data.store.StoreSketches.raster_levels`). OpenCV's version is part of it,
since its anti-aliasing may change between releases; bump the ``v`` when this module's
drawing changes."""


def line_thickness(line_width: float, size: int) -> int:
    """OpenCV ``thickness`` used for a pen of ``line_width`` box units at ``size`` pixels.

    ``max(1, round(line_width * size / 256))``. Note that OpenCV draws a thick line
    somewhat wider than ``thickness`` pixels (measured with OpenCV 5.0: thickness 1, 2, 3
    give about 1.4, 3.4, 5.4 pixels of ink across a line).
    """
    return max(1, int(round(line_width * size / 256.0)))


def render(
    strokes: Sketch | StrokesLike,
    size: int = 224,
    line_width: float = 3.0,
    box: float = BOX,
) -> np.ndarray:
    """Draw a sketch into a square grey image: :func:`render_levels` as float32 in [0, 1]
    (``level / 255``, :data:`INK_LEVELS`). Arguments as in :func:`render_levels`."""
    return render_levels(strokes, size=size, line_width=line_width, box=box).astype(np.float32) / 255.0


def render_levels(
    strokes: Sketch | StrokesLike,
    size: int = 224,
    line_width: float = 3.0,
    box: float = BOX,
) -> np.ndarray:
    """Draw a sketch into a square grey image of uint8 ink levels.

    Args:
        strokes: a :class:`~data.sketch.Sketch` or its strokes, each (n_i, 2) ``(x, y)``
            in the box ``[0, box]^2`` (y down). Points outside the box are clipped by
            the canvas. The drawing is *not* rescaled here: see
            :func:`data.sketch.fit_to_box`.
        size: output side S in pixels.
        line_width: pen width in box units (scaled with ``size``; see
            :func:`line_thickness`).
        box: side of the coordinate box (255 for Quick, Draw!).

    Returns:
        uint8 array (S, S): ink 255 on background 0, anti-aliased (``cv2.LINE_AA``) with
        sub-pixel vertex precision. A stroke with one point (or with all its points equal)
        is drawn as a dot.
    """
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    if line_width <= 0:
        raise ValueError(f"line_width must be > 0, got {line_width}")
    if isinstance(strokes, Sketch):
        strokes = strokes.strokes
    src = as_strokes(strokes)
    thickness = line_thickness(line_width, size)
    scale = (size - 1) / box * (1 << _SHIFT)
    canvas = np.zeros((size, size), dtype=np.uint8)

    lines: list[np.ndarray] = []
    dots: list[np.ndarray] = []
    for s in src:
        fixed = np.round(s.astype(np.float64) * scale).astype(np.int32)
        if len(fixed) == 1 or not np.any(fixed != fixed[0]):
            dots.append(fixed[0])
        else:
            lines.append(fixed.reshape(-1, 1, 2))
    if lines:
        cv2.polylines(canvas, lines, False, 255, thickness, cv2.LINE_AA, _SHIFT)
    for p in dots:
        centre = (int(p[0]), int(p[1]))
        if thickness > 1:
            # A zero-length thick line is OpenCV's round cap: the same dot a line end has.
            seg = np.array([centre, centre], dtype=np.int32).reshape(-1, 1, 2)
            cv2.polylines(canvas, [seg], False, 255, thickness, cv2.LINE_AA, _SHIFT)
        else:
            # A zero-length 1-pixel line draws (almost) nothing: use a filled disc instead.
            cv2.circle(canvas, centre, 1 << (_SHIFT - 1), 255, -1, cv2.LINE_AA, _SHIFT)
    return canvas


def render_packed(
    xy: np.ndarray,
    stroke_end: np.ndarray,
    offsets: np.ndarray,
    size: int = 224,
    line_width: float = 3.0,
    box: float = BOX,
) -> np.ndarray:
    """:func:`render_levels` for a whole batch of packed sketches (see :mod:`data.sketch`).

    The preparation that :func:`render_levels` does per stroke in Python (fixed-point coordinates,
    which strokes are dots) is done here for the whole batch with array operations; each
    sketch then costs the same OpenCV calls as in :func:`render_levels` (all its strokes in one
    ``cv2.polylines`` call, then its dots), drawn straight into the batch. The pixels are
    those of :func:`render_levels`, bit for bit (tested on the real sample).

    Args:
        xy: float32 (P, 2) points in the box (already fitted: see :func:`data.sketch.fit_packed`).
        stroke_end: (P,) True on the last point of each stroke (a sketch's last point ends
            its last stroke in any case).
        offsets: (B + 1,) sketch boundaries, every sketch at least one point.
        size, line_width, box: as in :func:`render`.

    Returns:
        uint8 (B, S, S) ink levels; :data:`INK_LEVELS` maps them to :func:`render`'s floats.
    """
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    if line_width <= 0:
        raise ValueError(f"line_width must be > 0, got {line_width}")
    offsets = np.asarray(offsets, dtype=np.int64)
    batch = len(offsets) - 1
    canvas = np.zeros((batch, size, size), dtype=np.uint8)
    if batch == 0:
        return canvas
    thickness = line_thickness(line_width, size)
    scale = (size - 1) / box * (1 << _SHIFT)
    fixed = np.round(np.asarray(xy, dtype=np.float32).astype(np.float64) * scale).astype(np.int32)
    # Stroke starts: each sketch's first point and the point after each stroke end.
    first = np.zeros(len(fixed), dtype=bool)
    first[1:] = np.asarray(stroke_end[:-1], dtype=bool)
    first[offsets[:-1]] = True
    starts = np.flatnonzero(first)
    # A stroke whose fixed-point vertices are all equal is a dot (as in render).
    same = (np.minimum.reduceat(fixed, starts, axis=0) == np.maximum.reduceat(fixed, starts, axis=0)).all(axis=1)
    is_dot = same.tolist()
    bounds = starts.tolist() + [len(fixed)]
    strokes = [fixed[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
    centres = fixed[starts].tolist()
    per_sketch = np.searchsorted(starts, offsets).tolist()  # stroke index range of each sketch
    dot_segment = np.zeros((2, 2), dtype=np.int32)
    for b in range(batch):
        image = canvas[b]
        lo, hi = per_sketch[b], per_sketch[b + 1]
        lines = [strokes[j] for j in range(lo, hi) if not is_dot[j]]
        if lines:
            cv2.polylines(image, lines, False, 255, thickness, cv2.LINE_AA, _SHIFT)
        for j in range(lo, hi):
            if is_dot[j]:
                centre = tuple(centres[j])
                if thickness > 1:
                    dot_segment[:] = centre
                    cv2.polylines(image, [dot_segment], False, 255, thickness, cv2.LINE_AA, _SHIFT)
                else:
                    cv2.circle(image, centre, 1 << (_SHIFT - 1), 255, -1, cv2.LINE_AA, _SHIFT)
    return canvas
