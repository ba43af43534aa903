"""Deformation pretext task: axis warps, raster and stroke deformation, erase helper."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from algorithms import (
    DEFORMATION_MODULES,
    IDENTITY,
    AxisWarp,
    DeformationModule,
    build_algorithm,
    deform_raster,
    deform_raster_reference,
    deform_strokes,
    destination_indices,
    erase_half,
    normalize_strokes,
)
from algorithms.warps import COMPRESS, EXPAND

T_STAR = (math.pi - 2) / 2  # interior fixed point of the a=0, b=1 warps: sin 2t = sin 2


def paper_f(t: np.ndarray, lam: float, a: float, b: float) -> np.ndarray:
    """f(t) exactly as the paper writes it (no product identity)."""
    g = 2 * (b - a) * t + 2 * a
    return t + (lam / 2) * t * (np.sin(g) - np.sin(2 * b))


def random_settings(n: int, seed: int = 0) -> list[AxisWarp]:
    rng = np.random.default_rng(seed)
    return [
        AxisWarp(float(rng.uniform(-3, 3)), float(rng.uniform(-2, 2)), float(rng.uniform(-2, 2)))
        for _ in range(n)
    ]


def valid_random_settings(n: int, seed: int = 1) -> list[AxisWarp]:
    out = [w for w in random_settings(20 * n, seed) if not w.folds]
    assert len(out) >= n
    return out[:n]


# ------------------------------------------------------------------------ AxisWarp
def all_table_warps() -> list[tuple[str, str, AxisWarp]]:
    return [
        (name, axis, warp)
        for name, module in DEFORMATION_MODULES.items()
        for axis, warp in module.axes()
    ]


def _paper_f(t: float, lam: float, a: float, b: float) -> float:
    """The paper's warp written out by hand: f(t) = t + lam/2 t (sin 2(a(1-t) + bt) - sin 2b)."""
    return t + 0.5 * lam * t * (math.sin(2 * (a * (1 - t) + b * t)) - math.sin(2 * b))


def test_table_modules_warp_as_the_released_code_and_their_names_say() -> None:
    # The released raster code's module: x (lam 2.1, a 0, b 1), y (lam -4.1, a 0, b 1)
    # (../shared/spec/PROTOCOL.md), checked through what the warps do, by the hand formula.
    released = DEFORMATION_MODULES["released"]
    for t in (0.1, 0.25, 0.5, 0.8):
        assert released.x.f(t) == pytest.approx(_paper_f(t, 2.1, 0, 1), abs=1e-12)
        assert released.y.f(t) == pytest.approx(_paper_f(t, -4.1, 0, 1), abs=1e-12)
    # Horizontal expansion with vertical compression: the middle of x is stretched, of y squeezed.
    assert released.x.df(0.5) > 1.4 and released.y.df(0.5) < 0.1
    # The one-axis modules: E(xpansion) / C(ompression) on H(orizontal) x or V(ertical) y only.
    for name, axis, stretched in (("HE", "x", True), ("VE", "y", True), ("HC", "x", False), ("VC", "y", False)):
        module = DEFORMATION_MODULES[name]
        moved, still = (module.x, module.y) if axis == "x" else (module.y, module.x)
        assert still.is_identity and not moved.is_identity, name
        assert (moved.df(0.5) > 1) == stretched, name
        # ... and each is the released module's warp of that axis (E from x, C from y).
        same = released.x if stretched else released.y
        assert all(moved.f(t) == same.f(t) for t in (0.1, 0.3, 0.7)), name


@pytest.mark.parametrize(
    "warp", [w for _, _, w in all_table_warps()] + random_settings(20) + valid_random_settings(10)
)
def test_endpoints_are_fixed_exactly(warp: AxisWarp) -> None:
    assert warp.f(0.0) == 0.0
    assert warp.f(1.0) == 1.0
    ends = warp.f(np.array([0.0, 1.0]))
    assert ends.tolist() == [0.0, 1.0]
    ends_t = warp.f(torch.tensor([0.0, 1.0], dtype=torch.float32))
    assert ends_t.tolist() == [0.0, 1.0]


@pytest.mark.parametrize("warp", random_settings(20, seed=3) + [EXPAND, COMPRESS])
def test_f_matches_paper_formula(warp: AxisWarp) -> None:
    t = np.linspace(0, 1, 1001)
    np.testing.assert_allclose(warp.f(t), paper_f(t, *warp.params), rtol=0, atol=1e-12)


@pytest.mark.parametrize("warp", random_settings(20, seed=4) + [EXPAND, COMPRESS])
def test_df_matches_central_difference(warp: AxisWarp) -> None:
    h = 1e-6
    t = np.linspace(h, 1 - h, 501)
    numeric = (paper_f(t + h, *warp.params) - paper_f(t - h, *warp.params)) / (2 * h)
    np.testing.assert_allclose(warp.df(t), numeric, rtol=0, atol=1e-6 * (1 + abs(warp.lam)))


def test_f_accepts_numbers_arrays_and_tensors_alike() -> None:
    t = np.linspace(0, 1, 17)
    from_numpy = EXPAND.f(t)
    from_torch = EXPAND.f(torch.from_numpy(t))
    from_float = [EXPAND.f(float(v)) for v in t]
    assert isinstance(from_torch, torch.Tensor) and from_torch.dtype == torch.float64
    assert isinstance(from_float[3], float)
    np.testing.assert_allclose(from_torch.numpy(), from_numpy, atol=1e-15)
    np.testing.assert_allclose(from_float, from_numpy, atol=1e-15)


def test_identity_is_exact() -> None:
    t = np.linspace(0, 1, 101)
    for warp in (AxisWarp(), AxisWarp(3.0, 0.7, 0.7), AxisWarp(0.0, 0.1, 0.9)):
        assert warp.is_identity
        assert np.array_equal(warp.f(t), t)
    assert not EXPAND.is_identity


def test_hand_checked_slopes_and_folding() -> None:
    # lam=2.1, a=0, b=1: f'(0) = 1 + 1.05 (sin 0 - sin 2) = 1 - 1.05 * 0.9092974268 = 0.0452377
    assert EXPAND.df(0.0) == pytest.approx(1 - 1.05 * math.sin(2), abs=1e-12)
    assert EXPAND.min_slope() == pytest.approx(0.0452377018, abs=1e-9)  # at t = 0, an endpoint
    assert EXPAND.slope_minimum()[1] == 0.0
    # lam=-4.1: f'(1) = 1 - 4.1 cos 2 = 2.7062; minimum ~0.0125 inside (t ~ 0.538)
    assert COMPRESS.df(1.0) == pytest.approx(1 - 4.1 * math.cos(2), abs=1e-12)
    slope, where = COMPRESS.slope_minimum()
    assert 0.01 < slope < 0.015 and 0.53 < where < 0.55
    for name, axis, warp in all_table_warps():
        assert not warp.folds, (name, axis)
        assert warp.min_slope() >= 0


def test_released_stroke_order_reinterprets_and_folds() -> None:
    x_warp = AxisWarp.from_released_stroke_order(2.1, 0, 1)
    assert (x_warp.lam, x_warp.a, x_warp.b) == (1.0, 2.1, 0.0)
    y_warp = AxisWarp.from_released_stroke_order(-4.1, 0, 1)
    assert (y_warp.lam, y_warp.a, y_warp.b) == (1.0, -4.1, 0.0)
    # hand value: f'(1) = 1 + 0.5 (sin 0 - sin 0) + 1 * 1 * (0 - 2.1) * cos 0 = -1.1
    assert x_warp.df(1.0) == pytest.approx(-1.1, abs=1e-12)
    assert x_warp.min_slope() <= -1.1 + 1e-12  # grid includes t = 1
    assert x_warp.folds and y_warp.folds
    assert y_warp.min_slope() < -1.0
    # the folding map even leaves the unit interval: f(0.9) > 1 = f(1)
    assert x_warp.f(0.9) > 1.0


def test_min_slope_refines_between_grid_points() -> None:
    # on a 5-point grid f' of this warp is lowest at t = 0.75 (-0.861); the true minimum
    # (-1.7117 at t ~ 0.660) lies between grid points and the refinement finds it
    warp = AxisWarp.from_released_stroke_order(-4.1, 0, 1)
    coarse = warp.df(np.linspace(0, 1, 5))
    assert coarse.min() == pytest.approx(-0.8615, abs=1e-4)
    slope, where = warp.slope_minimum(n=5)
    assert slope == pytest.approx(-1.71173, abs=1e-4) and where == pytest.approx(0.660, abs=2e-3)
    dense = warp.df(np.linspace(0, 1, 1_000_001)).min()
    assert warp.min_slope() == pytest.approx(dense, abs=1e-9)


def test_folding_module_raises_one_line_with_details() -> None:
    warp = AxisWarp.from_released_stroke_order(2.1, 0, 1)
    with pytest.raises(ValueError) as info:
        DeformationModule("bad", x=warp)
    message = str(info.value)
    assert "\n" not in message
    assert "x axis" in message and "lam=1" in message and "a=2.1" in message and "b=0" in message
    assert "-1.1" in message and "t = 1.0000" in message and "allow_folding=True" in message
    module = DeformationModule("bad", x=warp, allow_folding=True)
    assert module.x is warp


def test_axis_warp_rejects_non_numbers() -> None:
    with pytest.raises(ValueError, match="lam"):
        AxisWarp(float("nan"), 0, 1)
    with pytest.raises(ValueError, match="a must be a real number"):
        AxisWarp(1.0, "0", 1)  # type: ignore[arg-type]


def test_module_names_describe_maps_as_documented() -> None:
    left = np.linspace(0.01, T_STAR - 0.01, 50)
    right = np.linspace(T_STAR + 0.01, 0.99, 50)
    assert abs(EXPAND.f(T_STAR) - T_STAR) < 1e-12 and abs(COMPRESS.f(T_STAR) - T_STAR) < 1e-12
    # "expansion": content moves away from t* ~ 0.571 (not from 0.5)
    assert np.all(EXPAND.f(left) < left) and np.all(EXPAND.f(right) > right)
    # "compression": content is pulled towards t*
    assert np.all(COMPRESS.f(left) > left) and np.all(COMPRESS.f(right) < right)
    # effect on a sketch occupying [0.2, 0.8] along the axis
    np.testing.assert_allclose(EXPAND.f(np.array([0.2, 0.8])), [0.0908, 0.8758], atol=1e-4)
    np.testing.assert_allclose(COMPRESS.f(np.array([0.2, 0.8])), [0.4132, 0.6519], atol=1e-4)


# ---------------------------------------------------------------- raster, by hand
def test_destination_indices_hand_computed_w5() -> None:
    # lam=2.1, a=0, b=1, W=5: t = 0, .25, .5, .75, 1
    # f(.25) = .25 + 1.05*.25*(sin .5 - sin 2) = .1372 -> floor(0.549) = 0
    # f(.5)  = .5  + 1.05*.5 *(sin 1  - sin 2) = .4644 -> floor(1.858) = 1
    # f(.75) = .75 + 1.05*.75*(sin 1.5 - sin 2) = .8195 -> floor(3.278) = 3
    assert destination_indices(5, EXPAND).tolist() == [0, 0, 1, 3, 4]
    # lam=-4.1: f(.25) = .4703 -> 1; f(.5) = .5695 -> 2; f(.75) = .6144 -> 2
    assert destination_indices(5, COMPRESS).tolist() == [0, 1, 2, 2, 4]
    assert destination_indices(1, EXPAND).tolist() == [0]


def test_deform_raster_hand_computed_5x5() -> None:
    img = torch.tensor(
        [
            [0.1, 0.0, 0.0, 0.0, 0.0],
            [0.0, 0.7, 0.0, 0.0, 0.0],
            [0.0, 0.0, 0.5, 0.0, 0.0],
            [0.0, 0.0, 0.0, 0.9, 0.0],
            [0.3, 0.0, 0.0, 0.0, 1.0],
        ]
    )
    # HE, columns: dest = [0, 0, 1, 3, 4]; column 2 unreached -> copies column 1
    # new col0 = max(c0, c1), col1 = c2, col2 = c2, col3 = c3, col4 = c4
    he = torch.tensor(
        [
            [0.1, 0.0, 0.0, 0.0, 0.0],
            [0.7, 0.0, 0.0, 0.0, 0.0],
            [0.0, 0.5, 0.5, 0.0, 0.0],
            [0.0, 0.0, 0.0, 0.9, 0.0],
            [0.3, 0.0, 0.0, 0.0, 1.0],
        ]
    )
    assert torch.equal(deform_raster(img[None, None], DEFORMATION_MODULES["HE"])[0, 0], he)
    # VC, rows: dest = [0, 1, 2, 2, 4]; row 3 unreached -> copies row 2
    # new row2 = row3 = max(r2, r3)
    vc = torch.tensor(
        [
            [0.1, 0.0, 0.0, 0.0, 0.0],
            [0.0, 0.7, 0.0, 0.0, 0.0],
            [0.0, 0.0, 0.5, 0.9, 0.0],
            [0.0, 0.0, 0.5, 0.9, 0.0],
            [0.3, 0.0, 0.0, 0.0, 1.0],
        ]
    )
    assert torch.equal(deform_raster(img[None, None], DEFORMATION_MODULES["VC"])[0, 0], vc)
    # released = HE on columns, then VC on rows
    both = torch.tensor(
        [
            [0.1, 0.0, 0.0, 0.0, 0.0],
            [0.7, 0.0, 0.0, 0.0, 0.0],
            [0.0, 0.5, 0.5, 0.9, 0.0],
            [0.0, 0.5, 0.5, 0.9, 0.0],
            [0.3, 0.0, 0.0, 0.0, 1.0],
        ]
    )
    assert torch.equal(deform_raster(img[None, None], DEFORMATION_MODULES["released"])[0, 0], both)
    reference = deform_raster_reference(img.numpy(), DEFORMATION_MODULES["released"])
    assert np.array_equal(reference, both.numpy())


# ----------------------------------------------------------- raster, vs reference
def rendered_like(batch: int, height: int, width: int, seed: int) -> torch.Tensor:
    """Binary images of a few random straight strokes (ink 1 on 0)."""
    rng = np.random.default_rng(seed)
    out = np.zeros((batch, 1, height, width), dtype=np.float32)
    for b in range(batch):
        for _ in range(4):
            (r0, r1), (c0, c1) = rng.integers(0, height, 2), rng.integers(0, width, 2)
            steps = max(abs(r1 - r0), abs(c1 - c0)) + 1
            rows = np.rint(np.linspace(r0, r1, steps)).astype(int)
            cols = np.rint(np.linspace(c0, c1, steps)).astype(int)
            out[b, 0, rows, cols] = 1.0
    return torch.from_numpy(out)


REFERENCE_MODULES = list(DEFORMATION_MODULES.values()) + [
    DeformationModule("random", x=valid_random_settings(2)[0], y=valid_random_settings(2)[1]),
    # a folding warp exercises the clamp to [0, W - 1] (f leaves [0, 1])
    DeformationModule(
        "folding",
        x=AxisWarp.from_released_stroke_order(2.1, 0, 1),
        y=AxisWarp.from_released_stroke_order(-4.1, 0, 1),
        allow_folding=True,
    ),
]


@pytest.mark.parametrize("height,width", [(5, 5), (7, 12), (28, 28), (33, 20), (64, 64)])
def test_deform_raster_equals_reference(height: int, width: int) -> None:
    generator = torch.Generator().manual_seed(height * 100 + width)
    noise = torch.rand(2, 3, height, width, generator=generator)
    lines = rendered_like(3, height, width, seed=height + width)
    for module in REFERENCE_MODULES:
        for batch in (noise, lines):
            out = deform_raster(batch, module)
            assert out.shape == batch.shape and out.dtype == batch.dtype
            for b in range(batch.shape[0]):
                for c in range(batch.shape[1]):
                    expected = deform_raster_reference(batch[b, c].numpy(), module)
                    assert np.array_equal(out[b, c].numpy(), expected), (module.name, b, c)


def test_deform_raster_keeps_binary_ink_and_changes_the_image() -> None:
    lines = rendered_like(4, 48, 48, seed=7)
    out = deform_raster(lines, DEFORMATION_MODULES["released"])
    assert set(out.unique().tolist()) <= {0.0, 1.0}
    assert (out.flatten(1).sum(1) > 0).all()  # no sketch loses all its ink
    assert not torch.equal(out, lines)


def test_identity_module_leaves_raster_unchanged() -> None:
    x = torch.rand(2, 3, 9, 11)
    out = deform_raster(x, DeformationModule("identity"))
    assert torch.equal(out, x) and out is not x
    reference = deform_raster_reference(x[0, 0].numpy(), DeformationModule("identity"))
    assert np.array_equal(reference, x[0, 0].numpy())


# ------------------------------------------------------------------------ strokes
def stroke_batch() -> torch.Tensor:
    """(3, 6, 4): a wide sketch, a tall one with padding, one with a single point."""
    x = torch.zeros(3, 6, 4, dtype=torch.float64)
    x[0, :, :2] = torch.tensor(
        [[0.1, 0.4], [0.3, 0.5], [0.6, 0.45], [0.9, 0.6], [0.5, 0.55], [0.2, 0.5]]
    )
    x[0, :, 2] = 1
    x[0, 5, 2:] = torch.tensor([0.0, 1.0])
    x[1, :4, :2] = torch.tensor([[0.45, 0.1], [0.5, 0.4], [0.55, 0.9], [0.48, 0.7]])
    x[1, :4, 2] = 1
    x[1, 3, 2:] = torch.tensor([0.0, 1.0])
    x[2, 0] = torch.tensor([0.3, 0.7, 0.0, 1.0])
    return x


def assert_normalised(x: torch.Tensor, atol: float = 1e-12) -> None:
    """Every sketch with >= 2 distinct points: larger extent spans [0, 1], box centred."""
    valid = (x[..., 2] + x[..., 3]) > 0
    for b in range(x.shape[0]):
        pts = x[b][valid[b], :2]
        lo, hi = pts.min(0).values, pts.max(0).values
        extent = hi - lo
        if extent.max() == 0:
            continue
        big = int(extent.argmax())
        assert lo[big].item() == pytest.approx(0.0, abs=atol)
        assert hi[big].item() == pytest.approx(1.0, abs=atol)
        np.testing.assert_allclose(((lo + hi) / 2).numpy(), [0.5, 0.5], atol=atol)


def test_normalize_strokes_hand_case_and_idempotent() -> None:
    x = stroke_batch()
    out = normalize_strokes(x)
    # sketch 0: x in [0.1, 0.9] (extent 0.8), y in [0.4, 0.6] (extent 0.2), centre (0.5, 0.5)
    # (0.1, 0.4) -> ((0.1 - 0.5) / 0.8 + 0.5, (0.4 - 0.5) / 0.8 + 0.5) = (0, 0.375)
    np.testing.assert_allclose(out[0, 0, :2].numpy(), [0.0, 0.375], atol=1e-12)
    np.testing.assert_allclose(out[0, 3, :2].numpy(), [1.0, 0.625], atol=1e-12)
    assert torch.equal(out[..., 2:], x[..., 2:])
    assert (out[1, 4:] == 0).all() and (out[2, 1:] == 0).all()
    assert_normalised(out)
    np.testing.assert_allclose(normalize_strokes(out).numpy(), out.numpy(), atol=1e-12)


def test_normalize_strokes_zero_extent_and_empty() -> None:
    x = stroke_batch()
    x[1] = 0  # no valid rows at all
    out = normalize_strokes(x)
    assert torch.isfinite(out).all()
    assert out[2, 0].tolist() == [0.5, 0.5, 0.0, 1.0]  # single point: centred, not scaled
    assert (out[1] == 0).all()
    same = torch.zeros(1, 3, 4)
    same[0, :, :2] = 0.2
    same[0, :, 2] = 1
    np.testing.assert_array_equal(normalize_strokes(same)[0, :, :2].numpy(), 0.5)


def test_deform_strokes_applies_f_per_axis_and_keeps_padding() -> None:
    x = stroke_batch()
    module = DEFORMATION_MODULES["released"]
    raw = deform_strokes(x, module, normalize=False)
    valid = (x[..., 2] + x[..., 3]) > 0
    expected_x = paper_f(x[..., 0].numpy(), 2.1, 0, 1)
    expected_y = paper_f(x[..., 1].numpy(), -4.1, 0, 1)
    np.testing.assert_allclose(raw[..., 0][valid].numpy(), expected_x[valid.numpy()], atol=1e-12)
    np.testing.assert_allclose(raw[..., 1][valid].numpy(), expected_y[valid.numpy()], atol=1e-12)
    assert (raw[~valid] == 0).all()
    assert torch.equal(raw[..., 2:], x[..., 2:])
    one_axis = deform_strokes(x, DEFORMATION_MODULES["HE"], normalize=False)
    assert torch.equal(one_axis[..., 1], x[..., 1])  # identity y axis untouched
    normed = deform_strokes(x, module)
    assert (normed[~valid] == 0).all()
    assert_normalised(normed)


@pytest.mark.parametrize("order,allow", [("lam_a_b", False), ("released", True)])
def test_stroke_views_normalise_both_copies(order: str, allow: bool) -> None:
    algorithm = build_algorithm(
        "deformation", "stroke", stroke_argument_order=order, allow_folding=allow
    )
    x = stroke_batch().float()
    inputs, targets = algorithm.views(x, torch.zeros(3, dtype=torch.long))
    assert inputs.shape == (6, 6, 4) and targets.tolist() == [0, 0, 0, 1, 1, 1]
    assert torch.isfinite(inputs).all()
    valid = (x[..., 2] + x[..., 3]) > 0
    for half in (inputs[:3], inputs[3:]):
        assert (half[~valid] == 0).all()
        assert_normalised(half.double(), atol=1e-6)
    assert torch.equal(inputs[:3], normalize_strokes(x))
    assert not torch.allclose(inputs[:3], inputs[3:])


# ---------------------------------------------------------------------- algorithm
def test_raster_views_and_describe() -> None:
    algorithm = build_algorithm("deformation", "raster", module="HC")
    x = rendered_like(3, 16, 16, seed=1).repeat(1, 3, 1, 1)
    inputs, targets = algorithm.views(x, torch.zeros(3, dtype=torch.long))
    assert inputs.shape == (6, 3, 16, 16)
    assert targets.dtype == torch.int64 and targets.device == x.device
    assert targets.tolist() == [0, 0, 0, 1, 1, 1]
    assert torch.equal(inputs[:3], x)
    assert torch.equal(inputs[3:], deform_raster(x, DEFORMATION_MODULES["HC"]))
    assert algorithm.num_outputs(345) == 2
    described = algorithm.describe()
    json.dumps(described)
    assert described["module"] == "HC"
    assert described["applied"] == {"x": [-4.1, 0.0, 1.0], "y": [0.0, 0.0, 0.0]}


def test_released_stroke_order_needs_allow_folding() -> None:
    with pytest.raises(ValueError) as info:
        build_algorithm("deformation", "stroke", stroke_argument_order="released")
    assert "allow_folding=True" in str(info.value) and "\n" not in str(info.value)
    algorithm = build_algorithm(
        "deformation", "stroke", stroke_argument_order="released", allow_folding=True
    )
    assert algorithm.describe()["applied"] == {"x": [1.0, 2.1, 0.0], "y": [1.0, -4.1, 0.0]}
    # the option concerns the stroke branch only
    raster = build_algorithm("deformation", "raster", stroke_argument_order="released")
    assert raster.describe()["applied"] == {"x": [2.1, 0.0, 1.0], "y": [-4.1, 0.0, 1.0]}


def test_custom_setting_overrides_module_and_is_validated() -> None:
    algorithm = build_algorithm("deformation", "raster", module="HE", custom={"y": [1.0, 0.0, 0.5]})
    assert algorithm.deformation.x == IDENTITY
    assert algorithm.deformation.y == AxisWarp(1.0, 0.0, 0.5)
    assert algorithm.describe()["module"] == "custom"
    with pytest.raises(ValueError, match="deformation: parameter 'custom' has unknown axis 'z'"):
        build_algorithm("deformation", "raster", custom={"z": [1, 0, 1]})
    with pytest.raises(ValueError, match="deformation: parameter 'custom' axis 'x' must be"):
        build_algorithm("deformation", "raster", custom={"x": [1, 0]})
    with pytest.raises(ValueError, match="folds"):
        build_algorithm("deformation", "raster", custom={"x": [1, 2.1, 0]})
    build_algorithm("deformation", "raster", custom={"x": [1, 2.1, 0]}, allow_folding=True)
    with pytest.raises(ValueError, match="identity"):
        build_algorithm("deformation", "raster", custom={"x": [0, 0, 1]})


@pytest.mark.parametrize(
    "params,needle",
    [
        ({"module": "XX"}, "'module'"),
        ({"stroke_argument_order": "a_b_lam"}, "'stroke_argument_order'"),
        ({"allow_folding": "yes"}, "'allow_folding'"),
        ({"modul": "HE"}, "'modul'"),
    ],
)
def test_bad_deformation_params(params: dict, needle: str) -> None:
    with pytest.raises(ValueError) as info:
        build_algorithm("deformation", "raster", **params)
    message = str(info.value)
    assert message.startswith("deformation:") and needle in message and "\n" not in message


# -------------------------------------------------------------------------- erase
def test_erase_half_hand_computed() -> None:
    x = torch.arange(1.0, 17.0).reshape(1, 1, 4, 4)
    top = torch.tensor([[1.0, 2, 3, 4], [5, 6, 7, 8], [0, 0, 0, 0], [0, 0, 0, 0]])
    bottom = torch.tensor([[0.0, 0, 0, 0], [0, 0, 0, 0], [9, 10, 11, 12], [13, 14, 15, 16]])
    left = torch.tensor([[1.0, 2, 0, 0], [5, 6, 0, 0], [9, 10, 0, 0], [13, 14, 0, 0]])
    right = torch.tensor([[0.0, 0, 3, 4], [0, 0, 7, 8], [0, 0, 11, 12], [0, 0, 15, 16]])
    assert torch.equal(erase_half(x, "top")[0, 0], top)
    assert torch.equal(erase_half(x, "bottom")[0, 0], bottom)
    assert torch.equal(erase_half(x, "left")[0, 0], left)
    assert torch.equal(erase_half(x, "right")[0, 0], right)
    odd = torch.ones(1, 1, 3, 3)
    assert erase_half(odd, "top")[0, 0].sum(1).tolist() == [3.0, 0.0, 0.0]
    assert erase_half(odd, "bottom")[0, 0].sum(1).tolist() == [0.0, 3.0, 3.0]
    assert erase_half(odd, "left")[0, 0].sum(0).tolist() == [3.0, 0.0, 0.0]
    assert erase_half(odd, "right")[0, 0].sum(0).tolist() == [0.0, 3.0, 3.0]
    with pytest.raises(ValueError, match="side"):
        erase_half(x, "middle")
