"""Pictures of an evaluation: queries with their top-K retrievals, per-class AP, PR curves.

The query grid shows one query per row (its class and AP on the left), then its first K
gallery sketches in ranking order, each framed green when it has the query's class and red
when not. Sketches are drawn dark on white from their strokes, whatever the modality the
encoder read. The charts come from :mod:`utils.charts`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

from data.render import render
from data.sketch import Sketch, fit_to_box
from utils.charts import class_ap_chart, font, pr_chart, save_png, text_size

CORRECT = (0, 160, 60)
WRONG = (220, 30, 30)
QUERY = (40, 40, 40)

__all__ = ["thumbnail", "query_grid", "class_ap_chart", "pr_chart", "pick_grid_queries"]


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
    correct: Sequence[Sequence[bool]],
    row_labels: Sequence[str],
    title: str,
    size: int = 64,
) -> Path:
    """Write the grid PNG: row i is ``queries[i]`` then ``retrieved[i]`` framed by ``correct[i]``."""
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
            _framed(img, thumbnail(s, size), x, y, CORRECT if good else WRONG, border)
    return save_png(img, path)


def _framed(img: Image.Image, tile: Image.Image, x: int, y: int, colour: tuple, border: int) -> None:
    d = ImageDraw.Draw(img)
    w = tile.width + 2 * border
    d.rectangle([x, y, x + w - 1, y + w - 1], fill=colour)
    img.paste(tile, (x + border, y + border))
