"""Stage 6, pictures: queries with their top-K retrievals, per-class AP, precision-recall.

The query grid shows one query per row (its label on the left), then its first K gallery
sketches in ranking order, each framed green when it has the query's class, red when not,
grey when the query's class is unknown (your own sketches). Sketches are drawn dark on
white from their strokes, whatever the modality the encoder read. The charts are drawn with
Pillow (no plotting library): per-class AP bars (or dots for many rows) and interpolated
precision-recall curves. Each function takes plain lists and writes one PNG, whole or not at
all (:mod:`evaluation.output_files`).
"""


from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from data.render import render
from data.sketch import Sketch, fit_to_box
from evaluation.output_files import write_output

#: Series colours: Okabe-Ito (colour-blind friendly), then four more; series also differ by
#: marker shape (circle, square, triangle, diamond), so up to 12 series stay distinct.
PALETTE = [(0, 114, 178), (230, 159, 0), (0, 158, 115), (204, 121, 167), (86, 180, 233), (213, 94, 0),
           (200, 180, 0), (0, 0, 0), (140, 140, 140), (120, 60, 160), (150, 80, 20), (0, 90, 60)]
MARKERS = ("circle", "square", "triangle", "diamond")
#: With more series than this, the per-class chart draws dots instead of grouped bars.
MAX_BAR_SERIES = 3
_GRID = (225, 225, 225)
_AXIS = (90, 90, 90)


def font() -> ImageFont.ImageFont:
    return ImageFont.load_default()


def text_size(draw: ImageDraw.ImageDraw, text: str) -> tuple[int, int]:
    box = draw.textbbox((0, 0), text, font=font())
    return box[2] - box[0], box[3] - box[1]


def colour(i: int) -> tuple[int, int, int]:
    return PALETTE[i % len(PALETTE)]


def marker(draw: ImageDraw.ImageDraw, x: float, y: float, i: int, r: float = 3.5) -> None:
    """Series ``i``'s marker centred at (x, y)."""
    shape, fill = MARKERS[i % len(MARKERS)], colour(i)
    if shape == "circle":
        draw.ellipse([x - r, y - r, x + r, y + r], fill=fill)
    elif shape == "square":
        draw.rectangle([x - r, y - r, x + r, y + r], fill=fill)
    elif shape == "triangle":
        draw.polygon([(x, y - r - 1), (x - r - 1, y + r), (x + r + 1, y + r)], fill=fill)
    else:
        draw.polygon([(x, y - r - 1), (x + r + 1, y), (x, y + r + 1), (x - r - 1, y)], fill=fill)


def _legend(draw: ImageDraw.ImageDraw, x: int, y: int, names: Sequence[str]) -> int:
    """Draw a one-column legend at (x, y); returns its height."""
    for i, name in enumerate(names):
        yy = y + i * 16
        marker(draw, x + 6, yy + 7, i, 5)
        draw.text((x + 18, yy), name, fill=(0, 0, 0), font=font())
    return 16 * len(names)


def save_png(img: Image.Image, path: str | Path) -> Path:
    """Write ``img`` as a 64-colour PNG (raises :class:`evaluation.output_files.OutputWriteError`)."""
    small = img.quantize(colors=64, dither=Image.Dither.NONE)
    return write_output(path, lambda fh: small.save(fh, format="PNG", optimize=True))


def select_classes(values: Sequence[float], max_classes: int) -> list[int]:
    """Indices of the classes to show: all when they fit, else the best and worst halves by
    ``values`` (NaN sorts last), best first."""
    order = sorted(range(len(values)), key=lambda i: (math.isnan(values[i]), -values[i] if not math.isnan(values[i]) else 0, i))
    if len(order) <= max_classes:
        return order
    half = max_classes // 2
    return order[:half] + order[len(order) - (max_classes - half):]


def class_ap_chart(
    path: str | Path,
    class_names: Sequence[str],
    series: Sequence[tuple[str, Sequence[float]]],
    title: str,
    max_classes: int = 40,
) -> Path:
    """AP in [0, 1] per class: grouped horizontal bars for up to :data:`MAX_BAR_SERIES`
    series, else one row of markers per class (a dot plot).

    Classes are ordered by the first series' AP, best first; with more than ``max_classes``
    classes only the best and worst halves are drawn (the title says so).
    """
    if not series:
        raise ValueError("no series to draw")
    shown = select_classes(list(series[0][1]), max_classes)
    if len(shown) < len(class_names):
        title += f"  ({len(shown) // 2} best and {len(shown) - len(shown) // 2} worst of {len(class_names)} classes)"
    n_s = len(series)
    bars = n_s <= MAX_BAR_SERIES
    bar_h = 7 if n_s > 1 else 10
    group_h = n_s * bar_h + 6 if bars else 18
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_w = max(text_size(probe, str(class_names[i]))[0] for i in shown) + 14
    plot_w = 420
    legend_h = 16 * n_s + 8
    top = 34 + legend_h
    width = max(label_w + plot_w + 60, max(text_size(probe, n)[0] for n, _ in series) + label_w + 40)
    height = top + len(shown) * group_h + 40
    img = Image.new("RGB", (width, height), (255, 255, 255))
    d = ImageDraw.Draw(img)
    d.text((10, 8), title, fill=(0, 0, 0), font=font())
    _legend(d, label_w, 28, [name for name, _ in series])
    x0, y0, y1 = label_w, top, top + len(shown) * group_h
    for t in range(0, 11):
        x = x0 + plot_w * t / 10
        d.line([x, y0, x, y1], fill=_GRID if t else _AXIS)
        if t % 2 == 0:
            lab = f"{t / 10:.1f}"
            d.text((x - text_size(d, lab)[0] / 2, y1 + 4), lab, fill=_AXIS, font=font())
    d.text((x0 + plot_w / 2 - 50, y1 + 20), "average precision", fill=_AXIS, font=font())
    for row, c in enumerate(shown):
        gy = y0 + row * group_h + 3
        name = str(class_names[c])
        mid = gy + (n_s * bar_h if bars else group_h - 6) / 2
        d.text((x0 - 8 - text_size(d, name)[0], mid - 6), name, fill=(0, 0, 0), font=font())
        values = [(s, v[c]) for s, (_, v) in enumerate(series) if v[c] is not None and not math.isnan(v[c])]
        if not bars:
            if values:
                lo, hi = min(v for _, v in values), max(v for _, v in values)
                d.line([x0 + plot_w * lo, mid, x0 + plot_w * hi, mid], fill=(200, 200, 200), width=2)
            for s, v in reversed(values):  # the first series on top
                marker(d, x0 + plot_w * v, mid, s)
            continue
        for s, v in values:
            by = gy + s * bar_h
            d.rectangle([x0 + 1, by, x0 + max(1.0, plot_w * v), by + bar_h - 2], fill=colour(s))
    return save_png(img, path)


def pr_chart(
    path: str | Path,
    series: Sequence[tuple[str, Sequence[float], Sequence[float]]],
    title: str,
) -> Path:
    """Precision (y) against recall (x), one line with dots per series ``(name, recall, precision)``."""
    if not series:
        raise ValueError("no series to draw")
    size, left, top = 380, 56, 40 + 16 * len(series)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    width = max(left + size + 30, left + 40 + max(text_size(probe, n)[0] for n, _, _ in series))
    height = top + size + 50
    img = Image.new("RGB", (width, height), (255, 255, 255))
    d = ImageDraw.Draw(img)
    d.text((10, 8), title, fill=(0, 0, 0), font=font())
    _legend(d, left + 10, 30, [name for name, _, _ in series])

    def xy(r: float, p: float) -> tuple[float, float]:
        return left + size * r, top + size * (1 - p)

    for t in range(11):
        v = t / 10
        d.line([*xy(v, 0), *xy(v, 1)], fill=_GRID if t else _AXIS)
        d.line([*xy(0, v), *xy(1, v)], fill=_GRID if t else _AXIS)
        if t % 2 == 0:
            lab = f"{v:.1f}"
            x, y = xy(v, 0)
            d.text((x - text_size(d, lab)[0] / 2, y + 4), lab, fill=_AXIS, font=font())
            x, y = xy(0, v)
            d.text((x - text_size(d, lab)[0] - 6, y - 6), lab, fill=_AXIS, font=font())
    d.text((left + size / 2 - 15, top + size + 22), "recall", fill=_AXIS, font=font())
    d.text((6, top - 16), "precision", fill=_AXIS, font=font())
    for s, (_, recall, precision) in reversed(list(enumerate(series))):  # the first series on top
        pts = [xy(r, p) for r, p in zip(recall, precision) if not math.isnan(p)]
        if len(pts) > 1:
            d.line(pts, fill=colour(s), width=2)
        for x, y in pts[::2]:
            marker(d, x, y, s, 3)
    return save_png(img, path)


# ---------------------------------------------------------------------------- query grid
CORRECT = (0, 160, 60)
WRONG = (220, 30, 30)
QUERY = (40, 40, 40)
UNKNOWN = (160, 160, 160)


def thumbnail(sketch: Sketch, size: int) -> Image.Image:
    """A sketch drawn dark on white, centred, ``size`` x ``size`` pixels."""
    strokes = fit_to_box(sketch.strokes, center=True)
    img = render(strokes, size=size, line_width=max(2.0, 2.0 * 256 / size))
    return Image.fromarray((255 - np.round(img * 255)).astype(np.uint8)).convert("RGB")


def pick_grid_queries(query_labels: np.ndarray, n: int) -> list[int]:
    """Deterministic queries for the grid: the first query of each class, classes in
    ascending order, then the second of each, ... until ``n`` are picked."""
    labels = np.asarray(query_labels)
    per_class = {c: list(np.flatnonzero(labels == c)) for c in np.unique(labels)}
    picked: list[int] = []
    depth = 0
    while len(picked) < min(n, len(labels)):
        for c in sorted(per_class):
            if depth < len(per_class[c]) and len(picked) < n:
                picked.append(int(per_class[c][depth]))
        depth += 1
    return picked


def query_grid(
    path: str | Path,
    queries: Sequence[Sketch],
    retrieved: Sequence[Sequence[Sketch]],
    correct: Sequence[Sequence[bool | None]],
    row_labels: Sequence[str],
    title: str,
    size: int = 64,
) -> Path:
    """Write the grid PNG: row i is ``queries[i]`` then ``retrieved[i]`` framed by ``correct[i]``
    (True green, False red, None grey)."""
    if not queries:
        raise ValueError("no queries to draw")
    border, pad = 3, 6
    cell = size + 2 * border
    k = max(len(r) for r in retrieved)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_w = max(text_size(probe, s)[0] for s in row_labels) + 12
    head = 36
    width = label_w + (k + 1) * (cell + pad) + 2 * pad
    height = head + len(queries) * (cell + pad) + pad
    img = Image.new("RGB", (width, height), (255, 255, 255))
    d = ImageDraw.Draw(img)
    d.text((pad, 6), title, fill=(0, 0, 0), font=font())
    x_q = label_w
    d.text((x_q, 20), "query", fill=(0, 0, 0), font=font())
    for j in range(k):
        x = label_w + (j + 1) * (cell + pad) + pad
        d.text((x, 20), f"{j + 1}", fill=(0, 0, 0), font=font())
    for i, (q, row, ok) in enumerate(zip(queries, retrieved, correct)):
        y = head + i * (cell + pad)
        d.text((pad, y + cell / 2 - 6), row_labels[i], fill=(0, 0, 0), font=font())
        _framed(img, thumbnail(q, size), x_q, y, QUERY, border)
        for j, (s, good) in enumerate(zip(row, ok)):
            x = label_w + (j + 1) * (cell + pad) + pad
            _framed(img, thumbnail(s, size), x, y, UNKNOWN if good is None else CORRECT if good else WRONG, border)
    return save_png(img, path)


def _framed(img: Image.Image, tile: Image.Image, x: int, y: int, colour: tuple, border: int) -> None:
    d = ImageDraw.Draw(img)
    w = tile.width + 2 * border
    d.rectangle([x, y, x + w - 1, y + w - 1], fill=colour)
    img.paste(tile, (x + border, y + border))
