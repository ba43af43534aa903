"""Tests of the data package: sketch geometry, rendering, stroke tensors, datasets.

Expected values are computed by hand in the comments next to them. The real Quick, Draw!
sample is read in place from ``../shared/quickdraw`` (relative to the repository root).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from data import (
    RasterDataset,
    Sketch,
    StrokeDataset,
    SyntheticSketches,
    bounds,
    fit_to_box,
    from_stroke_tensor,
    line_thickness,
    num_points,
    rdp,
    render,
    rotate_quarter,
    to_stroke_tensor,
    valid_rows,
    validate_strokes,
)
from data.strokes import rdp_thresholds
from tests.common import QUICKDRAW

BANANA_KEY = "5871142554304512"  # the 366-stroke banana named in shared/quickdraw/README.md


def _a(*xy: float) -> np.ndarray:
    return np.asarray(xy, dtype=np.float32).reshape(-1, 2)


def _assert_valid_tensor(t: np.ndarray, max_len: int) -> np.ndarray:
    """Common invariants of a stroke tensor; returns its real rows."""
    assert t.shape == (max_len, 4) and t.dtype == np.float32
    real = valid_rows(t)
    n = int(real.sum())
    assert np.all(real[:n]) and not np.any(real[n:]), "real rows must come first"
    assert np.all(t[n:] == 0), "padding rows must be all zero"
    rows = t[:n]
    assert np.all(rows[:, 2] + rows[:, 3] == 1), "exactly one of p1, p2 per real row"
    assert np.all(np.isin(rows[:, 2:], (0.0, 1.0)))
    assert rows[-1, 3] == 1, "the last point ends a stroke"
    return rows


# ----------------------------------------------------------------------------- Sketch


def test_sketch_converts_and_freezes() -> None:
    s = Sketch([[[0, 1], [2, 3]], [[4, 5]]], label=3, key_id="18446744073709551615")
    assert isinstance(s.strokes, tuple) and len(s.strokes) == 2
    assert s.strokes[0].dtype == np.float32 and s.strokes[0].shape == (2, 2)
    assert s.strokes[1].tolist() == [[4.0, 5.0]]
    assert s.key_id == "18446744073709551615"  # > 2**53, kept exactly as a string
    with pytest.raises(ValueError):
        s.strokes[0][0, 0] = 9.0  # read-only
    with pytest.raises(Exception):
        s.label = 4  # type: ignore[misc]  # frozen
    assert s == Sketch([_a(0, 1, 2, 3), _a(4, 5)], label=3, key_id="18446744073709551615")
    assert s != Sketch([_a(0, 1, 2, 3), _a(4, 6)], label=3, key_id="18446744073709551615")
    assert num_points(s) == 3 and num_points(s.strokes) == 3
    with pytest.raises(ValueError, match="key_id"):
        Sketch([_a(0, 0)], key_id=5871142554304512)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "strokes, message",
    [
        ([], "at least one stroke"),
        ([np.zeros((0, 2))], "no points"),
        ([np.zeros((3, 3))], r"shape \(n, 2\)"),
        ([np.zeros(4)], r"shape \(n, 2\)"),
        ([_a(0, 0, np.nan, 1)], "non-finite"),
        ([_a(0, 0, np.inf, 1)], "non-finite"),
        (np.zeros((3, 2)), "sequence of"),
    ],
)
def test_validate_strokes_errors(strokes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        validate_strokes(strokes)
    with pytest.raises(ValueError, match=message):
        Sketch(strokes)


def test_bounds() -> None:
    assert bounds([_a(3, 7, -1, 2), _a(10, 0)]) == (-1.0, 0.0, 10.0, 7.0)


def test_fit_to_box_hand_computed() -> None:
    # Extent 10 x 5 -> scale 255 / 10 = 25.5; heights 127.5, centred offset (255 - 127.5) / 2.
    strokes = [_a(100, 50, 110, 55), _a(102, 51)]
    c = fit_to_box(strokes, box=255.0, center=True)
    np.testing.assert_allclose(c[0], [[0, 63.75], [255, 191.25]], atol=1e-4)
    np.testing.assert_allclose(c[1], [[51, 89.25]], atol=1e-4)
    t = fit_to_box(strokes, box=255.0, center=False)
    np.testing.assert_allclose(t[0], [[0, 0], [255, 127.5]], atol=1e-4)
    np.testing.assert_allclose(t[1], [[51, 25.5]], atol=1e-4)
    assert all(s.dtype == np.float32 for s in c + t)
    # Another box size: scale 10 / 10 = 1, the y extent 5 is centred in [0, 10].
    np.testing.assert_allclose(fit_to_box(strokes, box=10.0)[0], [[0, 2.5], [10, 7.5]], atol=1e-5)


def test_fit_to_box_zero_extent_and_flat() -> None:
    dot = [_a(5, 5, 5, 5), _a(5, 5)]
    with np.errstate(all="raise"):  # no division by zero
        centred = fit_to_box(dot, center=True)
        corner = fit_to_box(dot, center=False)
    np.testing.assert_array_equal(centred[0], [[127.5, 127.5], [127.5, 127.5]])
    np.testing.assert_array_equal(centred[1], [[127.5, 127.5]])
    np.testing.assert_array_equal(corner[0], [[0, 0], [0, 0]])
    # A horizontal line: scaled along x, centred (or at 0) along y.
    np.testing.assert_allclose(fit_to_box([_a(10, 20, 30, 20)])[0], [[0, 127.5], [255, 127.5]])
    np.testing.assert_allclose(fit_to_box([_a(10, 20, 30, 20)], center=False)[0], [[0, 0], [255, 0]])


def test_fit_to_box_stays_inside_the_box() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        strokes = [rng.normal(size=(int(rng.integers(1, 6)), 2)) * rng.uniform(0.1, 900) for _ in range(3)]
        for center in (True, False):
            pts = np.concatenate(fit_to_box(strokes, center=center))
            assert pts.min() >= 0.0 and pts.max() <= 255.0
            assert np.isclose(max(np.ptp(pts, axis=0)), 255.0, atol=1e-3)


def test_rotate_quarter_hand_computed() -> None:
    s = [_a(10, 20, 0, 0)]
    # One counter-clockwise turn as displayed: (x, y) -> (y, 255 - x).
    expected = {
        1: [[20, 245], [0, 255]],
        2: [[245, 235], [255, 255]],
        3: [[235, 10], [255, 0]],
        4: [[10, 20], [0, 0]],
        0: [[10, 20], [0, 0]],
        -1: [[235, 10], [255, 0]],
    }
    for k, want in expected.items():
        np.testing.assert_allclose(rotate_quarter(s, k)[0], want, err_msg=f"k={k}")
    np.testing.assert_allclose(rotate_quarter(s, 1, box=100.0)[0], [[20, 90], [0, 100]])


# ----------------------------------------------------------------------------- render


def test_render_hand_computed_line() -> None:
    # size 256: box coordinate c -> pixel c * 255 / 255 = c. line_width 1 -> thickness 1.
    img = render([_a(50, 100, 200, 100)], size=256, line_width=1.0)
    assert img.shape == (256, 256) and img.dtype == np.float32
    assert img.min() == 0.0 and img.max() <= 1.0
    assert np.all(img[100, 52:199] > 0.8), "the line's own row is inked along its length"
    col_ink = img[:, 60:190].sum(axis=0)
    assert np.all((col_ink > 0.9) & (col_ink < 2.0)), "about one pixel of ink across a 1-px line"
    far = np.ones_like(img, dtype=bool)
    far[97:104, 47:204] = False  # within 3 px of the segment
    assert np.all(img[far] == 0.0), "nothing is drawn away from the line"


def test_render_pixel_mapping_reaches_the_corners() -> None:
    # Box 0 -> pixel 0 and box 255 -> pixel size - 1 (pixel centres at the box corners).
    img = render([_a(255, 0, 255, 255)], size=64, line_width=1.0)
    assert img[:, 63].min() > 0.5 and np.all(img[:, :61] == 0)
    img = render([_a(0, 0, 0, 255)], size=64, line_width=1.0)
    assert img[:, 0].min() > 0.5 and np.all(img[:, 3:] == 0)
    # Box 127.5 -> pixel 63 (size 127): a horizontal line through the middle row.
    img = render([_a(0, 127.5, 255, 127.5)], size=127, line_width=1.0)
    assert img[63].min() > 0.5 and np.all(img[:61] == 0) and np.all(img[66:] == 0)


def test_render_dot_thickness_and_errors() -> None:
    dot = render([_a(100, 100)], size=256, line_width=1.0)
    assert dot[100, 100] > 0.9 and 1.0 < dot.sum() < 10.0
    assert np.all(dot[:97] == 0) and np.all(dot[104:] == 0)
    same = render([_a(100, 100, 100, 100)], size=256, line_width=1.0)  # all points equal: a dot
    np.testing.assert_array_equal(same, dot)
    thick_dot = render([_a(100, 100)], size=256, line_width=5.0)
    assert thick_dot.sum() > 2 * dot.sum()
    assert line_thickness(3.0, 224) == 3 and line_thickness(3.0, 28) == 1 and line_thickness(8.0, 256) == 8
    thin = render([_a(20, 20, 200, 230)], size=128, line_width=2.0).sum()
    thick = render([_a(20, 20, 200, 230)], size=128, line_width=8.0).sum()
    assert thick > 2 * thin
    with pytest.raises(ValueError):
        render([_a(0, 0)], size=0)
    with pytest.raises(ValueError):
        render([], size=32)


def test_render_quarter_turn_matches_rot90() -> None:
    source = SyntheticSketches("val", per_class=1)
    wrong_direction_ious = []
    for i in range(len(source)):
        s = fit_to_box(source[i].strokes, center=True)
        base = render(s, size=64)
        for k in (1, 2, 3):
            turned = render(rotate_quarter(s, k), size=64)
            expected = np.rot90(base, k)
            assert np.abs(turned - expected).mean() < 0.02
            a, b = turned > 0.5, expected > 0.5
            assert (a & b).sum() / (a | b).sum() > 0.9, f"sketch {i}, k={k}"
            assert np.array_equal(np.rot90(base, k), torch.rot90(torch.from_numpy(base), k, dims=(-2, -1)).numpy())
            if k != 2:
                w = np.rot90(base, -k) > 0.5
                wrong_direction_ious.append((a & w).sum() / (a | w).sum())
    # The check can fail: turning the other way does not match (asymmetric classes).
    assert np.median(wrong_direction_ious) < 0.5


# ----------------------------------------------------------------------------- rdp


def test_rdp_hand_computed() -> None:
    line = np.array([[0, 0], [1, 1], [2, 2], [3, 3]], dtype=np.float64)
    np.testing.assert_array_equal(rdp(line, 0.1), [[0, 0], [3, 3]])
    spike = np.array([[0, 0], [1, 0], [2, 5], [3, 0], [4, 0]], dtype=np.float64)
    # (2, 5) is 5 from the chord; (1, 0) is |2*0 - 5*1| / sqrt(29) = 0.928 from (0,0)-(2,5).
    np.testing.assert_array_equal(rdp(spike, 1.0), [[0, 0], [2, 5], [4, 0]])
    np.testing.assert_array_equal(rdp(spike, 0.5), spike)
    np.testing.assert_array_equal(rdp(spike, 5.0), [[0, 0], [4, 0]])  # kept only when > epsilon
    np.testing.assert_array_equal(rdp(spike, 4.99), [[0, 0], [2, 5], [4, 0]])
    np.testing.assert_allclose(rdp_thresholds(spike), [np.inf, 5 / math.sqrt(29), 5, 5 / math.sqrt(29), np.inf])
    # Closed loop (zero-length chord): distance to the start point.
    loop = np.array([[0, 0], [2, 0], [2, 2], [0, 0]], dtype=np.float64)
    np.testing.assert_array_equal(rdp(loop, 2.5), [[0, 0], [2, 2], [0, 0]])  # |(2,2)| = 2.83
    np.testing.assert_array_equal(rdp(_a(1, 2), 3.0), [[1, 2]])
    with pytest.raises(ValueError):
        rdp(spike, -1.0)


def test_rdp_agrees_with_thresholds() -> None:
    rng = np.random.default_rng(0)
    for trial in range(100):
        pts = rng.normal(size=(int(rng.integers(3, 80)), 2)).cumsum(axis=0)
        if trial % 2:
            pts = np.round(pts * 3)  # integer grid: collinear runs and ties
        thr = rdp_thresholds(pts)
        for eps in (0.0, 0.3, 1.0, 2.5):
            np.testing.assert_array_equal(rdp(pts, eps), pts[thr > eps])


# ----------------------------------------------------------------------------- stroke tensor


def test_stroke_tensor_hand_computed() -> None:
    strokes = [_a(0, 0, 51, 102, 255, 255), _a(127.5, 25.5, 204, 229.5), _a(255, 0)]
    t = to_stroke_tensor(strokes, max_len=7)
    expected = np.array(
        [
            [0.0, 0.0, 1, 0],
            [0.2, 0.4, 1, 0],
            [1.0, 1.0, 0, 1],
            [0.5, 0.1, 1, 0],
            [0.8, 0.9, 0, 1],
            [1.0, 0.0, 0, 1],  # a one-point stroke is its own last point
            [0.0, 0.0, 0, 0],
        ],
        dtype=np.float32,
    )
    np.testing.assert_allclose(t, expected, atol=1e-6)
    assert t.dtype == np.float32
    np.testing.assert_array_equal(valid_rows(t), [True] * 6 + [False])
    back = from_stroke_tensor(t)
    assert len(back) == 3
    for got, want in zip(back, strokes):
        np.testing.assert_allclose(got, want, atol=1e-4)
    with pytest.raises(ValueError):
        from_stroke_tensor(np.zeros((5, 4), np.float32))


def test_stroke_tensor_round_trip_synthetic() -> None:
    source = SyntheticSketches("train", per_class=3)
    checked = 0
    for i in range(len(source)):
        s = fit_to_box(source[i].strokes, center=True)
        if num_points(s) > 100:
            continue
        back = from_stroke_tensor(to_stroke_tensor(s))
        assert len(back) == len(s)
        for got, want in zip(back, s):
            np.testing.assert_allclose(got, want, atol=1e-3)
        checked += 1
    assert checked > 40


def test_over_budget_rdp_step_uses_smallest_common_epsilon() -> None:
    # Spike stroke interior thresholds 0.928, 5, 0.928; the bump stroke's is 3.
    spike = _a(0, 0, 1, 0, 2, 5, 3, 0, 4, 0)
    bump = _a(10, 10, 11, 13, 12, 10)
    # 8 points > 5: count(eps) = 4 endpoints + #{thresholds > eps} <= 5 needs eps >= 3,
    # which keeps the spike (5 > 3) and drops the bump (3 is not > 3).
    t = to_stroke_tensor([spike, bump], max_len=5, box=255.0)
    expected = np.array(
        [[0, 0, 1, 0], [2, 5, 1, 0], [4, 0, 0, 1], [10, 10, 1, 0], [12, 10, 0, 1]], dtype=np.float32
    )
    expected[:, :2] /= 255.0
    np.testing.assert_allclose(t, expected, atol=1e-6)
    # max_len 3 on the spike alone: eps >= 0.928 keeps exactly the spike point.
    t = to_stroke_tensor([spike], max_len=3, box=255.0)
    np.testing.assert_allclose(t[:, :2] * 255, [[0, 0], [2, 5], [4, 0]], atol=1e-4)
    np.testing.assert_array_equal(t[:, 2:], [[1, 0], [1, 0], [0, 1]])


def test_over_budget_even_spacing_step_hand_computed() -> None:
    # 3 two-point strokes A, B, C = 6 endpoints > max_len 4, so step 2:
    # indices round(linspace(0, 5, 4)) = round(0, 1.67, 3.33, 5) = 0, 2, 3, 5 -> A0, B0, B1, C1.
    a, b, c = _a(0, 0, 10, 0), _a(20, 0, 30, 0), _a(40, 0, 50, 0)
    t = to_stroke_tensor([a, b, c], max_len=4, box=255.0)
    np.testing.assert_allclose(t[:, 0] * 255, [0, 20, 30, 50], atol=1e-4)
    # A0 is the last kept point of A; B0 is not the last of B; B1 and C1 are.
    np.testing.assert_array_equal(t[:, 2:], [[0, 1], [1, 0], [0, 1], [0, 1]])


def test_over_budget_never_crashes() -> None:
    rng = np.random.default_rng(1)
    walk = np.cumsum(rng.normal(size=(1000, 2)), axis=0)
    walk = fit_to_box([walk])[0]
    cases = {
        "1000-point stroke": [walk],
        "300 two-point strokes": [rng.uniform(0, 255, size=(2, 2)) for _ in range(300)],
        "150 one-point strokes": [rng.uniform(0, 255, size=(1, 2)) for _ in range(150)],
        "200 equal points": [np.full((200, 2), 7.0)],
        "mixed": [_a(3, 4)] * 60 + [walk[:300]],
    }
    for name, strokes in cases.items():
        t = to_stroke_tensor(strokes, max_len=100)
        rows = _assert_valid_tensor(t, 100)
        first, last = strokes[0][0], strokes[-1][-1]
        np.testing.assert_allclose(rows[0, :2] * 255, first, atol=1e-3, err_msg=name)
        np.testing.assert_allclose(rows[-1, :2] * 255, last, atol=1e-3, err_msg=name)
    # The single long stroke is simplified just enough: close to the 100-row budget.
    n = int(valid_rows(to_stroke_tensor([walk], max_len=100)).sum())
    assert 95 <= n <= 100
    # Far more endpoints than rows: evenly spaced, exactly max_len rows, all isolated points.
    t = to_stroke_tensor(cases["300 two-point strokes"], max_len=100)
    assert valid_rows(t).all() and np.all(t[:, 3] == 1)
    assert len(from_stroke_tensor(to_stroke_tensor(cases["200 equal points"]))) == 1


def _banana_strokes() -> list[np.ndarray]:
    path = QUICKDRAW / "simplified" / "banana.ndjson"
    if not QUICKDRAW.is_dir():
        pytest.skip(f"shared Quick, Draw! sample not found at {QUICKDRAW} (expected ../shared/quickdraw)")
    with path.open(encoding="utf-8") as f:
        for line in f:
            record = json.loads(line)
            if record["key_id"] == BANANA_KEY:
                return [np.array(stroke[:2], dtype=np.float32).T for stroke in record["drawing"]]
    raise AssertionError(f"key_id {BANANA_KEY} not found in {path}")


def test_real_366_stroke_banana() -> None:
    strokes = _banana_strokes()
    assert len(strokes) == 366
    sketch = Sketch(strokes, label=0, key_id=BANANA_KEY)
    t = to_stroke_tensor(fit_to_box(sketch.strokes), max_len=100)
    rows = _assert_valid_tensor(t, 100)
    assert len(rows) == 100  # >= 732 endpoints: step 2 fills the budget exactly
    assert rows[:, :2].min() >= 0 and rows[:, :2].max() <= 1
    fitted = fit_to_box(sketch.strokes)
    np.testing.assert_allclose(rows[0, :2] * 255, fitted[0][0], atol=1e-3)
    np.testing.assert_allclose(rows[-1, :2] * 255, fitted[-1][-1], atol=1e-3)
    x, label = StrokeDataset([sketch])[0]
    assert x.shape == (100, 4) and label == 0
    img, _ = RasterDataset([sketch], image_size=64)[0]
    assert img.shape == (1, 64, 64) and img.max() > 0.9


# ----------------------------------------------------------------------------- datasets


def test_raster_dataset() -> None:
    source = SyntheticSketches("query", per_class=2, num_classes=5, seed=3)
    ds = RasterDataset(source, image_size=48, line_width=3.0)
    assert len(ds) == 10 and ds.num_classes == 5 and ds.class_names == source.class_names
    np.testing.assert_array_equal(ds.labels, np.arange(10) % 5)
    assert ds.labels.dtype == np.int64
    for i in range(len(ds)):
        img, label = ds[i]
        assert isinstance(img, torch.Tensor) and img.dtype == torch.float32 and img.shape == (1, 48, 48)
        assert 0.0 <= img.min() and img.max() <= 1.0 and img.max() > 0.9
        assert label == i % 5 and isinstance(label, int)
        # Centred: the ink's bounding box is centred on the image (within 2 px).
        rows, cols = np.nonzero(img[0].numpy() > 0.1)
        assert abs((rows.min() + rows.max()) / 2 - 23.5) <= 2 and abs((cols.min() + cols.max()) / 2 - 23.5) <= 2
    corner = RasterDataset(source, image_size=48, center=False)
    for i in range(len(ds)):
        rows, cols = np.nonzero(corner[i][0][0].numpy() > 0.1)
        assert rows.min() == 0 and cols.min() == 0  # top-left alignment kept
    batch, labels = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert batch.shape == (4, 1, 48, 48) and labels.tolist() == [0, 1, 2, 3]


def test_stroke_dataset() -> None:
    source = SyntheticSketches("gallery", per_class=3, num_classes=4)
    ds = StrokeDataset(source, max_len=100)
    assert len(ds) == 12 and ds.num_classes == 4
    for i in range(len(ds)):
        x, label = ds[i]
        assert isinstance(x, torch.Tensor) and x.dtype == torch.float32 and x.shape == (100, 4)
        rows = _assert_valid_tensor(x.numpy(), 100)
        assert rows[:, :2].min() >= 0 and rows[:, :2].max() <= 1
        assert label == i % 4
        # Centred: the bounding box of the points is centred in the unit square.
        lo, hi = rows[:, :2].min(axis=0), rows[:, :2].max(axis=0)
        np.testing.assert_allclose((lo + hi) / 2, [0.5, 0.5], atol=1e-5)
    short = StrokeDataset(source, max_len=20)
    assert short[0][0].shape == (20, 4)


def test_dataset_labels_without_source_labels() -> None:
    sketches = [Sketch([_a(0, 0, 10, 10)], label=7), Sketch([_a(0, 0, 10, 0)], label=2)]
    ds = StrokeDataset(sketches)
    np.testing.assert_array_equal(ds.labels, [7, 2])
    assert ds.num_classes is None
    with pytest.raises(ValueError):
        RasterDataset(sketches, image_size=0)
    with pytest.raises(ValueError):
        StrokeDataset(sketches, max_len=0)


def test_data_imports_no_other_project_package():
    """Leaf rule (STYLE.md): data/ imports nothing of config, models, algorithms, utils or the
    middle floor (data/store.py used to borrow utils.atomic)."""
    import ast

    others = {"config", "models", "algorithms", "utils", "engine", "evaluation"}
    files = sorted((Path(__file__).resolve().parents[2] / "data").glob("*.py"))
    assert len(files) >= 10
    found = {}
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            hits = {n.split(".")[0] for n in names} & others
            if hits:
                found[path.name] = hits
    assert found == {}
