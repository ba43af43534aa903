"""Sketch data: the one in-memory sketch type, rendering, stroke tensors, synthetic data.

Layers (each imports only the ones above it): :mod:`data.sketch` (the :class:`Sketch`
type and its geometry) -> :mod:`data.render`, :mod:`data.strokes` (raster and stroke
tensor encodings) -> :mod:`data.synthetic` (a built-in sketch source) ->
:mod:`data.datasets` (torch Datasets over any sketch source). Real Quick, Draw! data:
:mod:`data.simplify` (Google's simplification of raw drawings) -> :mod:`data.formats`
(the four public file formats) -> :mod:`data.store` (the packed memory-mapped store, a
sketch source) -> :mod:`data.prepare` (``python -m data.prepare``: files -> store; not
imported here, so that ``-m`` runs it cleanly). Nothing here imports other project packages.

Each encoding has a per-sketch form (``fit_to_box``, ``render``, ``to_stroke_tensor``: the
reference) and a batched form on packed sketches (``fit_packed``, ``render_packed``,
``PackedStrokeTensors``: the loaders' path), equal bit for bit.
"""

from .datasets import PairedDataset, RasterDataset, SketchPair, StackedSamples, StrokeDataset, collate_samples
from .formats import FormatError, Report, categories, read_binary, read_ndjson, read_npz, read_sketches
from .render import line_thickness, render, render_packed
from .simplify import simplify_raw
from .sketch import (BOX, Sketch, bounds, fit_packed, fit_to_box, num_points, pack_sketches, rotate_quarter,
                     validate_strokes)
from .store import StoreError, StoreSketches
from .strokes import PackedStrokeTensors, from_stroke_tensor, rdp, to_stroke_tensor, valid_rows
from .synthetic import SPLIT_ID, SYNTHETIC_CLASSES, SyntheticSketches, draw_synthetic, save_preview

__all__ = [
    "BOX",
    "Sketch",
    "bounds",
    "fit_to_box",
    "fit_packed",
    "pack_sketches",
    "num_points",
    "rotate_quarter",
    "validate_strokes",
    "render",
    "render_packed",
    "line_thickness",
    "rdp",
    "to_stroke_tensor",
    "PackedStrokeTensors",
    "from_stroke_tensor",
    "valid_rows",
    "SYNTHETIC_CLASSES",
    "SPLIT_ID",
    "SyntheticSketches",
    "draw_synthetic",
    "save_preview",
    "RasterDataset",
    "StackedSamples",
    "collate_samples",
    "StrokeDataset",
    "PairedDataset",
    "SketchPair",
    "FormatError",
    "Report",
    "categories",
    "read_ndjson",
    "read_binary",
    "read_npz",
    "read_sketches",
    "simplify_raw",
    "StoreError",
    "StoreSketches",
]
