"""Across packages: one pretext label means one picture in the raster and the stroke branch.

The rotation task's view k of a rendered sketch must equal the rendering of the sketch whose
strokes were turned by view k of the stroke branch (up to rasterisation), and deforming the
strokes must move ink the way deforming the raster does.
"""

import numpy as np
import pytest
import torch

from algorithms import DEFORMATION_MODULES, build_algorithm
from algorithms.deformation import deform_raster
from data.render import render
from data.sketch import fit_to_box
from data.strokes import from_stroke_tensor, to_stroke_tensor
from data.synthetic import SyntheticSketches

SIZE = 96


def sketches(n=6):
    source = SyntheticSketches("train", per_class=1, num_classes=n, seed=3)
    return [fit_to_box(source[i].strokes, center=True) for i in range(n)]


def iou(a, b, thr=0.3):
    a, b = a > thr, b > thr
    return (a & b).sum() / max((a | b).sum(), 1)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_rotation_label_is_the_same_turn_for_rasters_and_strokes(k):
    raster_task = build_algorithm("rotation", "raster")
    stroke_task = build_algorithm("rotation", "stroke")
    for strokes in sketches():
        raster = torch.from_numpy(render(strokes, size=SIZE))[None, None]
        tensor = torch.from_numpy(to_stroke_tensor(strokes, max_len=100))[None]
        raster_views, raster_targets = raster_task.views(raster, torch.zeros(1, dtype=torch.long))
        stroke_views, stroke_targets = stroke_task.views(tensor, torch.zeros(1, dtype=torch.long))
        assert raster_targets[k] == stroke_targets[k] == k
        turned_raster = raster_views[k, 0].numpy()
        rendered_turned_strokes = render(from_stroke_tensor(stroke_views[k].numpy()), size=SIZE)
        assert iou(turned_raster, rendered_turned_strokes) > 0.85
        assert np.abs(turned_raster - rendered_turned_strokes).mean() < 0.03
        # and it is not the same picture as the other turns (the check can fail)
        other = raster_views[(k + 1) % 4, 0].numpy()
        assert iou(other, rendered_turned_strokes) < 0.6


@pytest.mark.parametrize("name", ["HE", "VC", "released"])
def test_deformation_moves_ink_alike_in_both_branches(name):
    # Without the stroke branch's re-normalisation, warping the coordinates and warping the
    # pixel grid are the same map, so the two pictures must agree up to rasterisation.
    from algorithms.deformation import deform_strokes

    module = DEFORMATION_MODULES[name]
    unwarped = []
    for strokes in sketches(4):
        raster = torch.from_numpy(render(strokes, size=SIZE))[None, None]
        tensor = torch.from_numpy(to_stroke_tensor(strokes, max_len=100))[None]
        warped_raster = deform_raster(raster, module)[0, 0].numpy()
        warped_strokes = render(from_stroke_tensor(deform_strokes(tensor, module, normalize=False)[0].numpy()), size=SIZE)
        # A raster warp also stretches or thins the pen, so compare where the ink is, with
        # a 2-pixel tolerance, rather than pixel for pixel.
        agree = near_match(warped_raster, warped_strokes)
        assert agree > 0.9
        unwarped.append(near_match(raster[0, 0].numpy(), warped_strokes))
    # and the warp really moved ink: the undeformed picture matches far worse on average
    assert np.mean(unwarped) < 0.8


def near_match(a, b, radius=2, thr=0.3):
    """Smaller of: the share of a's ink within ``radius`` px of b's ink, and vice versa."""
    a = torch.from_numpy(a > thr).float()[None, None]
    b = torch.from_numpy(b > thr).float()[None, None]
    grow = lambda t: torch.nn.functional.max_pool2d(t, 2 * radius + 1, stride=1, padding=radius)
    return min(float((a * grow(b)).sum() / a.sum()), float((b * grow(a)).sum() / b.sum()))
