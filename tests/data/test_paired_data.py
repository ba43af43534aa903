"""The paired dataset (issue 18 item 1): each sketch as raster and stroke tensor at once.

A pair is checked against the single-modality datasets item for item (bit for bit), against
itself through the batched path, DataLoader workers and pickling, and for content: the
stroke tensor drawn back with the renderer is the raster (exactly for drawings that fit in
the tensor, closely for those the >max_len rule simplified), on synthetic sketches and on a
tiny store prepared from the shared Quick, Draw! sample."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from data.datasets import PairedDataset, RasterDataset, SketchPair, StrokeDataset
from data.render import render
from data.store import StoreSketches
from data.synthetic import SyntheticSketches
from tests.common import needs_quickdraw


def bits(t: torch.Tensor) -> torch.Tensor:
    """float32 tensors compared as integers: -0.0 against +0.0 or two NaNs would show."""
    return t.contiguous().view(torch.int32)


@pytest.fixture(scope="module")
def store(quickdraw_store):
    """A tiny store; monkeys and bushes bring drawings of more than 100 points (the
    >max_len rule), bananas and faces short ones."""
    return quickdraw_store({"train": 20, "val": 4, "query": 2, "gallery": 2},
                           classes=["monkey", "bush", "banana", "face"])


def synthetic(split: str = "train"):
    return SyntheticSketches(split, per_class=3, num_classes=6, seed=1)


SETTINGS = [  # (image_size, line_width, max_len, center)
    (48, 3.0, 100, True),
    (28, 6.0, 30, False),  # top-left, a 1-pixel pen; at 30 points most drawings are simplified
]


def check_pairs_equal_single_modality(source, image_size, line_width, max_len, center, indices):
    paired = PairedDataset(source, image_size=image_size, line_width=line_width, max_len=max_len, center=center)
    raster = RasterDataset(source, image_size=image_size, line_width=line_width, center=center)
    stroke = StrokeDataset(source, max_len=max_len, center=center)
    for i in indices:
        (pair, label), (img, r_label), (tensor, s_label) = paired[i], raster[i], stroke[i]
        assert isinstance(pair, SketchPair) and type(label) is int and label == r_label == s_label
        assert pair.raster.shape == (1, image_size, image_size) and pair.strokes.shape == (max_len, 4)
        assert torch.equal(bits(pair.raster), bits(img)) and torch.equal(bits(pair.strokes), bits(tensor)), i
    # The batched paths too, against each other's batched paths.
    batch = paired.__getitems__(indices)
    for (pair, label), (img, r_label), (tensor, s_label) in zip(batch, raster.__getitems__(indices),
                                                                stroke.__getitems__(indices)):
        assert type(label) is int and label == r_label == s_label
        assert torch.equal(bits(pair.raster), bits(img)) and torch.equal(bits(pair.strokes), bits(tensor))
    assert len(batch) == len(indices)


@pytest.mark.parametrize("setting", SETTINGS)
def test_pairs_are_the_single_modality_items_on_synthetic_sketches(setting):
    source = synthetic()
    check_pairs_equal_single_modality(source, *setting, indices=list(range(len(source)))[::-1])


@needs_quickdraw
@pytest.mark.parametrize("setting", SETTINGS)
def test_pairs_are_the_single_modality_items_on_a_store(store, setting):
    source = StoreSketches(store, "train")
    indices = np.random.default_rng(2).permutation(len(source))[:40].tolist()
    check_pairs_equal_single_modality(source, *setting, indices=indices + indices[:3])  # repeats too


def check_batched_is_per_sample(ds: PairedDataset, indices):
    batch = ds.__getitems__(indices)
    assert len(batch) == len(indices)
    for i, (pair, label) in zip(indices, batch):
        ref, ref_label = ds[i]
        assert type(pair) is SketchPair and label == ref_label and type(label) is int
        assert pair.raster.dtype == pair.strokes.dtype == torch.float32
        assert torch.equal(bits(pair.raster), bits(ref.raster)) and torch.equal(bits(pair.strokes), bits(ref.strokes)), i


def test_batched_path_is_the_per_sample_path_on_synthetic_sketches():
    source = synthetic()
    for setting in SETTINGS:
        check_batched_is_per_sample(PairedDataset(source, *setting), [5, 0, 17, 5, 9])
    ds = PairedDataset(source, 32)
    ds.batched = False  # the reference switch as on the other datasets
    assert [y for _, y in ds.__getitems__([3, 4])] == [ds[3][1], ds[4][1]]


@needs_quickdraw
def test_batched_path_is_the_per_sample_path_on_a_store(store):
    source = StoreSketches(store, "train")
    indices = np.random.default_rng(3).permutation(len(source)).tolist()
    for setting in SETTINGS:
        ds = PairedDataset(source, *setting)
        assert ds.prepared() is not None  # the store's stroke tensors prepared once: gathered, not encoded
        check_batched_is_per_sample(ds, indices)


def test_labels_classes_and_splits_are_the_sources():
    for split in ("train", "val"):
        source = synthetic(split)
        ds = PairedDataset(source, 32, max_len=50)
        assert len(ds) == len(source) == 18
        assert ds.num_classes == 6 and ds.class_names == source.class_names
        assert ds.labels.dtype == np.int64 and ds.labels.tolist() == [source[i].label for i in range(len(source))]
        assert ds.labels.tolist() == RasterDataset(source, 32).labels.tolist()
    train, val = PairedDataset(synthetic("train"), 32), PairedDataset(synthetic("val"), 32)
    assert not torch.equal(train[0][0].strokes, val[0][0].strokes)  # a split's own sketches


@needs_quickdraw
def test_store_labels_and_classes_pass_through(store):
    for split in ("train", "val"):
        source = StoreSketches(store, split)
        ds = PairedDataset(source, 32)
        assert ds.labels.tolist() == source.labels.tolist() == [ds[i][1] for i in range(len(ds))]
        assert ds.num_classes == 4 and ds.class_names == source.class_names


def test_bad_parameters_are_refused_in_one_line():
    source = synthetic()
    for kwargs, word in (({"image_size": 0}, "image_size"), ({"line_width": 0.0}, "line_width"),
                         ({"max_len": 0}, "max_len")):
        with pytest.raises(ValueError, match=word):
            PairedDataset(source, **kwargs)


# ----------------------------------------------------------------------------- same sketch in both forms


def draw_back(strokes: torch.Tensor, size: int, line_width: float) -> np.ndarray:
    """Render a stroke tensor's real rows, decoded here by hand: x, y in [0, 1] of the box,
    a row with p2 = 1 ends its stroke, rows with p1 = p2 = 0 are padding."""
    rows = strokes.numpy()
    rows = rows[(rows[:, 2] == 1) | (rows[:, 3] == 1)]
    ends = np.flatnonzero(rows[:, 3] == 1) + 1
    pieces = [p for p in np.split(rows[:, :2] * np.float32(255.0), ends) if len(p)]
    return render(pieces, size=size, line_width=line_width)


def check_drawn_back(source, size: int, line_width: float, max_len: int, min_long: int):
    ds = PairedDataset(source, image_size=size, line_width=line_width, max_len=max_len)
    pairs = [pair for pair, _ in ds.__getitems__(list(range(len(ds))))]
    rasters = np.stack([p.raster[0].numpy() for p in pairs])
    # diff[i, j]: mean absolute difference between sketch i's stroke tensor drawn back and sketch j's raster.
    diff = np.stack([np.abs(draw_back(p.strokes, size, line_width)[None] - rasters).mean(axis=(1, 2)) for p in pairs])
    points = np.array([sum(len(s) for s in source[i].strokes) for i in range(len(source))])
    fits = points <= max_len
    assert (~fits).sum() >= min_long  # the simplification rule is exercised
    same = np.diag(diff)
    # A drawing that fits in the tensor is drawn back pixel for pixel.
    assert np.all(same[fits] == 0.0), np.flatnonzero(same[fits])
    # A simplified one is close to its own raster and much closer to it than to any other.
    others = diff + np.diag(np.full(len(diff), np.inf))
    assert np.all(same < others.min(axis=1) / 3), (same, others.min(axis=1))
    assert same.mean() < 0.01 and diff[np.isfinite(others)].mean() > 10 * same.mean()
    assert rasters.mean() > 0.02  # there is ink to compare


def test_stroke_tensor_drawn_back_is_the_raster_on_synthetic_sketches():
    # Synthetic drawings have 12 to 88 points: at 50, a third of them are simplified.
    check_drawn_back(SyntheticSketches("train", per_class=5, num_classes=12, seed=4), 48, 3.0, 50, min_long=15)


@needs_quickdraw
def test_stroke_tensor_drawn_back_is_the_raster_on_a_store(store):
    check_drawn_back(StoreSketches(store, "train"), 48, 3.0, 100, min_long=5)


# ----------------------------------------------------------------------------- loaders


def loader_batches(ds: PairedDataset, order: list[int], workers: int, batched: bool):
    ds.batched = batched
    loader = torch.utils.data.DataLoader(ds, batch_size=8, sampler=order, num_workers=workers)
    return list(loader)


def check_loader(make, order):
    ref = loader_batches(make(), order, 0, batched=False)
    assert len(ref) == -(-len(order) // 8)
    for x, y in ref:
        assert type(x) is SketchPair and x.raster.ndim == 4 and x.raster.shape[:2] == (len(y), 1)
        assert x.strokes.shape == (len(y), 100, 4) and y.dtype == torch.int64
    for workers in (0, 2):
        for (x, y), (rx, ry) in zip(loader_batches(make(), order, workers, batched=True), ref, strict=True):
            assert type(x) is SketchPair and torch.equal(y, ry)
            assert torch.equal(bits(x.raster), bits(rx.raster)) and torch.equal(bits(x.strokes), bits(rx.strokes))


def test_loader_with_workers_gives_the_reference_batches_on_synthetic_sketches():
    source = synthetic()
    order = torch.randperm(len(source), generator=torch.Generator().manual_seed(0)).tolist()
    check_loader(lambda: PairedDataset(source, 40), order)


@needs_quickdraw
def test_loader_with_workers_gives_the_reference_batches_on_a_store(store):
    source = StoreSketches(store, "train")
    order = torch.randperm(len(source), generator=torch.Generator().manual_seed(0)).tolist()[:30]
    check_loader(lambda: PairedDataset(source, 40), order)


@needs_quickdraw
def test_a_store_backed_pair_dataset_pickles_small(store):
    ds = PairedDataset(StoreSketches(store, "train"), 40)
    blob = pickle.dumps(ds)
    assert len(blob) < 4000  # the store and its stroke tensors by folder, not their arrays
    back = pickle.loads(blob)
    (pair, label), (ref, ref_label) = back.__getitems__([7])[0], ds[7]
    assert label == ref_label and torch.equal(pair.raster, ref.raster) and torch.equal(pair.strokes, ref.strokes)


def test_sketch_pair_moves_like_a_tensor():
    pair = SketchPair(torch.zeros(2, 1, 4, 4), torch.ones(2, 5, 4))
    moved = pair.to("cpu", dtype=torch.float64, non_blocking=True)
    assert type(moved) is SketchPair
    assert moved.raster.dtype == moved.strokes.dtype == torch.float64
    assert torch.equal(moved.strokes, pair.strokes.double())
    raster, strokes = moved  # unpacks as a plain pair
    assert raster.shape == (2, 1, 4, 4) and strokes.shape == (2, 5, 4)
