"""uint8 ink levels into the raster views (``train.uint8_rasters``): the conversion is the
correctly rounded ``level / 255`` on every path, and the views made from levels are the
views of the floats, bit for bit."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch

from algorithms import ALGORITHMS
from algorithms.base import _ink_by_table, ink_to_float
from algorithms.reference import reference_views
from algorithms.rotation import _level_views_cv2, rotate_raster


def nearest_float32(q: Fraction) -> np.float32:
    """The float32 nearest to q (ties to even), found by exact comparison with neighbours."""
    guess = np.float32(float(q))
    candidates = [np.nextafter(guess, np.float32(-1)), guess, np.nextafter(guess, np.float32(2))]
    best = min(abs(Fraction(float(c)) - q) for c in candidates)
    tied = [c for c in candidates if abs(Fraction(float(c)) - q) == best]
    return tied[0] if len(tied) == 1 else next(c for c in tied if not (c.view(np.uint32) & 1))


EXACT = np.array([nearest_float32(Fraction(level, 255)) for level in range(256)], dtype=np.float32)


def levels_batch(*shape: int, seed: int = 0) -> torch.Tensor:
    """Random levels with every value 0..255 in the first 256 positions."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, shape, generator=g, dtype=torch.uint8)
    x.view(-1)[:256] = torch.arange(256, dtype=torch.uint8)[torch.randperm(256, generator=g)]
    return x


def test_every_level_converts_to_the_correctly_rounded_quotient_on_both_paths():
    levels = torch.arange(256, dtype=torch.uint8).reshape(4, 64)
    cpu = ink_to_float(levels)
    table = _ink_by_table(levels, torch.empty(4, 64))  # the path of devices other than the CPU
    for got in (cpu, table):
        assert got.dtype == torch.float32 and got.shape == (4, 64)
        assert np.array_equal(got.numpy().reshape(-1).view(np.uint32), EXACT.view(np.uint32))
    # A device's reciprocal multiply would not do: it differs on many levels.
    assert (levels.float() * np.float32(1 / 255) != cpu).sum() > 100
    # Into a given tensor, from a non-contiguous view.
    out = torch.full((64, 4), -1.0)
    assert ink_to_float(levels.t(), out=out) is out and torch.equal(out, cpu.t())


def test_ink_to_float_refuses_what_is_not_levels():
    with pytest.raises(TypeError, match="uint8"):
        ink_to_float(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="contiguous float32"):
        ink_to_float(torch.zeros(2, 3, dtype=torch.uint8), out=torch.zeros(3, 2))
    with pytest.raises(ValueError, match="contiguous float32"):
        ink_to_float(torch.zeros(2, 3, dtype=torch.uint8), out=torch.zeros(2, 3, dtype=torch.float64))


@pytest.mark.parametrize("name, params", [("rotation", {}), ("deformation", {}),
                                          ("deformation", {"module": "HC"})])
@pytest.mark.parametrize("shape", [(3, 1, 32, 32), (2, 3, 17, 17), (1, 1, 224, 224)])
def test_views_of_levels_are_the_views_of_their_floats(name, params, shape):
    algorithm = ALGORITHMS[name].from_params("raster", params)
    assert algorithm.takes_ink_levels
    levels = levels_batch(*shape, seed=len(params))
    floats = torch.from_numpy(EXACT[levels.numpy()])
    got, got_targets = algorithm.views(levels)
    want, want_targets = algorithm.views(floats)
    assert got.dtype == torch.float32 and got.is_contiguous() and torch.equal(got_targets, want_targets)
    assert torch.equal(got.view(torch.int32), want.view(torch.int32))
    # The per-sample reference takes levels too (converted first).
    ref, _ = reference_views(algorithm, levels, torch.zeros(shape[0], dtype=torch.long))
    assert torch.equal(ref.view(torch.int32), want.view(torch.int32))


def test_only_raster_pretext_tasks_take_levels():
    assert not ALGORITHMS["rotation"].from_params("stroke", {}).takes_ink_levels
    assert not ALGORITHMS["deformation"].from_params("stroke", {}).takes_ink_levels
    for name in ("supervised", "simclr", "byol", "autoencoder"):
        assert not ALGORITHMS[name].from_params("raster", {}).takes_ink_levels, name


def test_turned_levels_by_opencv_are_torch_rot90():
    # The CPU turns levels with cv2.rotate; torch.rot90 is the definition of a turn.
    levels = levels_batch(3, 2, 19, 19, seed=7)
    for source in (levels, levels[:, 1:], levels.transpose(-1, -2)):
        expected = torch.cat([rotate_raster(source, k) for k in range(4)])
        assert torch.equal(_level_views_cv2(source), expected)
