"""Whole batches with array operations equal the per-sketch reference path, bit for bit, on
the real Quick, Draw! sample: the fit to the box, the rasters, the stroke tensors prepared
once (and their cache beside the store), the datasets' ``__getitems__`` through a
DataLoader, and a short training run whose loss curve is the reference path's."""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import data.store as store_module
from config import load_config
from data.datasets import PairedDataset, RasterDataset, SketchPair, StackedSamples, StrokeDataset, collate_samples
from data.render import INK_LEVELS, render, render_packed
from data.sketch import fit_packed, fit_to_box, pack_sketches, ragged_index
from data.store import StoreSketches
from data.strokes import PackedStrokeTensors, packed_stroke_rows, to_stroke_tensor
from data.synthetic import SyntheticSketches
from engine.trainer import Trainer
from tests.common import needs_quickdraw


def bits(a) -> np.ndarray:
    """float32 arrays compared as integers: -0.0 against +0.0 or two NaNs would show."""
    return np.ascontiguousarray(np.asarray(a, dtype=np.float32)).view(np.uint32)


@pytest.fixture(scope="module")
def sample_store(quickdraw_store):
    """Every simplified drawing of the sample (6,470, 341 classes) in one split, plus a few
    classes in every split for the training run."""
    return quickdraw_store({"train": 10**6, "val": 0, "query": 0, "gallery": 0})


@pytest.fixture(scope="module")
def sample(sample_store):
    source = StoreSketches(sample_store, "train")
    sketches = [source[i] for i in range(len(source))]
    return source, sketches


# ----------------------------------------------------------------------------- helpers


def test_ragged_index_and_pack_by_hand():
    assert ragged_index([5, 0, 9], [2, 0, 3]).tolist() == [5, 6, 9, 10, 11]
    assert ragged_index([], []).tolist() == []
    xy, end, offsets = pack_sketches([[[[1, 2], [3, 4]], [[5, 6]]], [[[7, 8], [9, 9], [0, 1]]]])
    assert xy.tolist() == [[1, 2], [3, 4], [5, 6], [7, 8], [9, 9], [0, 1]] and xy.dtype == np.float32
    assert end.tolist() == [False, True, True, False, False, True] and offsets.tolist() == [0, 3, 6]


def test_fit_packed_by_hand():
    # A 10 x 4 drawing centred in the 255 box: scale 25.5, the short axis shifted by (255 - 102) / 2.
    xy, _, offsets = pack_sketches([[[[0, 0], [10, 4]]], [[[3, 3]]]])
    fitted = fit_packed(xy, offsets)
    assert fitted.tolist() == [[0.0, 76.5], [255.0, 178.5], [127.5, 127.5]]
    assert fit_packed(xy, offsets, center=False).tolist() == [[0.0, 0.0], [255.0, 102.0], [0.0, 0.0]]
    with pytest.raises(ValueError, match="at least one point"):
        fit_packed(xy, [0, 2, 2, 3])


# ----------------------------------------------------------------------------- real sample


@needs_quickdraw
@pytest.mark.parametrize("center", [True, False])
def test_fit_packed_is_fit_to_box_bit_for_bit_on_the_real_sample(sample, center):
    _, sketches = sample
    xy, _, offsets = pack_sketches(sketches)
    ref = np.concatenate([np.concatenate(fit_to_box(s.strokes, center=center)) for s in sketches])
    assert np.array_equal(bits(fit_packed(xy, offsets, center=center)), bits(ref))


@needs_quickdraw
@pytest.mark.parametrize("size", [224, 28])  # 28 px: a 1-pixel pen, whose dots are discs
def test_render_packed_is_render_bit_for_bit_on_the_real_sample(sample, size):
    _, sketches = sample
    chosen = sketches if size == 224 else sketches[::3]
    # Dots as render draws them: a one-point stroke and a stroke whose points coincide.
    dotted = [[[[10, 10]], [[40, 40], [200, 90]]], [[[100, 100], [100, 100], [100, 100]]]]
    xy, end, offsets = pack_sketches(chosen + [fit_to_box(d) for d in dotted])
    xy = fit_packed(xy, offsets)
    levels = render_packed(xy, end, offsets, size=size)
    assert levels.shape == (len(chosen) + 2, size, size) and levels.dtype == np.uint8
    for i, sketch in enumerate(chosen + dotted):
        ref = render(fit_to_box(sketch.strokes if hasattr(sketch, "strokes") else sketch), size=size)
        assert np.array_equal(bits(INK_LEVELS[levels[i]]), bits(ref)), i
    assert levels[-1].max() == 255 and levels[-2].max() == 255  # the dots are drawn


def test_ink_levels_are_renders_floats():
    levels = np.arange(256, dtype=np.uint8)
    assert np.array_equal(bits(INK_LEVELS), bits(levels.astype(np.float32) / 255.0))


@needs_quickdraw
@pytest.mark.parametrize("max_len, center", [(100, True), (100, False), (30, True)])
def test_prepared_stroke_tensors_are_to_stroke_tensor_bit_for_bit(sample, max_len, center):
    _, sketches = sample
    sketches = sketches if max_len == 100 else sketches[::7]  # most sketches need the rule at 30: slow
    xy, end, offsets = pack_sketches(sketches)
    rows, row_offsets = packed_stroke_rows(fit_packed(xy, offsets, center=center), end, offsets, max_len)
    table = PackedStrokeTensors.from_rows(rows, row_offsets, max_len)
    long = [i for i, s in enumerate(sketches) if sum(len(p) for p in s.strokes) > max_len]
    assert len(long) > 100  # the >max_len rule is exercised (RDP and, at 30, the endpoint rule)
    order = np.random.default_rng(0).permutation(len(sketches))
    got = table.gather(order)
    ref = np.stack([to_stroke_tensor(fit_to_box(sketches[i].strokes, center=center), max_len=max_len) for i in order])
    assert got.shape == (len(sketches), max_len, 4)
    assert np.array_equal(bits(got), bits(ref))
    assert table.gather([]).shape == (0, max_len, 4)


@needs_quickdraw
def test_store_packed_batch_is_its_sketches(sample):
    source, sketches = sample
    idx = [5, 0, 4000, 5]
    xy, end, offsets, labels = source.packed(idx)
    ref_xy, ref_end, ref_offsets = pack_sketches([sketches[i] for i in idx])
    assert np.array_equal(xy, ref_xy) and np.array_equal(end, ref_end) and np.array_equal(offsets, ref_offsets)
    assert labels.tolist() == [sketches[i].label for i in idx]
    with pytest.raises(IndexError):
        source.packed([len(source)])


@needs_quickdraw
def test_datasets_build_batches_equal_to_their_items(sample):
    source, _ = sample
    idx = np.random.default_rng(1).permutation(len(source))[:120].tolist()
    for ds in (StrokeDataset(source), StrokeDataset(source, max_len=40, center=False), RasterDataset(source),
               RasterDataset(source, image_size=40, center=False),
               StrokeDataset(SyntheticSketches("train", 3, 12)), RasterDataset(SyntheticSketches("train", 3, 12), 64)):
        items = idx if len(ds) == len(source) else list(range(len(ds)))[::-1]
        batch = ds.__getitems__(items)
        assert len(batch) == len(items)
        for i, (x, y) in zip(items, batch):
            ref_x, ref_y = ds[i]
            assert x.dtype == ref_x.dtype and x.shape == ref_x.shape and y == ref_y and type(y) is int
            assert torch.equal(x.view(torch.int32), ref_x.view(torch.int32)), (type(ds).__name__, i)


@needs_quickdraw
def test_rasters_as_ink_levels_are_the_float_rasters_levels(sample):
    source, _ = sample
    idx = np.random.default_rng(2).permutation(len(source))[:150].tolist()
    for size in (224, 28):
        floats = RasterDataset(source, image_size=size)
        levels = RasterDataset(source, image_size=size, ink_levels=True)
        batch = levels.__getitems__(idx)
        for i, (x, y) in zip(idx, batch):
            ref_x, ref_y = floats[i]
            assert x.dtype == torch.uint8 and x.shape == (1, size, size) and y == ref_y
            assert torch.equal(x, levels[i][0])  # the per-sketch path gives levels too
            assert np.array_equal(bits(INK_LEVELS[x.numpy()]), bits(ref_x)), (size, i)


@needs_quickdraw
def test_loader_batches_with_workers_equal_the_reference(sample):
    source, _ = sample
    order = torch.randperm(len(source), generator=torch.Generator().manual_seed(0))[:96].tolist()
    for make in (lambda: StrokeDataset(source), lambda: RasterDataset(source, image_size=48)):
        batches = {}
        for name, workers, batched in (("reference", 0, False), ("fast", 0, True), ("workers", 2, True)):
            ds = make()
            ds.batched = batched
            loader = torch.utils.data.DataLoader(ds, batch_size=32, sampler=order, num_workers=workers)
            batches[name] = list(loader)
            # The trainer's collate_fn, in the main process and in workers
            collated = torch.utils.data.DataLoader(ds, batch_size=32, sampler=order, num_workers=workers,
                                                   collate_fn=collate_samples)
            batches[name + " collate_samples"] = list(collated)
        for name in ("fast", "workers", "reference collate_samples", "fast collate_samples",
                     "workers collate_samples"):
            assert len(batches[name]) == len(batches["reference"]) == 3
            for (x, y), (rx, ry) in zip(batches[name], batches["reference"]):
                assert torch.equal(x, rx) and torch.equal(y, ry), name


def _tensors(batch) -> list[torch.Tensor]:
    """The tensors of a collated batch, in order, with the container types checked."""
    assert type(batch) is list and len(batch) == 2
    inputs, labels = batch
    return [*inputs, labels] if isinstance(inputs, SketchPair) else [inputs, labels]


def test_stacked_batches_collate_to_what_default_collate_makes(sample):
    """collate_samples hands a batch built at once on without copying it, and gives what
    default_collate makes of the same samples one by one: types, dtypes, shapes, strides, bits."""
    source, _ = sample
    synthetic = SyntheticSketches("train", 3, 12)
    idx = np.random.default_rng(3).permutation(len(source))[:40].tolist()
    cases = [(StrokeDataset(source), idx), (StrokeDataset(synthetic), [5, 0, 17, 3]),
             (RasterDataset(source, image_size=32), idx), (RasterDataset(source, image_size=32, ink_levels=True), idx),
             (PairedDataset(source, image_size=24), idx), (PairedDataset(synthetic, image_size=24), [2, 9])]
    for ds, items in cases:
        stacked = ds.__getitems__(items)
        assert isinstance(stacked, StackedSamples) and len(stacked) == len(items)
        fast, reference = collate_samples(stacked), torch.utils.data.default_collate([ds[i] for i in items])
        assert isinstance(fast[0], SketchPair) == isinstance(ds, PairedDataset)
        for got, want in zip(_tensors(fast), _tensors(reference), strict=True):
            assert got.dtype == want.dtype and got.shape == want.shape and got.stride() == want.stride()
            assert torch.equal(got.view(torch.uint8), want.view(torch.uint8)), type(ds).__name__
        # no copy: the batch is the dataset's tensor itself
        inputs = stacked.inputs if not isinstance(ds, PairedDataset) else stacked.inputs.raster
        first = fast[0] if not isinstance(ds, PairedDataset) else fast[0].raster
        assert first.data_ptr() == inputs.data_ptr()
        # read as samples: what the dataset gives one at a time, labels as ints
        for k in (0, -1):
            x, y = stacked[k]
            ref_x, ref_y = ds[items[k]]
            assert type(y) is int and y == ref_y
            for a, b in zip(x if isinstance(x, SketchPair) else [x], ref_x if isinstance(ref_x, SketchPair) else [ref_x]):
                assert torch.equal(a, b)
        assert [y for _, y in stacked[1:3]] == [ds[i][1] for i in items[1:3]]
    # other lists of samples still go through default_collate
    plain = [(torch.ones(2), 1), (torch.zeros(2), 4)]
    x, y = collate_samples(plain)
    assert x.tolist() == [[1, 1], [0, 0]] and y.tolist() == [1, 4] and y.dtype == torch.int64


def test_stacked_samples_need_one_label_per_input():
    with pytest.raises(ValueError, match="3 inputs but labels of shape"):
        StackedSamples(torch.zeros(3, 2), [1, 2])
    with pytest.raises(ValueError, match="2 inputs but labels of shape"):
        StackedSamples(SketchPair(torch.zeros(2, 1, 4, 4), torch.zeros(2, 5, 4)), [[1, 2]])


# ----------------------------------------------------------------------------- the cache


def _cache(store: Path, split: str = "train") -> Path:
    return store / split / "stroke_tensors_T100_centred"


@needs_quickdraw
def test_stroke_tensors_cached_beside_the_store_once_and_reused(tmp_path, sample_store):
    store = tmp_path / "store"
    shutil.copytree(sample_store, store, ignore=shutil.ignore_patterns("stroke_tensors_*", ".stroke_tensors_*"))
    source = StoreSketches(store, "train")
    assert not _cache(store).exists()  # a store as prepared before this existed
    first = StrokeDataset(source)  # builds the cache on first use
    meta = json.loads((_cache(store) / "meta.json").read_text())
    assert meta["sketches"] == len(source) and meta["max_len"] == 100 and meta["center"] is True
    rows = np.load(_cache(store) / "rows.npy")
    assert rows.shape == (meta["rows"] + 1, 4) and not rows[-1].any()
    stamp = os.stat(_cache(store) / "rows.npy").st_mtime_ns
    second = StrokeDataset(StoreSketches(store, "train"))
    assert os.stat(_cache(store) / "rows.npy").st_mtime_ns == stamp  # read, not rebuilt
    assert isinstance(second.prepared().rows, np.ndarray)
    assert torch.equal(torch.stack([x for x, _ in second.__getitems__([0, 7])]), torch.stack([first[0][0], first[7][0]]))
    # Pickled for a worker as the folder's name, not the arrays.
    blob = pickle.dumps(second.prepared())
    assert len(blob) < 1000 and np.array_equal(pickle.loads(blob).gather([3]), second.prepared().gather([3]))
    # Other settings are cached apart; a stale cache (another rule) is rebuilt, not used.
    StrokeDataset(source, max_len=50, center=False)
    assert (store / "train" / "stroke_tensors_T50_topleft" / "rows.npy").is_file()
    (_cache(store) / "meta.json").write_text(json.dumps(dict(meta, rule=meta["rule"] - 1)))
    StrokeDataset(StoreSketches(store, "train"))
    assert json.loads((_cache(store) / "meta.json").read_text())["rule"] == meta["rule"]
    assert not list((store / "train").glob(".*.partial"))


@needs_quickdraw
def test_a_store_that_cannot_be_written_builds_the_tensors_in_memory(tmp_path, sample_store, monkeypatch, capsys):
    store = tmp_path / "store"
    shutil.copytree(sample_store, store, ignore=shutil.ignore_patterns("stroke_tensors_*", ".stroke_tensors_*"))

    def refuse(self, folder, expect, progress):  # tests run as root, where chmod does not stop writes
        raise PermissionError(13, "Permission denied", str(folder))

    monkeypatch.setattr(StoreSketches, "_write_stroke_cache", refuse)
    ds = StrokeDataset(StoreSketches(store, "train"))
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot write" in err[0] and "built in memory" in err[0]
    assert not _cache(store).exists()
    assert torch.equal(ds.__getitems__([11])[0][0], ds[11][0])


@needs_quickdraw
def test_an_interrupted_cache_build_leaves_no_cache(tmp_path, sample_store, monkeypatch):
    store = tmp_path / "store"
    shutil.copytree(sample_store, store, ignore=shutil.ignore_patterns("stroke_tensors_*", ".stroke_tensors_*"))
    monkeypatch.setattr(store_module, "STROKE_CHUNK", 1000)  # several chunks

    real = store_module.packed_stroke_rows
    calls = {"n": 0}

    def dies_on_third(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(store_module, "packed_stroke_rows", dies_on_third)
    with pytest.raises(KeyboardInterrupt):
        StoreSketches(store, "train").stroke_tensors(progress=False)
    assert not _cache(store).exists() and not list((store / "train").glob(".*.partial"))
    monkeypatch.setattr(store_module, "packed_stroke_rows", real)
    table = StoreSketches(store, "train").stroke_tensors(progress=False)
    ds = StrokeDataset(StoreSketches(store, "train"))
    assert np.array_equal(table.gather([6000]), ds[6000][0].numpy()[None])


def _raster_cache(store: Path, name: str = "rasters_S224_w3_centred") -> Path:
    return store / "train" / name


@needs_quickdraw
def test_rasters_cached_beside_the_store_are_the_drawn_ones(tmp_path, sample_store, capsys):
    store = tmp_path / "store"
    shutil.copytree(sample_store, store, ignore=shutil.ignore_patterns("rasters_*", ".rasters_*"))
    source = StoreSketches(store, "train")
    plain = RasterDataset(source, image_size=40)
    assert plain.cached_rasters() is None and not list((store / "train").glob("rasters_*"))  # off by default
    idx = np.random.default_rng(4).permutation(len(source))[:200].tolist()
    for size, levels in ((224, True), (40, False)):
        cached = RasterDataset(source, image_size=size, ink_levels=levels, cache=True)  # builds it
        folder = _raster_cache(store, f"rasters_S{size}_w3_centred")
        meta = json.loads((folder / "meta.json").read_text())
        assert meta["sketches"] == len(source) and meta["size"] == size and meta["rule"].startswith("opencv-")
        assert (folder / "levels.npy").stat().st_size == len(source) * size * size + 128
        batch = cached.__getitems__(idx)
        drawn = RasterDataset(source, image_size=size, ink_levels=levels).__getitems__(idx)
        got, want = collate_samples(batch), collate_samples(drawn)
        assert got[0].dtype == (torch.uint8 if levels else torch.float32) and got[0].shape == (200, 1, size, size)
        assert torch.equal(got[0].view(torch.uint8), want[0].view(torch.uint8)) and torch.equal(got[1], want[1])
        x, y = cached[idx[5]]  # the per-sketch reference still draws
        assert torch.equal(x, got[0][5]) and y == int(got[1][5])
    assert "drawing the 224 px rasters of split 'train' once" in capsys.readouterr().err
    # Paired batches read both forms made once: the same batch as drawn
    paired, paired_drawn = PairedDataset(source, 40, cache=True), PairedDataset(source, 40)
    assert paired.cached_rasters() is not None and paired_drawn.cached_rasters() is None
    got, want = collate_samples(paired.__getitems__(idx)), collate_samples(paired_drawn.__getitems__(idx))
    for a, b in zip(_tensors(got), _tensors(want), strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    # Reused, not rebuilt; pickled for a worker as the folder's name
    stamp = os.stat(_raster_cache(store) / "levels.npy").st_mtime_ns
    again = RasterDataset(StoreSketches(store, "train"), cache=True, ink_levels=True)
    assert os.stat(_raster_cache(store) / "levels.npy").st_mtime_ns == stamp
    blob = pickle.dumps(again)
    assert len(blob) < 5000 and torch.equal(pickle.loads(blob).__getitems__([9])[0][0], again[9][0])
    # A cache made under another rule (another OpenCV, say) is drawn again
    meta = json.loads((_raster_cache(store) / "meta.json").read_text())
    (_raster_cache(store) / "meta.json").write_text(json.dumps(dict(meta, rule="opencv-0.0 something else")))
    RasterDataset(StoreSketches(store, "train"), cache=True)
    assert json.loads((_raster_cache(store) / "meta.json").read_text())["rule"] == meta["rule"]
    assert not list((store / "train").glob(".*.partial"))
    # A damaged cache (cut short, say by a full disk outside this code) is drawn again too
    levels = _raster_cache(store) / "levels.npy"
    with open(levels, "r+b") as f:
        f.truncate(levels.stat().st_size // 2)
    again = RasterDataset(StoreSketches(store, "train"), cache=True, ink_levels=True)
    assert levels.stat().st_size == len(source) * 224 * 224 + 128
    assert torch.equal(again.__getitems__([len(source) - 1])[0][0], again[len(source) - 1][0])
    # A source that is not a store has no cache to offer: the dataset draws
    synthetic = RasterDataset(SyntheticSketches("train", 2, 3), 32, cache=True)
    assert synthetic.cached_rasters() is None and torch.equal(synthetic.__getitems__([4])[0][0], synthetic[4][0])


@needs_quickdraw
def test_no_raster_cache_without_the_room_or_a_writable_store(tmp_path, sample_store, monkeypatch, capsys):
    store = tmp_path / "store"
    shutil.copytree(sample_store, store, ignore=shutil.ignore_patterns("rasters_*", ".rasters_*"))
    n = len(StoreSketches(store, "train"))
    real_usage = shutil.disk_usage
    monkeypatch.setattr(store_module.shutil, "disk_usage",
                        lambda p: real_usage(p)._replace(free=n * 64 * 64 + store_module.RASTER_FREE_MARGIN - 1))
    ds = RasterDataset(StoreSketches(store, "train"), image_size=64, cache=True)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no raster cache for split 'train'" in err[0] and "drawing on the fly" in err[0]
    assert ds.cached_rasters() is None and not list((store / "train").glob("*rasters_*"))
    assert torch.equal(ds.__getitems__([3])[0][0], ds[3][0])  # drawn instead
    monkeypatch.setattr(store_module.shutil, "disk_usage", real_usage)

    # By default (cache=None, data.raster_cache unset) only a small cache is built
    monkeypatch.setattr(store_module, "RASTER_AUTO_BYTES", n * 64 * 64 - 1)
    ds = RasterDataset(StoreSketches(store, "train"), image_size=64, cache=None)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "more than the" in err[0] and "data.raster_cache=True builds it anyway" in err[0]
    assert ds.cached_rasters() is None and not list((store / "train").glob("*rasters_*"))
    monkeypatch.setattr(store_module, "RASTER_AUTO_BYTES", n * 64 * 64)
    ds = RasterDataset(StoreSketches(store, "train"), image_size=64, cache=None)
    assert ds.cached_rasters() is not None and (store / "train" / "rasters_S64_w3_centred" / "levels.npy").is_file()
    assert torch.equal(ds.__getitems__([8])[0][0], ds[8][0])
    shutil.rmtree(store / "train" / "rasters_S64_w3_centred")
    capsys.readouterr()

    def refuse(self, folder, expect, progress):  # tests run as root, where chmod does not stop writes
        raise OSError(28, "No space left on device", str(folder))

    monkeypatch.setattr(StoreSketches, "_write_raster_cache", refuse)
    ds = RasterDataset(StoreSketches(store, "train"), image_size=64, cache=True)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "drawing the 64 px rasters" in err[0]  # what it set out to do, then why it did not
    assert "No space left on device" in err[1] and "drawn on the fly" in err[1]
    assert ds.cached_rasters() is None and torch.equal(ds.__getitems__([5])[0][0], ds[5][0])


@needs_quickdraw
def test_an_interrupted_raster_cache_build_leaves_no_cache(tmp_path, sample_store, monkeypatch):
    store = tmp_path / "store"
    shutil.copytree(sample_store, store, ignore=shutil.ignore_patterns("rasters_*", ".rasters_*"))
    monkeypatch.setattr(store_module, "RASTER_CHUNK", 1000)  # several chunks
    real, calls = store_module.render_packed, {"n": 0}

    def dies_on_third(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(28, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(store_module, "render_packed", dies_on_third)
    assert StoreSketches(store, "train").raster_levels(32, progress=False, log=lambda _: None) is None
    left = sorted(p.name for p in (store / "train").glob("*rasters_*"))
    assert left == [".rasters_S32_w3_centred.lock"]  # no cache, no partial folder (an empty lock file)
    monkeypatch.setattr(store_module, "render_packed", real)
    table = StoreSketches(store, "train").raster_levels(32, progress=False, log=lambda _: None)
    assert np.array_equal(table.gather([6000])[0], RasterDataset(StoreSketches(store, "train"), 32, ink_levels=True)[6000][0][0].numpy())


# ----------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def small_store(quickdraw_store):
    return quickdraw_store({"train": 6, "val": 2, "query": 1, "gallery": 1}, classes=["banana", "monkey"])


@needs_quickdraw
@pytest.mark.parametrize("name, extra", [("tcn_deform", {}), ("cnn_rotation_demo", {})])
def test_training_on_batched_loaders_follows_the_reference_loss_curve(tmp_path, small_store, monkeypatch, name, extra):
    def run(tag):
        cfg = load_config(name, {"data.source": "store", "data.path": str(small_store), "train.batch_size": 4,
                                 "train.epochs": 2, "train.device": "cpu", "train.workers": 0,
                                 "train.out": str(tmp_path / tag), **extra})
        return Trainer(cfg, progress=False).fit()

    used = {"batched": 0}
    real = RasterDataset.__getitems__ if name.startswith("cnn") else StrokeDataset.__getitems__
    cls = RasterDataset if name.startswith("cnn") else StrokeDataset

    def counting(self, indices):
        used["batched"] += self.batched
        return real(self, indices)

    monkeypatch.setattr(cls, "__getitems__", counting)
    fast = run("fast")
    assert used["batched"] > 0
    monkeypatch.setattr(cls, "batched", False)
    ref = run("ref")
    assert len(fast) == len(ref) == 2
    for a, b in zip(fast, ref):
        for key in ("train_loss", "val_loss", "train_acc", "val_acc"):
            assert b[key] == pytest.approx(a[key], rel=1e-6, abs=1e-7), (name, key)


@needs_quickdraw
@pytest.mark.parametrize("name", ["cnn_rotation_demo", "cnn_deform"])
def test_training_on_uint8_rasters_is_training_on_floats(tmp_path, small_store, name):
    # The loader sends ink levels and the views turn them into the same floats: the two
    # runs see the same inputs bit for bit, so every logged number and weight is equal.
    def run(tag, uint8):
        cfg = load_config(name, {"data.source": "store", "data.path": str(small_store), "train.batch_size": 4,
                                 "train.epochs": 1, "train.device": "cpu", "train.workers": 0,
                                 "data.image_size": 64, "train.uint8_rasters": uint8,
                                 "train.out": str(tmp_path / tag)})
        trainer = Trainer(cfg, progress=False)
        assert trainer.train_set.ink_levels is uint8 and trainer.val_set.ink_levels is uint8
        assert trainer.train_set[0][0].dtype == (torch.uint8 if uint8 else torch.float32)
        return trainer.fit(), trainer.model.state_dict()

    (levels, levels_weights), (floats, float_weights) = run("levels", True), run("floats", False)
    def timeless(history):
        return [{k: v for k, v in h.items() if k != "seconds"} for h in history]

    assert len(levels) == 1 and timeless(levels) == timeless(floats)
    for key, value in float_weights.items():
        assert torch.equal(levels_weights[key], value), key


@needs_quickdraw
def test_training_on_cached_rasters_is_training_on_drawn_ones(tmp_path, small_store):
    assert load_config("cnn_rotation_demo").data.raster_cache is None  # the default: a small cache only

    def run(tag, cache):
        cfg = load_config("cnn_rotation_demo", {"data.source": "store", "data.path": str(small_store),
                                                "train.batch_size": 4, "train.epochs": 1, "train.device": "cpu",
                                                "train.workers": 0, "data.image_size": 48, "data.raster_cache": cache,
                                                "train.out": str(tmp_path / tag)})
        trainer = Trainer(cfg, progress=False)
        assert (trainer.train_set.cached_rasters() is not None) is cache
        assert (trainer.val_set.cached_rasters() is not None) is cache
        return [{k: v for k, v in h.items() if k != "seconds"} for h in trainer.fit()], trainer.model.state_dict()

    (cached, cached_weights), (drawn, drawn_weights) = run("cached", True), run("drawn", False)
    assert len(cached) == 1 and cached == drawn
    for key, value in drawn_weights.items():
        assert torch.equal(cached_weights[key], value), key


def test_uint8_rasters_only_where_the_views_take_them(tmp_path):
    def datasets(name, **overrides):
        cfg = load_config(name, {"train.device": "cpu", "train.out": str(tmp_path), "data.num_classes": 2,
                                 "data.train_per_class": 2, "data.val_per_class": 1, "data.image_size": 64,
                                 **overrides})
        trainer = Trainer(cfg, progress=False)
        return trainer.train_set.ink_levels, trainer.val_set.ink_levels

    assert datasets("cnn_rotation") == (True, True)
    assert datasets("cnn_rotation", **{"train.views": "per_sample"}) == (False, False)
    assert datasets("cnn_supervised") == (False, False)
    assert datasets("cnn_simclr") == (False, False)
