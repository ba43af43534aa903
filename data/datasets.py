"""torch Datasets over any sketch source: rasters (:class:`RasterDataset`), stroke tensors
(:class:`StrokeDataset`), or both of each sketch (:class:`PairedDataset`).

A *sketch source* is any object with ``__len__`` and ``__getitem__(i) -> Sketch``
(:class:`data.synthetic.SyntheticSketches`, or an on-disk store of Quick, Draw! drawings).
It may also offer ``labels`` (all labels without loading the drawings), ``num_classes``
and ``class_names``; the datasets pass these through.

The datasets re-fit every drawing to the box with ``center=True`` by default. Google's
simplified drawings are aligned to the *top-left* corner; a rotated copy of such a drawing
sits against another corner, so a rotation classifier could read the turn off the
drawing's position alone instead of its shape. Centring removes that shortcut.

Whole batches. A DataLoader hands a dataset that has ``__getitems__`` the indices of a whole
batch at once; the datasets use it to build the batch with array operations (the drawings
of the batch packed into one array, fitted to the box at once; stroke tensors gathered from
a split prepared once, :meth:`data.store.StoreSketches.stroke_tensors`; rasters drawn by
:func:`data.render.render_packed`). ``__getitem__`` stays the per-sketch reference path, and
the two give the same tensors bit for bit (tested on the real sample). ``batched = False``
on a class or an instance makes ``__getitems__`` use the reference path too.

A batch built at once comes back as :class:`StackedSamples`: it reads as the list of
``(input, label)`` samples that ``__getitems__`` promises, but holds the batch stacked, so
:func:`collate_samples` (the trainer's ``collate_fn``) hands it on as it is instead of
splitting it into samples and stacking them again, as torch's ``default_collate`` would (a
copy of every byte and a Python call per sample: a third of a stroke batch's loading time).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, NamedTuple, Protocol

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

from .render import render, render_levels, render_packed
from .sketch import BOX, Sketch, fit_packed, fit_to_box, pack_sketches
from .strokes import PackedStrokeTensors, packed_stroke_rows, to_stroke_tensor


class SketchSource(Protocol):
    """What the datasets need from a source of sketches."""

    def __len__(self) -> int: ...

    def __getitem__(self, i: int) -> Sketch: ...


class _SketchDataset(Dataset):
    """Shared plumbing: the source, its labels and class metadata."""

    batched: ClassVar[bool] = True
    """Build DataLoader batches with array operations (``__getitems__``); False: one sketch
    at a time through ``__getitem__``, the reference path."""

    def __init__(self, source: SketchSource, center: bool) -> None:
        self.source = source
        self.center = bool(center)
        self.num_classes: int | None = getattr(source, "num_classes", None)
        self.class_names: tuple[str, ...] | None = getattr(source, "class_names", None)
        self._labels: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.source)

    @property
    def labels(self) -> np.ndarray:
        """int64 (N,) labels: ``source.labels`` if it has them, else read sketch by sketch once."""
        if self._labels is None:
            given: Any = getattr(self.source, "labels", None)
            if given is not None:
                labels = np.asarray(given, dtype=np.int64)
            else:
                labels = np.array([self.source[i].label for i in range(len(self.source))], dtype=np.int64)
            if labels.shape != (len(self.source),):
                raise ValueError(f"source gave {labels.shape} labels for {len(self.source)} sketches")
            self._labels = labels
        return self._labels

    def _fitted(self, i: int) -> tuple[tuple[np.ndarray, ...], int]:
        sketch = self.source[i]
        return fit_to_box(sketch.strokes, box=BOX, center=self.center), int(sketch.label)

    def _packed_fitted(self, indices: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[int]]:
        """The batch packed (:mod:`data.sketch`) and fitted to the box, and its labels."""
        packed = getattr(self.source, "packed", None)
        if packed is not None:
            xy, stroke_end, offsets, labels = packed(indices)
            labels = np.asarray(labels).tolist()
        else:
            sketches = [self.source[i] for i in indices]
            xy, stroke_end, offsets = pack_sketches(sketches)
            labels = [int(s.label) for s in sketches]
        return fit_packed(xy, offsets, box=BOX, center=self.center), stroke_end, offsets, labels


class _Rasters:
    """The raster encoding, shared by :class:`RasterDataset` and :class:`PairedDataset`."""

    image_size: int
    line_width: float
    ink_levels: bool
    """Rasters as uint8 ink levels (1, S, S), 0..255, instead of float32 ``level / 255``:
    a quarter of the bytes through the loader, for algorithms that take them
    (:attr:`algorithms.base.Algorithm.takes_ink_levels`; the trainer sets it)."""

    cache: bool | None
    """Batches read from the source's cache of rasters drawn once
    (:meth:`data.store.StoreSketches.raster_levels`) when it has one, instead of drawn; None:
    where the source builds one by default (a store: up to 2 GB)."""

    def _set_raster(self, image_size: int, line_width: float, ink_levels: bool = False,
                    cache: bool | None = False) -> None:
        if image_size < 1:
            raise ValueError(f"image_size must be >= 1, got {image_size}")
        if line_width <= 0:
            raise ValueError(f"line_width must be > 0, got {line_width}")
        self.image_size = int(image_size)
        self.line_width = float(line_width)
        self.ink_levels = bool(ink_levels)
        self.cache = None if cache is None else bool(cache)
        self._cached: Any = None  # the source's CachedRasters; False: asked, there is none
        if self.cache is not False and self.batched:
            self.cached_rasters()  # here, in the main process: DataLoader workers then share it

    def cached_rasters(self) -> Any:
        """The source's rasters drawn once (a ``gather(indices) -> uint8 (B, S, S)`` table)
        when :attr:`cache` asks for them and the source can make them, else None. Opened
        when first asked for."""
        if self.cache is False:
            return None
        if self._cached is None:
            opener = getattr(self.source, "raster_levels", None)
            table = None if opener is None else opener(self.image_size, self.line_width, center=self.center, box=BOX,
                                                        automatic=self.cache is None)
            self._cached = False if table is None else table
        return self._cached or None

    def _raster(self, strokes: tuple[np.ndarray, ...]) -> torch.Tensor:
        """float32 (1, S, S) raster (uint8 with :attr:`ink_levels`) of strokes already
        fitted to the box (the reference)."""
        draw = render_levels if self.ink_levels else render
        return torch.from_numpy(draw(strokes, size=self.image_size, line_width=self.line_width, box=BOX)).unsqueeze(0)

    def _rasters(self, xy: np.ndarray, stroke_end: np.ndarray, offsets: np.ndarray) -> torch.Tensor:
        """float32 (B, 1, S, S) rasters (uint8 with :attr:`ink_levels`) of a fitted packed
        batch: :meth:`_raster` of each, bit for bit."""
        return self._from_levels(render_packed(xy, stroke_end, offsets, size=self.image_size,
                                               line_width=self.line_width, box=BOX))

    def _from_levels(self, levels: np.ndarray) -> torch.Tensor:
        """uint8 (B, S, S) levels -> the batch's (B, 1, S, S) tensor: as they are with
        :attr:`ink_levels`, else render()'s float32 values."""
        if self.ink_levels:
            return torch.from_numpy(levels).unsqueeze(1)
        images = levels.astype(np.float32)
        np.divide(images, np.float32(255.0), out=images)  # render()'s floats, bit for bit
        return torch.from_numpy(images).unsqueeze(1)


class _StrokeTensors:
    """The stroke-tensor encoding, shared by :class:`StrokeDataset` and :class:`PairedDataset`."""

    source: SketchSource
    center: bool
    batched: ClassVar[bool]
    labels: np.ndarray
    max_len: int
    _tensors: PackedStrokeTensors | None

    def _set_strokes(self, max_len: int) -> None:
        if max_len < 1:
            raise ValueError(f"max_len must be >= 1, got {max_len}")
        self.max_len = int(max_len)
        self._tensors = None
        if self.batched:
            self.prepared()  # here, in the main process: DataLoader workers then share it

    def prepared(self) -> PackedStrokeTensors | None:
        """The split's stroke tensors prepared once, when the source offers them (a store:
        cached beside it, built on first use), else None. Opened when first asked for."""
        if self._tensors is None:
            opener = getattr(self.source, "stroke_tensors", None)
            if opener is not None:
                self._tensors = opener(self.max_len, center=self.center, box=BOX)
        return self._tensors

    def _stroke_tensor(self, strokes: tuple[np.ndarray, ...]) -> torch.Tensor:
        """float32 (T, 4) stroke tensor of strokes already fitted to the box (the reference)."""
        return torch.from_numpy(to_stroke_tensor(strokes, max_len=self.max_len, box=BOX))

    def _stroke_tensors(self, indices: Sequence[int],
                        fitted: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> torch.Tensor:
        """float32 (B, T, 4) stroke tensors of sketches ``indices``: gathered from the prepared
        tensors when the source has them, else encoded at once from ``fitted``, the batch's
        packed form ``(xy, stroke_end, offsets)`` fitted to the box (required then)."""
        table = self.prepared()
        if table is not None:
            return torch.from_numpy(table.gather(indices))
        if fitted is None:
            raise ValueError("the source has no prepared stroke tensors: pass the fitted packed batch")
        table = PackedStrokeTensors.from_rows(*packed_stroke_rows(*fitted, self.max_len, BOX), self.max_len)
        return torch.from_numpy(table.gather(np.arange(len(indices))))


class RasterDataset(_Rasters, _SketchDataset):
    """Sketches as rasters for the CNN branch.

    ``__getitem__(i) -> (image, label)``: image a float32 tensor (1, S, S), values in
    [0, 1], ink 1.0 on black (the model side repeats it to 3 channels if it wants RGB).

    Args:
        source: the sketch source.
        image_size: S in pixels (224 in the paper).
        line_width: pen width in 256-box units (see :func:`data.render.render`).
        center: centre the drawing in the box before rendering (see the module
            docstring: top-left alignment leaks the rotation); False keeps it top-left.
        ink_levels: images as uint8 (1, S, S) ink levels 0..255 instead (the float value
            is ``level / 255``); also settable later as the attribute.
        cache: batches (``__getitems__``) read from the source's rasters drawn once, where it
            offers them (a store: :meth:`data.store.StoreSketches.raster_levels`, built on
            first use, S * S bytes a sketch on disk): the same pixels, without drawing.
            ``dataset[i]`` still draws (the reference). None: only where the source builds
            one by default (a store: when it takes at most 2 GB).
    """

    def __init__(self, source: SketchSource, image_size: int = 224, line_width: float = 3.0, center: bool = True,
                 ink_levels: bool = False, cache: bool | None = False) -> None:
        super().__init__(source, center)
        self._set_raster(image_size, line_width, ink_levels, cache)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        strokes, label = self._fitted(i)
        return self._raster(strokes), label

    def __getitems__(self, indices: Sequence[int]) -> Sequence[tuple[torch.Tensor, int]]:
        """``[self[i] for i in indices]``, the batch drawn at once (module docstring)."""
        if not self.batched:
            return [self[i] for i in indices]
        table = self.cached_rasters()
        if table is not None:  # drawn once: no need to read the drawings at all
            return StackedSamples(self._from_levels(table.gather(indices)), self.labels[np.asarray(indices, np.int64)])
        xy, stroke_end, offsets, labels = self._packed_fitted(indices)
        return StackedSamples(self._rasters(xy, stroke_end, offsets), labels)


class StrokeDataset(_StrokeTensors, _SketchDataset):
    """Sketches as stroke tensors for the TCN branch.

    ``__getitem__(i) -> (strokes, label)``: strokes a float32 tensor (T, 4) of rows
    ``[x, y, p1, p2]`` with x, y in [0, 1], zero padding rows (see :mod:`data.strokes`,
    which also states the rule for drawings with more than T points).

    Args:
        source: the sketch source.
        max_len: T (100 in the paper).
        center: centre the drawing in the box first (see the module docstring).
    """

    def __init__(self, source: SketchSource, max_len: int = 100, center: bool = True) -> None:
        super().__init__(source, center)
        self._set_strokes(max_len)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        strokes, label = self._fitted(i)
        return self._stroke_tensor(strokes), label

    def __getitems__(self, indices: Sequence[int]) -> Sequence[tuple[torch.Tensor, int]]:
        """``[self[i] for i in indices]``: gathered from the prepared tensors when the source
        has them, else packed and encoded at once (module docstring)."""
        if not self.batched:
            return [self[i] for i in indices]
        if self.prepared() is not None:  # no need to read the drawings at all
            tensors = self._stroke_tensors(indices)
            labels = self.labels[np.asarray(indices, dtype=np.int64)]
        else:
            xy, stroke_end, offsets, labels = self._packed_fitted(indices)
            tensors = self._stroke_tensors(indices, (xy, stroke_end, offsets))
        return StackedSamples(tensors, labels)


class SketchPair(NamedTuple):
    """One sketch in both forms, or a batch of them.

    An item of :class:`PairedDataset` holds ``raster`` float32 (1, S, S) and ``strokes``
    float32 (T, 4); torch's default collate keeps the type (a named tuple), so a DataLoader
    batch holds ``raster`` (B, 1, S, S) and ``strokes`` (B, T, 4), and pinned memory keeps it
    too. ``raster, strokes = pair`` unpacks it; :meth:`to` moves both, as a tensor's ``to``
    would, so a loop written for ``(x, y)`` batches can call ``x.to(device)`` on it.
    """

    raster: torch.Tensor
    strokes: torch.Tensor

    def to(self, *args: Any, **kwargs: Any) -> "SketchPair":
        """Both tensors through ``Tensor.to(*args, **kwargs)`` (device, dtype, non_blocking ...)."""
        return SketchPair(self.raster.to(*args, **kwargs), self.strokes.to(*args, **kwargs))


class PairedDataset(_Rasters, _StrokeTensors, _SketchDataset):
    """Sketches as raster *and* stroke tensor, for training the two branches together.

    ``__getitem__(i) -> (SketchPair(raster, strokes), label)``: ``raster`` is exactly
    ``RasterDataset(source, image_size, line_width, center)[i][0]`` and ``strokes`` exactly
    ``StrokeDataset(source, max_len, center)[i][0]``, from one reading of the drawing, so the
    two show the same sketch fitted to the box the same way. A DataLoader batch is
    ``(SketchPair(raster (B, 1, S, S), strokes (B, T, 4)), labels (B,))``. The split is the
    source's, as for the other datasets.

    The batched path (``__getitems__``) packs and fits the batch once for both forms: the
    rasters drawn by :func:`data.render.render_packed`, the stroke tensors gathered from the
    split's prepared tensors when the source offers them (a store), else encoded from the
    same packed batch.

    Args:
        source: the sketch source.
        image_size, line_width: as in :class:`RasterDataset`.
        max_len: T, as in :class:`StrokeDataset`.
        center: centre the drawing in the box first (module docstring), for both forms.
        cache: batches with rasters read from the source's rasters drawn once, as in
            :class:`RasterDataset` (with a store's prepared stroke tensors, a batch then
            reads no drawing at all).
    """

    def __init__(self, source: SketchSource, image_size: int = 224, line_width: float = 3.0, max_len: int = 100,
                 center: bool = True, cache: bool | None = False) -> None:
        super().__init__(source, center)
        self._set_raster(image_size, line_width, cache=cache)
        self._set_strokes(max_len)

    def __getitem__(self, i: int) -> tuple[SketchPair, int]:
        strokes, label = self._fitted(i)
        return SketchPair(self._raster(strokes), self._stroke_tensor(strokes)), label

    def __getitems__(self, indices: Sequence[int]) -> Sequence[tuple[SketchPair, int]]:
        """``[self[i] for i in indices]``, the batch built at once (class docstring)."""
        if not self.batched:
            return [self[i] for i in indices]
        table = self.cached_rasters()
        if table is not None and self.prepared() is not None:  # both forms made once: no drawing read
            rasters = self._from_levels(table.gather(indices))
            return StackedSamples(SketchPair(rasters, self._stroke_tensors(indices)),
                                  self.labels[np.asarray(indices, np.int64)])
        xy, stroke_end, offsets, labels = self._packed_fitted(indices)
        rasters = self._rasters(xy, stroke_end, offsets)
        return StackedSamples(SketchPair(rasters, self._stroke_tensors(indices, (xy, stroke_end, offsets))), labels)


class StackedSamples(Sequence):
    """A batch built at once, read as its samples: ``batch[i] == (input_i, label_i)`` as
    ``dataset[i]`` gives them (``input_i`` a view of the stacked tensor, ``label_i`` an int).

    :func:`collate_samples` turns it into the DataLoader batch without copying; any other
    collate function sees an ordinary sequence of samples.

    Args:
        inputs: the stacked inputs, (B, ...) tensor or a :class:`SketchPair` of them.
        labels: B integer labels (any sequence or array).
    """

    __slots__ = ("inputs", "labels")

    def __init__(self, inputs: torch.Tensor | SketchPair, labels: Sequence[int] | np.ndarray) -> None:
        self.inputs = inputs
        self.labels = torch.as_tensor(np.asarray(labels, dtype=np.int64))
        size = len(inputs[0]) if isinstance(inputs, SketchPair) else len(inputs)
        if self.labels.dim() != 1 or len(self.labels) != size:
            raise ValueError(f"StackedSamples: {size} inputs but labels of shape {tuple(self.labels.shape)}")

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if isinstance(self.inputs, SketchPair):
            return SketchPair(*(t[i] for t in self.inputs)), int(self.labels[i])
        return self.inputs[i], int(self.labels[i])

    def collated(self) -> list:
        """What ``default_collate`` makes of the samples: ``[inputs, labels]``, inputs
        contiguous, labels int64, with no copy where the inputs are contiguous already."""
        if isinstance(self.inputs, SketchPair):
            return [SketchPair(*(t.contiguous() for t in self.inputs)), self.labels]
        return [self.inputs.contiguous(), self.labels]


def collate_samples(batch: Sequence) -> Any:
    """The DataLoaders' ``collate_fn``: a :class:`StackedSamples` batch as it stands, any
    other list of samples through torch's ``default_collate``; the same batch either way."""
    if isinstance(batch, StackedSamples):
        return batch.collated()
    return default_collate(batch)
