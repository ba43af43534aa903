"""Deterministic synthetic sketches: the project's default, always-available data source.

Each class is a template of polylines in unit coordinates (``[0, 1]^2``, y down) built in
code, with a few per-sketch template parameters (number of petals, rungs, turns ...). A
sketch is made from its template the way a person's hand would spoil it:

1. optional strokes ("minor" parts: a door, an eye, a fin) are dropped with probability
   :data:`DROP_MINOR`; closed outlines start at a random point and over- or undershoot;
2. every stroke is resampled densely, shifted a little on its own, and wobbles along its
   length (low-frequency noise as a function of arc length);
3. the whole drawing is bent by a smooth random displacement field (a few low-frequency
   sinusoids), then a random affine map: anisotropic scale +-15%, rotation +-12 degrees,
   shear +-0.15; each point gets a little white jitter;
4. each stroke is reversed with probability :data:`REVERSE`;
5. like Google's simplified data: aligned to the top-left of the 256 box and scaled so
   the larger extent is 255 (``fit_to_box(..., center=False)``), simplified with RDP
   (epsilon drawn from 1.0..2.0 box units; Google used 2.0), rounded to integers in 0..255, and
   consecutive duplicate points removed (every stroke keeps >= 2 points).

Most classes are not symmetric under quarter turns (a house has its roof up, an arrow
points right, a cup's handle is on the right), so predicting a sketch's rotation is
learnable and says something about its shape. Sketch ``i`` of a split is generated from
``np.random.default_rng([seed, SPLIT_ID[split], i])``: deterministic, independent of
access order, and different splits (or seeds) are different random streams.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .sketch import BOX, Sketch, Strokes, fit_to_box
from .strokes import rdp

SPLIT_ID: dict[str, int] = {"train": 0, "val": 1, "query": 2, "gallery": 3}
"""Split name -> the second word of the random seed sequence."""

DROP_MINOR: float = 0.25
"""Probability that an optional (minor) stroke of a template is left out."""

REVERSE: float = 0.2
"""Probability that a stroke is drawn in the opposite direction."""

_SPACING: float = 0.01
"""Resampling step (unit coordinates) before noise is added."""

Part = tuple[np.ndarray, bool]
"""One template stroke: (n, 2) vertices in unit coordinates, and whether it is minor."""


# ----------------------------------------------------------------------------- helpers


def _pts(*xy: float) -> np.ndarray:
    """Vertices from a flat list x0, y0, x1, y1, ... -> (n, 2) float64."""
    return np.asarray(xy, dtype=np.float64).reshape(-1, 2)


def _arc(cx: float, cy: float, rx: float, ry: float, a0: float, a1: float, n: int = 0) -> np.ndarray:
    """Elliptic arc from angle a0 to a1 (degrees; y down, so angles grow clockwise on screen)."""
    if n <= 0:
        length = abs(math.radians(a1 - a0)) * max(rx, ry)
        n = max(3, int(length / _SPACING) + 1)
    t = np.radians(np.linspace(a0, a1, n))
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], axis=1)


def _loop(rng: np.random.Generator, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    """A hand-drawn closed ellipse: random start, a little over- or undershoot."""
    a0 = rng.uniform(0, 360)
    return _arc(cx, cy, rx, ry, a0, a0 + 360 + rng.uniform(-12, 28))


def _densify(poly: np.ndarray, spacing: float = _SPACING) -> np.ndarray:
    """Resample a polyline so that consecutive points are at most ``spacing`` apart.

    Keeps every vertex; adds evenly spaced points on each segment. (n, 2) -> (m, 2).
    """
    if len(poly) < 2:
        return poly.copy()
    seg = np.diff(poly, axis=0)
    steps = np.maximum(1, np.ceil(np.hypot(seg[:, 0], seg[:, 1]) / spacing)).astype(np.int64)
    start = np.repeat(np.arange(len(seg)), steps)
    frac = (np.arange(steps.sum()) - np.repeat(np.cumsum(steps) - steps, steps)) / np.repeat(steps, steps)
    return np.concatenate([poly[start] + seg[start] * frac[:, None], poly[-1:]], axis=0)


# ----------------------------------------------------------------------------- templates


def _house(rng: np.random.Generator) -> list[Part]:
    top = rng.uniform(0.42, 0.5)
    parts = [
        (_pts(0.15, top, 0.15, 1.0, 0.85, 1.0, 0.85, top), False),
        (_pts(0.06, top + 0.03, 0.5, rng.uniform(0.0, 0.08), 0.94, top + 0.03), False),
        (_pts(0.4, 1.0, 0.4, 0.72, 0.56, 0.72, 0.56, 1.0), True),
        (_pts(0.64, 0.58, 0.78, 0.58, 0.78, 0.7, 0.64, 0.7, 0.64, 0.58), True),
    ]
    if rng.random() < 0.5:
        parts.append((_pts(0.68, 0.24, 0.68, 0.1, 0.77, 0.1, 0.77, 0.31), True))
    return parts


def _fish(rng: np.random.Generator) -> list[Part]:
    ry = rng.uniform(0.17, 0.24)
    tail = rng.uniform(0.15, 0.25)
    return [
        (_arc(0.42, 0.5, 0.36, ry, 180 + rng.uniform(-10, 10), 540 + rng.uniform(-5, 15)), False),
        (_pts(0.78, 0.5, 1.0, 0.5 - tail, 0.97, 0.5 + tail, 0.78, 0.5), False),
        (_loop(rng, 0.2, 0.45, 0.03, 0.03), True),
        (_arc(0.31, 0.5, 0.07, 0.14, -70, 70), True),
        (_pts(0.38, 0.5 - ry + 0.02, 0.5, 0.5 - ry - 0.1, 0.6, 0.5 - ry + 0.03), True),
    ]


def _arrow(rng: np.random.Generator) -> list[Part]:
    h = rng.uniform(0.13, 0.22)
    parts = [
        (_pts(0.0, 0.5, 0.97, 0.5), False),
        (_pts(0.72, 0.5 - h, 1.0, 0.5, 0.72, 0.5 + h), False),
    ]
    if rng.random() < 0.6:
        parts.append((_pts(0.0, 0.5, -0.08, 0.38), True))
        parts.append((_pts(0.0, 0.5, -0.08, 0.62), True))
        parts.append((_pts(0.1, 0.5, 0.02, 0.38), True))
    return parts


def _star(rng: np.random.Generator) -> list[Part]:
    # One stroke through the five points (a pentagram), point up.
    r = 0.5
    angles = -90 + 144 * np.arange(6)
    pts = np.stack([0.5 + r * np.cos(np.radians(angles)), 0.55 + r * np.sin(np.radians(angles))], axis=1)
    return [(pts, False)]


def _spiral(rng: np.random.Generator) -> list[Part]:
    turns = rng.uniform(2.6, 4.0)
    theta = np.linspace(0.0, turns * 2 * np.pi, int(turns * 120))
    r = 0.5 * theta / theta[-1]
    return [(np.stack([0.5 + r * np.cos(theta), 0.5 + r * np.sin(theta)], axis=1), False)]


def _smiley(rng: np.random.Generator) -> list[Part]:
    smile = rng.uniform(0.22, 0.3)
    return [
        (_loop(rng, 0.5, 0.5, 0.48, 0.48), False),
        (_pts(0.35, 0.3, 0.35, 0.42), False),
        (_pts(0.65, 0.3, 0.65, 0.42), False),
        (_arc(0.5, 0.58, smile, smile * 0.8, 15, 165), False),
        (_pts(0.5, 0.45, 0.47, 0.56, 0.52, 0.56), True),
    ]


def _cup(rng: np.random.Generator) -> list[Part]:
    parts = [
        (_pts(0.12, 0.2, 0.2, 0.98, 0.66, 0.98, 0.74, 0.2), False),
        (_arc(0.43, 0.2, 0.31, 0.06, 180, 540), True),
        (_arc(0.74, 0.55, 0.2, 0.2, -80, 95), False),
    ]
    if rng.random() < 0.5:
        x = rng.uniform(0.3, 0.55)
        t = np.linspace(0.0, 1.0, 25)
        parts.append((np.stack([x + 0.035 * np.sin(t * 3 * np.pi), 0.12 - 0.26 * t], axis=1), True))
    return parts


def _tree(rng: np.random.Generator) -> list[Part]:
    bumps = int(rng.integers(5, 8))
    edges = 130.0 + 280.0 * np.arange(bumps + 1) / bumps  # crown starts and ends at the trunk
    crown = []
    for e0, e1 in zip(edges[:-1], edges[1:]):
        seg = _arc(0.5, 0.36, 0.36, 0.33, e0, e1)
        mid = math.radians((e0 + e1) / 2)
        bulge = np.sin(np.linspace(0, np.pi, len(seg)))[:, None]  # scallop: push the middle out
        crown.append(seg + 0.06 * bulge * np.array([math.cos(mid), math.sin(mid)]))
    return [
        (_pts(0.42, 1.0, 0.44, 0.64), False),
        (_pts(0.58, 1.0, 0.56, 0.64), False),
        (np.concatenate(crown), False),
        (_pts(0.3, 1.0, 0.72, 1.0), True),
    ]


def _umbrella(rng: np.random.Generator) -> list[Part]:
    scallops = int(rng.integers(3, 5))
    edge = []
    xs = np.linspace(0.0, 1.0, scallops + 1)
    for x0, x1 in zip(xs[:-1], xs[1:]):
        edge.append(_arc((x0 + x1) / 2, 0.45, (x1 - x0) / 2, 0.07, 180, 360))
    return [
        (_arc(0.5, 0.45, 0.5, 0.42, 180, 360), False),
        (np.concatenate(edge)[::-1], False),
        (np.concatenate([_pts(0.5, 0.45, 0.5, 0.88), _arc(0.4, 0.88, 0.1, 0.1, 0, 180)]), False),
        (_pts(0.5, 0.03, 0.5, -0.04), True),
    ]


def _lightning(rng: np.random.Generator) -> list[Part]:
    k = rng.uniform(-0.04, 0.04)
    return [
        (_pts(0.55, 0.0, 0.25, 0.52 + k, 0.5, 0.48 + k, 0.32, 1.0, 0.82, 0.38 - k, 0.56, 0.42 - k,
              0.78, 0.0, 0.55, 0.0), False),
    ]


def _sailboat(rng: np.random.Generator) -> list[Part]:
    return [
        (_pts(0.02, 0.72, 0.98, 0.72, 0.8, 0.9, 0.2, 0.9, 0.02, 0.72), False),
        (_pts(0.5, 0.72, 0.5, 0.02), False),
        (_pts(0.5, 0.05, rng.uniform(0.82, 0.92), 0.64, 0.5, 0.64), False),
        (np.stack([np.linspace(0.0, 1.0, 60), 0.98 + 0.025 * np.sin(np.linspace(0, 6 * np.pi, 60))], 1), True),
        (_pts(0.5, 0.02, 0.36, 0.08, 0.5, 0.13), True),
    ]


def _key(rng: np.random.Generator) -> list[Part]:
    return [
        (_loop(rng, 0.17, 0.5, 0.17, 0.19), False),
        (_pts(0.34, 0.47, 1.0, 0.47, 1.0, 0.53, 0.34, 0.53), False),
        (_pts(0.9, 0.53, 0.9, 0.7, 0.83, 0.7, 0.83, 0.53), False),
        (_pts(0.76, 0.53, 0.76, 0.64, 0.69, 0.64, 0.69, 0.53), True),
        (_loop(rng, 0.14, 0.5, 0.05, 0.05), True),
    ]


def _flower(rng: np.random.Generator) -> list[Part]:
    petals = int(rng.integers(5, 8))
    theta = np.linspace(0.0, 2 * np.pi, petals * 40) + rng.uniform(0, 2 * np.pi)
    r = 0.08 + 0.2 * np.abs(np.sin(petals * theta / 2))
    ring = np.stack([0.5 + r * np.cos(theta), 0.3 + r * np.sin(theta)], axis=1)
    return [
        (_loop(rng, 0.5, 0.3, 0.07, 0.07), False),
        (ring, False),
        (np.stack([0.5 + 0.04 * np.sin(np.linspace(0, np.pi, 30)), np.linspace(0.56, 1.0, 30)], 1), False),
        (np.concatenate([_arc(0.66, 0.68, 0.14, 0.06, 180, 360), _arc(0.66, 0.68, 0.14, 0.06, 0, 180)]), True),
    ]


def _cloud(rng: np.random.Generator) -> list[Part]:
    bumps = int(rng.integers(4, 7))
    xs = np.linspace(0.08, 0.92, bumps + 1)
    top = []
    for i, (x0, x1) in enumerate(zip(xs[:-1], xs[1:])):
        h = (x1 - x0) * (0.6 + 0.3 * math.sin(math.pi * (i + 0.5) / bumps) + rng.uniform(-0.08, 0.08))
        top.append(_arc((x0 + x1) / 2, 0.42, (x1 - x0) / 2 + 0.015, h, 180, 360))
    outline = np.concatenate([_arc(0.08, 0.5, 0.08, 0.08, 90, 270)] + top
                             + [_arc(0.92, 0.5, 0.08, 0.08, -90, 90), _pts(0.92, 0.58, 0.08, 0.58)])
    parts: list[Part] = [(outline, False)]
    for x in rng.choice([0.25, 0.4, 0.55, 0.7], size=int(rng.integers(2, 4)), replace=False):
        parts.append((_pts(x, 0.7, x - 0.05, 0.9), True))
    return parts


def _ladder(rng: np.random.Generator) -> list[Part]:
    rungs = int(rng.integers(4, 8))
    top_l, top_r, bot_l, bot_r = 0.3, 0.62, 0.18, 0.78
    parts: list[Part] = [(_pts(top_l, 0.0, bot_l, 1.0), False), (_pts(top_r, 0.0, bot_r, 1.0), False)]
    for y in np.linspace(0.1, 0.9, rungs):
        xl = top_l + (bot_l - top_l) * y
        xr = top_r + (bot_r - top_r) * y
        parts.append((_pts(xl, y, xr, y), True))
    return parts


def _envelope(rng: np.random.Generator) -> list[Part]:
    return [
        (_pts(0.0, 0.2, 0.0, 0.85, 1.0, 0.85, 1.0, 0.2, 0.0, 0.2), False),
        (_pts(0.0, 0.2, 0.5, rng.uniform(0.5, 0.6), 1.0, 0.2), False),
        (_pts(0.75, 0.3, 0.9, 0.3, 0.9, 0.42, 0.75, 0.42, 0.75, 0.3), True),
    ]


def _mushroom(rng: np.random.Generator) -> list[Part]:
    return [
        (np.concatenate([_arc(0.5, 0.5, 0.5, 0.45, 180, 360), _pts(1.0, 0.5, 0.0, 0.5)]), False),
        (_pts(0.38, 0.5, 0.34, 1.0, 0.66, 1.0, 0.62, 0.5), False),
        (_loop(rng, 0.32, 0.3, 0.06, 0.05), True),
        (_loop(rng, 0.64, 0.22, 0.07, 0.06), True),
    ]


def _car(rng: np.random.Generator) -> list[Part]:
    roof = rng.uniform(0.1, 0.2)
    return [
        (_pts(0.0, 0.75, 0.0, 0.45, 0.22, 0.45, 0.32, roof, 0.7, roof, 0.8, 0.45, 1.0, 0.5, 1.0, 0.75,
              0.86, 0.75), False),
        (_pts(0.62, 0.75, 0.38, 0.75), True),
        (_loop(rng, 0.25, 0.78, 0.12, 0.12), False),
        (_loop(rng, 0.74, 0.78, 0.12, 0.12), False),
        (_pts(0.36, 0.42, 0.4, roof + 0.06, 0.54, roof + 0.06, 0.54, 0.42, 0.36, 0.42), True),
    ]


_TEMPLATES: tuple[tuple[str, Callable[[np.random.Generator], list[Part]]], ...] = (
    ("house", _house),
    ("fish", _fish),
    ("arrow", _arrow),
    ("star", _star),
    ("spiral", _spiral),
    ("smiley face", _smiley),
    ("cup", _cup),
    ("tree", _tree),
    ("umbrella", _umbrella),
    ("lightning", _lightning),
    ("sailboat", _sailboat),
    ("key", _key),
    ("flower", _flower),
    ("cloud", _cloud),
    ("ladder", _ladder),
    ("envelope", _envelope),
    ("mushroom", _mushroom),
    ("car", _car),
)

SYNTHETIC_CLASSES: tuple[str, ...] = tuple(name for name, _ in _TEMPLATES)
"""Class names, in label order (label k is ``SYNTHETIC_CLASSES[k]``)."""


# ----------------------------------------------------------------------------- drawing


def _smooth_field(rng: np.random.Generator, amplitude: float, waves: int = 3) -> Callable[[np.ndarray], np.ndarray]:
    """A random smooth displacement field R^2 -> R^2 (sum of low-frequency plane waves)."""
    freq = rng.normal(0.0, 1.0, size=(waves, 2, 2)) * 2 * np.pi * 0.8
    phase = rng.uniform(0, 2 * np.pi, size=(waves, 2))
    amp = rng.uniform(0.3, 1.0, size=(waves, 2)) * amplitude / math.sqrt(waves)

    def field(p: np.ndarray) -> np.ndarray:
        out = np.zeros_like(p)
        for w in range(waves):
            for axis in range(2):
                out[:, axis] += amp[w, axis] * np.sin(p @ freq[w, axis] + phase[w, axis])
        return out

    return field


def _wobble(rng: np.random.Generator, stroke: np.ndarray, amplitude: float) -> np.ndarray:
    """Hand tremor: low-frequency displacement as a function of arc length."""
    seg = np.hypot(*np.diff(stroke, axis=0).T) if len(stroke) > 1 else np.zeros(0)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    out = stroke.copy()
    for axis in range(2):
        for _ in range(2):
            f = rng.uniform(1.0, 4.0) * 2 * np.pi
            out[:, axis] += rng.uniform(0.3, 1.0) * amplitude * np.sin(f * s + rng.uniform(0, 2 * np.pi))
    return out


def _finish(strokes: list[np.ndarray], rng: np.random.Generator) -> Strokes:
    """Google-style post-processing: top-left fit to 255, RDP, integer rounding."""
    fitted = fit_to_box(tuple(strokes), box=BOX, center=False)
    eps = rng.uniform(1.0, 2.0)
    out = []
    for s in fitted:
        s = rdp(s.astype(np.float64), eps)
        s = np.clip(np.round(s), 0, BOX)
        if len(s) > 1:
            keep = np.concatenate([[True], np.any(s[1:] != s[:-1], axis=1)])
            if keep.sum() >= 2:
                s = s[keep]
            else:
                s = s[[0, -1]]
        out.append(s.astype(np.float32))
    return tuple(out)


def draw_synthetic(class_index: int, rng: np.random.Generator) -> Strokes:
    """Draw one synthetic sketch of class ``class_index``.

    Args:
        class_index: 0 <= class_index < len(SYNTHETIC_CLASSES).
        rng: the random stream; the result is a deterministic function of its state.

    Returns:
        strokes: float32 (n_i, 2) arrays with integer values in 0..255, top-left aligned
        with the larger extent 255 (like Google's simplified data); each stroke has >= 2
        points.
    """
    if not 0 <= class_index < len(_TEMPLATES):
        raise ValueError(f"class_index must be in [0, {len(_TEMPLATES)}), got {class_index}")
    parts = _TEMPLATES[class_index][1](rng)
    minor_drop = rng.random(len(parts)) < DROP_MINOR
    kept = [p for (p, minor), drop in zip(parts, minor_drop) if not (minor and drop)]

    field = _smooth_field(rng, amplitude=rng.uniform(0.02, 0.045))
    strokes = []
    for p in kept:
        s = _densify(np.asarray(p, dtype=np.float64))
        s = s + rng.normal(0.0, 0.012, size=2)
        s = _wobble(rng, s, amplitude=0.006)
        strokes.append(s)

    angle = math.radians(rng.uniform(-12, 12))
    sx, sy = rng.uniform(0.85, 1.15, size=2)
    shear = rng.uniform(-0.15, 0.15)
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    affine = rot @ np.array([[1.0, shear], [0.0, 1.0]]) @ np.diag([sx, sy])
    centre = np.array([0.5, 0.5])
    out = []
    for s in strokes:
        s = s + field(s)
        s = (s - centre) @ affine.T + centre
        s = s + rng.normal(0.0, 0.0015, size=s.shape)
        if rng.random() < REVERSE:
            s = s[::-1]
        out.append(s)
    return _finish(out, rng)


class SyntheticSketches:
    """A split of synthetic sketches, generated on demand (a "sketch source").

    Sketch ``i`` has label ``i % num_classes`` (classes interleaved) and is drawn from
    ``np.random.default_rng([seed, SPLIT_ID[split], i])``; its ``key_id`` is
    ``f"syn-{split}-{seed}-{i}"``.

    Args:
        split: one of "train", "val", "query", "gallery".
        per_class: sketches per class.
        num_classes: how many of :data:`SYNTHETIC_CLASSES` to use (the first ones);
            None for all.
        seed: generator seed (independent of any training seed).
    """

    def __init__(self, split: str, per_class: int, num_classes: int | None = None, seed: int = 0) -> None:
        if split not in SPLIT_ID:
            raise ValueError(f"split must be one of {sorted(SPLIT_ID)}, got {split!r}")
        if num_classes is None:
            num_classes = len(SYNTHETIC_CLASSES)
        if not 1 <= num_classes <= len(SYNTHETIC_CLASSES):
            raise ValueError(
                f"num_classes must be in [1, {len(SYNTHETIC_CLASSES)}] (synthetic classes available), got {num_classes}"
            )
        if per_class < 0:
            raise ValueError(f"per_class must be >= 0, got {per_class}")
        if seed < 0:
            raise ValueError(f"seed must be >= 0 (numpy seed sequences need non-negative words), got {seed}")
        self.split = split
        self.per_class = int(per_class)
        self.num_classes = int(num_classes)
        self.seed = int(seed)
        self.class_names: tuple[str, ...] = SYNTHETIC_CLASSES[: self.num_classes]

    def __len__(self) -> int:
        return self.per_class * self.num_classes

    @property
    def labels(self) -> np.ndarray:
        """int64 (N,) labels of all sketches, without drawing them."""
        return np.arange(len(self), dtype=np.int64) % self.num_classes

    def __getitem__(self, i: int) -> Sketch:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for {n} sketches")
        i = int(i) % n
        label = i % self.num_classes
        rng = np.random.default_rng([self.seed, SPLIT_ID[self.split], i])
        return Sketch(draw_synthetic(label, rng), label=label, key_id=f"syn-{self.split}-{self.seed}-{i}")

    def __repr__(self) -> str:
        return (
            f"SyntheticSketches(split={self.split!r}, per_class={self.per_class}, "
            f"num_classes={self.num_classes}, seed={self.seed})"
        )


def save_preview(path: str | Path, per_class: int = 6, size: int = 96, seed: int = 0, split: str = "train") -> Path:
    """Write a PNG grid of synthetic sketches: one row per class, its name on the left.

    Dark ink on white (the training rasters are the inverse: bright ink on black).

    Args:
        path: output file (parent folders are created).
        per_class: examples per class (columns).
        size: side of each cell in pixels.
        seed, split: which sketches to show (the first ``per_class`` of each class).

    Returns:
        The path written.
    """
    from PIL import Image, ImageDraw

    from .render import render

    source = SyntheticSketches(split, per_class=per_class, seed=seed)
    label_w, pad = 110, 4
    k = source.num_classes
    grid = Image.new("L", (label_w + per_class * (size + pad), k * (size + pad) + pad), 255)
    draw = ImageDraw.Draw(grid)
    for j in range(per_class):
        for c in range(k):
            sketch = source[j * k + c]
            strokes = fit_to_box(sketch.strokes, center=True)
            img = render(strokes, size=size, line_width=2.0 * 256 / size)  # OpenCV thickness 2
            tile = Image.fromarray((255 - np.round(img * 255)).astype(np.uint8))
            grid.paste(tile, (label_w + j * (size + pad), pad + c * (size + pad)))
    for c, name in enumerate(source.class_names):
        draw.text((6, pad + c * (size + pad) + size // 2 - 6), f"{c}: {name}", fill=0)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path, optimize=True)
    return path
