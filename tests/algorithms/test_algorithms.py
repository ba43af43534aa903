"""Algorithm table, build errors, losses, rotation and supervised baseline."""

from __future__ import annotations

import json
import math

import pytest
import torch

import algorithms
from algorithms import (
    ALGORITHMS,
    accuracy,
    build_algorithm,
    cross_entropy,
    rotate_raster,
    rotate_strokes,
)
from algorithms.base import view_targets


def random_strokes(batch: int, length: int, seed: int, size: int = 21) -> torch.Tensor:
    """(B, L, 4) float64 strokes with some padding rows. Points sit within 0.3 pixel of
    an S-grid node (S = size) so nearest-pixel plotting never meets a rounding tie."""
    g = torch.Generator().manual_seed(seed)
    nodes = torch.randint(0, size, (batch, length, 2), generator=g).double()
    jitter = (torch.rand(batch, length, 2, generator=g, dtype=torch.float64) - 0.5) * 0.6
    xy = ((nodes + jitter) / (size - 1)).clamp(0, 1)
    pen = torch.zeros(batch, length, 2, dtype=torch.float64)
    lift = torch.rand(batch, length, generator=g) < 0.2
    pen[..., 0] = (~lift).double()
    pen[..., 1] = lift.double()
    x = torch.cat([xy, pen], dim=-1)
    for b in range(batch):  # sketch b has length - 2 b valid rows, the rest padding
        x[b, length - 2 * b :] = 0
    return x


def plot(strokes: torch.Tensor, size: int) -> torch.Tensor:
    """Nearest-pixel plot: 1 at (round(y (S-1)), round(x (S-1))) for every valid row."""
    out = torch.zeros(strokes.shape[0], size, size)
    for b in range(strokes.shape[0]):
        for x, y, p1, p2 in strokes[b].tolist():
            if p1 + p2 > 0:
                out[b, round(y * (size - 1)), round(x * (size - 1))] = 1
    return out


# ------------------------------------------------------------------ table, build
@pytest.mark.parametrize("name, modality", [(n, m) for n in sorted(ALGORITHMS) for m in ("raster", "stroke")
                                             if m in ALGORITHMS[n].modalities])
def test_the_head_size_is_what_the_views_ask_for(name, modality) -> None:
    # A classifier head must have exactly one output per target the algorithm's views can
    # produce (labels 0..n-1 all occur on a batch of 8 sketches of 3 classes); the methods
    # that read features instead of logits ask for a single, unused output.
    algorithm = build_algorithm(name, modality)
    x = torch.rand(8, 1, 16, 16) if modality == "raster" else random_strokes(8, 12, seed=0).float()
    y = torch.arange(8) % 3
    if not algorithm.uses_logits:
        assert algorithm.num_outputs(3) == 1
        return
    _, targets = algorithm.prepare(x, y)
    assert targets.dtype == torch.long
    assert sorted(set(targets.tolist())) == list(range(algorithm.num_outputs(3)))
    # (The cross-modal methods read paired batches: tests/algorithms/test_crossmodal.py.)


def test_build_errors_are_one_line_and_named() -> None:
    with pytest.raises(ValueError) as info:
        build_algorithm("jigsaw", "raster")
    message = str(info.value)
    assert "jigsaw" in message and all(name in message for name in ALGORITHMS)
    with pytest.raises(ValueError, match="rotation: modality must be one of"):
        build_algorithm("rotation", "image")
    with pytest.raises(ValueError, match="rotation: unknown parameter 'module'"):
        build_algorithm("rotation", "raster", module="HE")
    with pytest.raises(ValueError, match="supervised: unknown parameter 'x'"):
        build_algorithm("supervised", "stroke", x=1)
    with pytest.raises(ValueError, match="supervised: num_classes"):
        build_algorithm("supervised", "stroke").num_outputs(0)


def test_describe_is_json_and_names_itself() -> None:
    for name, cls in ALGORITHMS.items():
        for modality in cls.modalities:  # raster and stroke, or "paired" (the cross-modal methods)
            algorithm = build_algorithm(name, modality)
            described = json.loads(json.dumps(algorithm.describe()))
            assert described["name"] == name == algorithm.name
            assert described["modality"] == modality == algorithm.modality


def test_leaf_package_imports_no_project_package() -> None:
    import ast
    import pathlib

    forbidden = {"config", "data", "models", "utils", "engine"}
    root = pathlib.Path(algorithms.__file__).parent
    files = sorted(root.glob("*.py"))
    assert len(files) >= 5
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                tops = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                tops = {(node.module or "").split(".")[0]}
            else:
                continue
            assert not tops & forbidden, (path.name, tops)


# ------------------------------------------------------------------------ losses
def test_cross_entropy_and_accuracy_hand_values() -> None:
    logits = torch.zeros(3, 4)
    targets = torch.tensor([0, 1, 3])
    assert cross_entropy(logits, targets).item() == pytest.approx(math.log(4), abs=1e-6)
    # one row: logits [log 3, 0] -> p(class 0) = 3 / 4, loss = -log(3/4)
    two = torch.tensor([[math.log(3.0), 0.0]])
    assert cross_entropy(two, torch.tensor([0])).item() == pytest.approx(-math.log(0.75), abs=1e-6)
    scores = torch.tensor([[2.0, 1.0], [0.0, 3.0], [5.0, -1.0], [0.2, 0.1]])
    assert accuracy(scores, torch.tensor([0, 1, 1, 1])) == pytest.approx(0.5)
    assert accuracy(scores, torch.tensor([0, 1, 0, 0])) == 1.0
    with pytest.raises(ValueError):
        cross_entropy(torch.zeros(3, 4), torch.zeros(2, dtype=torch.long))


def test_pretext_loss_checks_head_width() -> None:
    rotation = build_algorithm("rotation", "raster")
    targets = torch.tensor([0, 1, 2, 3])
    assert rotation.loss(torch.zeros(4, 4), targets).item() == pytest.approx(math.log(4), abs=1e-6)
    with pytest.raises(ValueError, match="rotation: expected logits with 4 columns, got 2"):
        rotation.loss(torch.zeros(4, 2), targets)
    deformation = build_algorithm("deformation", "raster")
    with pytest.raises(ValueError, match="deformation: expected logits with 2 columns"):
        deformation.loss(torch.zeros(2, 4), torch.tensor([0, 1]))


# ---------------------------------------------------------------------- rotation
def test_rotate_raster_is_counter_clockwise_as_displayed() -> None:
    img = torch.zeros(1, 1, 3, 3)
    img[0, 0, 0, 2] = 1  # top-right corner
    assert rotate_raster(img, 1)[0, 0, 0, 0] == 1  # -> top-left
    assert rotate_raster(img, 2)[0, 0, 2, 0] == 1  # -> bottom-left
    assert rotate_raster(img, 3)[0, 0, 2, 2] == 1  # -> bottom-right
    assert rotate_raster(img, 1).sum() == 1


def test_rotate_strokes_hand_case() -> None:
    # right-middle point (1, 0.5) turns CCW to top-middle (0.5, 0) with y down
    x = torch.tensor([[[1.0, 0.5, 1.0, 0.0], [0.75, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0]]])
    expected = [[0.5, 0.0, 1.0, 0.0], [0.0, 0.25, 0.0, 1.0], [0.0] * 4]
    assert rotate_strokes(x, 1)[0].tolist() == expected
    assert rotate_strokes(x, 2)[0, :2, :2].tolist() == [[0.0, 0.5], [0.25, 1.0]]
    assert rotate_strokes(x, 3)[0, :2, :2].tolist() == [[0.5, 1.0], [1.0, 0.75]]
    assert torch.equal(rotate_strokes(x, -1), rotate_strokes(x, 3))


def test_four_turns_are_identity() -> None:
    raster = torch.rand(2, 3, 5, 5)
    out = raster
    for _ in range(4):
        out = rotate_raster(out, 1)
    assert torch.equal(out, raster)
    strokes = random_strokes(3, 10, seed=0)
    out = strokes
    for _ in range(4):
        out = rotate_strokes(out, 1)
    torch.testing.assert_close(out, strokes, rtol=0, atol=1e-12)
    assert torch.equal(rotate_strokes(strokes, 4), strokes)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_stroke_and_raster_rotation_agree(k: int) -> None:
    size = 21
    strokes = random_strokes(4, 12, seed=k, size=size)
    rotated = rotate_strokes(strokes, k)
    valid = (strokes[..., 2] + strokes[..., 3]) > 0
    assert (rotated[~valid] == 0).all()
    assert torch.equal(rotated[..., 2:], strokes[..., 2:])
    picture = plot(strokes, size)
    assert picture.sum() > 10
    assert torch.equal(plot(rotated, size), rotate_raster(picture, k))
    assert not torch.equal(rotate_raster(picture, k), picture)


@pytest.mark.parametrize("modality", ["raster", "stroke"])
def test_rotation_views(modality: str) -> None:
    algorithm = build_algorithm("rotation", modality)
    x = torch.rand(3, 2, 6, 6) if modality == "raster" else random_strokes(3, 8, seed=5).float()
    rotate = rotate_raster if modality == "raster" else rotate_strokes
    inputs, targets = algorithm.views(x, torch.tensor([4, 5, 6]))
    assert inputs.shape == (12, *x.shape[1:])
    assert targets.dtype == torch.int64 and targets.device == x.device
    assert targets.tolist() == [0] * 3 + [1] * 3 + [2] * 3 + [3] * 3
    for k in range(4):
        assert torch.equal(inputs[3 * k : 3 * (k + 1)], rotate(x, k))


def test_view_targets_are_fresh_tensors_each_call() -> None:
    algorithm = build_algorithm("deformation", "stroke")
    x = random_strokes(3, 8, seed=5).float()
    first = algorithm.views(x, None)[1]
    assert first.tolist() == [0, 0, 0, 1, 1, 1]
    first.fill_(7)  # a caller that reuses its targets in place must not change the next batch's
    assert algorithm.views(x, None)[1].tolist() == [0, 0, 0, 1, 1, 1]
    assert view_targets(4, 2, "cpu").tolist() == [0, 0, 1, 1, 2, 2, 3, 3]


def test_rotation_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="square"):
        build_algorithm("rotation", "raster").views(torch.rand(2, 1, 4, 5), None)
    with pytest.raises(ValueError, match=r"\(B, L, 4\)"):
        build_algorithm("rotation", "stroke").views(torch.rand(2, 5, 3), None)


# -------------------------------------------------------------------- supervised
def test_supervised_views_pass_through() -> None:
    algorithm = build_algorithm("supervised", "raster")
    x, y = torch.rand(2, 1, 4, 4), torch.tensor([3, 1])
    inputs, targets = algorithm.views(x, y)
    assert inputs is x and targets is y
    with pytest.raises(ValueError, match="labels"):
        algorithm.views(x, torch.tensor([1, 2, 3]))
    logits = torch.tensor([[0.0, 0.0, 0.0, 5.0], [0.0, 5.0, 0.0, 0.0]])
    assert algorithm.loss(logits, y).item() == pytest.approx(
        -math.log(math.exp(5) / (math.exp(5) + 3)), abs=1e-5
    )
