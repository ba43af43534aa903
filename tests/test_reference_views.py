"""The batched pretext views equal the per-sample reference path, for every task and branch."""

import pytest
import torch

from algorithms import build_algorithm
from algorithms.reference import reference_views
from data.datasets import RasterDataset, StrokeDataset
from data.synthetic import SyntheticSketches

SOURCE = SyntheticSketches("train", per_class=1, num_classes=6, seed=5)


def batch(modality):
    ds = RasterDataset(SOURCE, image_size=64) if modality == "raster" else StrokeDataset(SOURCE)
    items = [ds[i] for i in range(len(ds))]
    return torch.stack([x for x, _ in items]), torch.tensor([y for _, y in items])


CASES = [
    ("rotation", {}),
    ("deformation", {"module": "released"}),
    ("deformation", {"module": "HC"}),
    ("deformation", {"custom": {"y": [2.1, 0.0, 1.0]}}),
    ("supervised", {}),
]


@pytest.mark.parametrize("modality", ["raster", "stroke"])
@pytest.mark.parametrize("name, params", CASES)
def test_batched_views_equal_per_sample_reference(modality, name, params):
    algorithm = build_algorithm(name, modality, **params)
    x, y = batch(modality)
    fast_inputs, fast_targets = algorithm.views(x, y)
    ref_inputs, ref_targets = reference_views(algorithm, x, y)
    assert torch.equal(fast_targets, ref_targets)
    assert fast_inputs.shape == ref_inputs.shape
    if modality == "raster" or name == "rotation":
        assert torch.equal(fast_inputs, ref_inputs)  # index moves and closed-form turns: bit for bit
    else:
        torch.testing.assert_close(fast_inputs, ref_inputs, rtol=0, atol=1e-6)
    # the views differ from the input where the task changes the sketch
    if name != "supervised":
        assert not torch.equal(fast_inputs[len(x):2 * len(x)], fast_inputs[: len(x)])


def test_released_stroke_order_reference_follows_the_applied_warp():
    algorithm = build_algorithm("deformation", "stroke", stroke_argument_order="released", allow_folding=True)
    x, y = batch("stroke")
    torch.testing.assert_close(algorithm.views(x, y)[0], reference_views(algorithm, x, y)[0], rtol=0, atol=1e-6)
