"""Sketch augmentations (algorithms/augment.py): shapes, determinism under a seed, the identity
setting, each stage against what it promises (a flip is a flip, an erased block is zero and
nothing else changes, dropped rows leave the kept ones in order), the stroke invariants
(padding all zero, valid rows first, one pen state per row, every sketch ending with a
pen-up) and the torchrun layout (a process's rows are augmented as in one process)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from algorithms import Draws, RasterAugment, StrokeAugment
from config import load_config
from engine import build


def draws(seed: int, rank: int = 0, world: int = 1) -> Draws:
    return Draws(torch.Generator().manual_seed(seed), rank, world)


@pytest.fixture(scope="module")
def rasters() -> torch.Tensor:
    cfg = load_config("cnn_rotation", {"data.num_classes": 6, "data.train_per_class": 1, "data.image_size": 48})
    data = build.build_dataset(cfg, "train")
    return torch.stack([data[i][0] for i in range(6)])  # (6, 1, 48, 48)


@pytest.fixture(scope="module")
def strokes() -> torch.Tensor:
    cfg = load_config("tcn_rotation", {"data.num_classes": 6, "data.train_per_class": 1})
    data = build.build_dataset(cfg, "train")
    x = torch.stack([data[i][0] for i in range(6)])
    x[5] = 0  # an empty sketch must stay empty
    return x


# ---------------------------------------------------------------- rasters
def test_raster_shapes_range_and_determinism(rasters):
    aug = RasterAugment(erase=0.5)
    a, b = aug(rasters, draws(0)), aug(rasters, draws(0))
    assert a.shape == rasters.shape and a.dtype == rasters.dtype
    assert torch.equal(a, b)  # same seed, same augmentation
    assert not torch.equal(a, aug(rasters, draws(1)))
    assert a.min() >= 0 and a.max() <= 1
    assert not torch.equal(a, rasters)


def test_raster_identity_returns_the_input_and_a_zero_strength_map_is_the_identity(rasters):
    assert RasterAugment.identity()(rasters, draws(0)) is rasters
    # The sampling path itself, with a map that moves nothing (a crop of the whole image):
    still = RasterAugment(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), rotation=0.0, shear=0.0,
                          scale=(1.0, 1.0), shift=0.0, flip=0.0)
    out = still._geometric(rasters, draws(0))
    torch.testing.assert_close(out, rasters, rtol=0, atol=1e-5)


def test_raster_flip_is_a_mirror_image(rasters):
    flip = RasterAugment(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), rotation=0.0, shear=0.0,
                         scale=(1.0, 1.0), shift=0.0, flip=1.0)
    torch.testing.assert_close(flip(rasters, draws(0)), rasters.flip(-1), rtol=0, atol=1e-5)


def test_raster_crop_zooms_in(rasters):
    # A crop of a quarter of the area (half the side) shows a part of the sketch twice as large:
    # the ink of the output covers more of the image than the same part did in the input.
    crop = RasterAugment(crop_scale=(0.25, 0.25), crop_ratio=(1.0, 1.0), rotation=0.0, shear=0.0,
                         scale=(1.0, 1.0), shift=0.0, flip=0.0)
    theta = crop._theta(6, draws(0), torch.device("cpu"))
    torch.testing.assert_close(theta[:, 0, 0], torch.full((6,), 0.5))
    torch.testing.assert_close(theta[:, 1, 1], torch.full((6,), 0.5))
    assert (theta[:, :, 2].abs() <= 0.5 + 1e-6).all()  # the crop stays inside the image


def test_raster_erase_zeroes_one_block_and_nothing_else(rasters):
    erase = dataclasses.replace(RasterAugment.identity(), erase=1.0, erase_area=(0.05, 0.2))
    x = torch.ones_like(rasters)  # all ink: the erased block is exactly the zeros
    out = erase(x, draws(3))
    for img in out[:, 0]:
        zero = img == 0
        assert torch.equal(img[~zero], torch.ones_like(img[~zero]))
        rows, cols = zero.any(1).nonzero().flatten(), zero.any(0).nonzero().flatten()
        h, w = len(rows), len(cols)
        assert zero.sum() == h * w  # one rectangle
        assert rows.max() - rows.min() + 1 == h and cols.max() - cols.min() + 1 == w
        assert 0.04 <= h * w / img.numel() <= 0.22  # the area range, up to rounding of the sides


def test_raster_settings_are_checked():
    with pytest.raises(ValueError, match="raster augmentation: unknown augmentation setting 'colour'"):
        RasterAugment.from_params({"colour": 0.8})
    with pytest.raises(ValueError, match="crop_scale must satisfy 0.0 < low <= high <= 1.0"):
        RasterAugment.from_params({"crop_scale": [0.5, 1.5]})
    with pytest.raises(ValueError, match="flip must be a number in \\[0.0, 1.0\\]"):
        RasterAugment(flip=2)


# ---------------------------------------------------------------- strokes
def assert_valid_strokes(x: torch.Tensor) -> None:
    pen = x[..., 2:]
    valid = pen.sum(-1) > 0
    assert torch.equal(x[~valid], torch.zeros_like(x[~valid]))  # padding rows all zero
    assert ((pen == 0) | (pen == 1)).all() and (pen.sum(-1) <= 1).all()  # one pen state per row
    counts = valid.sum(1)
    for i, n in enumerate(counts.tolist()):
        assert valid[i, :n].all() and not valid[i, n:].any()  # valid rows first
        if n:
            assert x[i, n - 1, 3] == 1  # the sketch ends with a pen-up
    coords = x[..., :2][valid]
    assert coords.min() >= 0 and coords.max() <= 1


def test_stroke_shapes_invariants_and_determinism(strokes):
    aug = StrokeAugment(drop_stroke=0.3, drop_point=0.3)
    a = aug(strokes, draws(0))
    assert a.shape == strokes.shape
    assert_valid_strokes(strokes)
    assert_valid_strokes(a)
    assert torch.equal(a, aug(strokes, draws(0)))
    assert not torch.equal(a, aug(strokes, draws(1)))
    assert torch.equal(a[5], torch.zeros_like(a[5]))  # an empty sketch stays empty
    assert ((a[:5, :, 2:].sum(-1) > 0).sum(1) < (strokes[:5, :, 2:].sum(-1) > 0).sum(1)).any()


def test_stroke_identity_returns_the_input(strokes):
    assert StrokeAugment.identity()(strokes, draws(0)) is strokes


def test_stroke_drops_keep_the_other_rows_in_order(strokes):
    drop = dataclasses.replace(StrokeAugment.identity(), drop_stroke=0.5, drop_point=0.5)
    out = drop(strokes, draws(4))
    assert_valid_strokes(out)
    for src, dst in zip(strokes, out):
        rows = [tuple(r) for r in src.tolist()]
        kept = [tuple(r) for r in dst.tolist() if r[2] + r[3] > 0]
        it = iter(rows)
        assert all(any(k == r for r in it) for k in kept)  # a subsequence: order kept, values untouched
        ends_in, ends_out = sum(r[3] for r in rows), sum(r[3] for r in kept)
        assert ends_out >= (1 if ends_in else 0)
        # every kept stroke keeps its pen-up row: the pen-ups kept are whole strokes kept
        assert ends_out <= ends_in


def test_dropping_every_stroke_drops_none(strokes):
    everything = dataclasses.replace(StrokeAugment.identity(), drop_stroke=1.0)
    assert torch.equal(everything(strokes, draws(0)), strokes)


def test_stroke_geometry_keeps_pens_rows_and_size(strokes):
    geo = StrokeAugment(rotation=30.0, shear=10.0, scale=(0.7, 1.3), jitter=0.02, drop_stroke=0.0, drop_point=0.0)
    out = geo(strokes, draws(5))
    assert_valid_strokes(out)
    assert torch.equal(out[..., 2:], strokes[..., 2:])  # same rows, same pen states
    assert not torch.allclose(out[..., :2], strokes[..., :2])
    valid = strokes[..., 2:].sum(-1) > 0
    for i in range(5):
        before = strokes[i, valid[i], :2]
        after = out[i, valid[i], :2]
        extent = lambda c: (c.max(0).values - c.min(0).values).max()  # noqa: E731
        assert extent(after) == pytest.approx(min(float(extent(before)), 1.0), abs=1e-5)
        centre = (after.max(0).values + after.min(0).values) / 2
        torch.testing.assert_close(centre, torch.tensor([0.5, 0.5]), rtol=0, atol=1e-5)


def test_stroke_settings_are_checked():
    with pytest.raises(ValueError, match="stroke augmentation: drop_point must be a number in \\[0.0, 1.0\\]"):
        StrokeAugment.from_params({"drop_point": -0.1})
    with pytest.raises(ValueError, match="scale must be a pair"):
        StrokeAugment.from_params({"scale": 1.2})


# ---------------------------------------------------------------- torchrun layout
def test_draws_give_each_process_its_rows_of_the_global_draw():
    full = draws(7).uniform(6, 2)
    for rank in range(3):
        torch.testing.assert_close(draws(7, rank, 3).uniform(2, 2), full[rank::3], rtol=0, atol=0)


@pytest.mark.parametrize("kind", ["raster", "stroke"])
def test_a_process_augments_its_rows_as_one_process_would(rasters, strokes, kind):
    x, aug = (rasters, RasterAugment(erase=0.5)) if kind == "raster" else (strokes, StrokeAugment())
    whole = aug(x, draws(11))
    for rank in range(2):
        part = aug(x[rank::2], draws(11, rank, 2))
        torch.testing.assert_close(part, whole[rank::2], rtol=0, atol=1e-6)
