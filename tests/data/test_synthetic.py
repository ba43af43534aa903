"""Tests of the synthetic sketch source (data/synthetic.py)."""

from __future__ import annotations

import numpy as np
import pytest

from data import (
    SYNTHETIC_CLASSES,
    SyntheticSketches,
    draw_synthetic,
    fit_to_box,
    num_points,
    render,
    save_preview,
)


def _same(a, b) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


def test_deterministic_and_order_independent() -> None:
    first = SyntheticSketches("train", per_class=3, seed=5)
    second = SyntheticSketches("train", per_class=3, seed=5)
    forward = [first[i] for i in range(len(first))]
    backward = [second[i] for i in reversed(range(len(second)))][::-1]
    assert all(a == b for a, b in zip(forward, backward))
    assert first[-1] == forward[-1]
    rng_a, rng_b = np.random.default_rng(0), np.random.default_rng(0)
    assert _same(draw_synthetic(4, rng_a), draw_synthetic(4, rng_b))


def test_splits_and_seeds_differ() -> None:
    sources = [SyntheticSketches(s, per_class=2) for s in ("train", "val", "query", "gallery")]
    sources.append(SyntheticSketches("train", per_class=2, seed=1))
    drawn = [[src[i] for i in range(len(src))] for src in sources]
    for i in range(len(sources[0])):
        for j in range(1, len(sources)):
            assert not _same(drawn[0][i].strokes, drawn[j][i].strokes), (sources[j], i)
            assert drawn[j][i].label == drawn[0][i].label
    assert drawn[0][0].key_id == "syn-train-0-0" and drawn[4][5].key_id == "syn-train-1-5"
    assert drawn[2][3].key_id == "syn-query-0-3"


def test_labels_length_and_names() -> None:
    src = SyntheticSketches("val", per_class=4, num_classes=7)
    assert len(src) == 28 and src.num_classes == 7
    assert src.class_names == SYNTHETIC_CLASSES[:7]
    assert [src[i].label for i in range(len(src))] == [i % 7 for i in range(28)]
    np.testing.assert_array_equal(src.labels, np.arange(28) % 7)
    assert src.labels.dtype == np.int64
    assert len(SyntheticSketches("val", per_class=1)) == len(SYNTHETIC_CLASSES) >= 12
    assert len(set(SYNTHETIC_CLASSES)) == len(SYNTHETIC_CLASSES)


def test_errors() -> None:
    with pytest.raises(ValueError, match="split"):
        SyntheticSketches("test", per_class=1)
    with pytest.raises(ValueError, match="num_classes"):
        SyntheticSketches("train", per_class=1, num_classes=len(SYNTHETIC_CLASSES) + 1)
    with pytest.raises(ValueError, match="num_classes"):
        SyntheticSketches("train", per_class=1, num_classes=0)
    with pytest.raises(ValueError, match="per_class"):
        SyntheticSketches("train", per_class=-1)
    src = SyntheticSketches("train", per_class=1, num_classes=3)
    with pytest.raises(IndexError):
        src[3]
    with pytest.raises(ValueError, match="class_index"):
        draw_synthetic(len(SYNTHETIC_CLASSES), np.random.default_rng(0))


def test_google_like_coordinates_and_sizes() -> None:
    src = SyntheticSketches("train", per_class=12)  # 216 sketches
    counts = []
    for i in range(200):
        s = src[i]
        pts = np.concatenate(s.strokes)
        assert np.array_equal(pts, np.round(pts)), "integer coordinates"
        assert pts.min() >= 0 and pts.max() <= 255
        assert all(len(st) >= 2 for st in s.strokes), "every stroke has >= 2 points, like Google's"
        xmin, ymin = pts.min(axis=0)
        # Top-left aligned, larger extent 255, up to RDP (epsilon <= 2) and rounding.
        assert xmin <= 2.5 and ymin <= 2.5 and pts.max() >= 252.5
        counts.append(num_points(s))
    counts = np.array(counts)
    assert (counts > 100).any(), "some sketches exercise the >100-point rule"
    assert 0.6 < np.mean((counts >= 20) & (counts <= 150))
    strokes_per_sketch = [len(src[i].strokes) for i in range(len(SYNTHETIC_CLASSES))]
    assert np.mean(strokes_per_sketch) >= 2.5


def test_classes_are_distinct_and_mostly_not_rotation_symmetric() -> None:
    train = SyntheticSketches("train", per_class=8)
    val = SyntheticSketches("val", per_class=4)

    def rasters(src: SyntheticSketches) -> np.ndarray:
        return np.stack([render(fit_to_box(src[i].strokes), size=32, line_width=8.0) for i in range(len(src))])

    xtr, xva = rasters(train), rasters(val)
    means = np.stack([xtr[train.labels == c].mean(axis=0) for c in range(train.num_classes)])
    dist = ((xva[:, None] - means[None]) ** 2).sum(axis=(-1, -2))
    accuracy = np.mean(dist.argmin(axis=1) == val.labels)
    assert accuracy > 0.75, f"nearest class mean accuracy {accuracy:.2f} (chance {1 / train.num_classes:.2f})"
    # Rotation changes the average sketch of most classes substantially.
    change = [
        min(np.abs(m - np.rot90(m, k)).sum() / m.sum() for k in (1, 2, 3)) for m in means
    ]
    assert sum(c > 0.5 for c in change) >= len(change) - 2


def test_save_preview(tmp_path) -> None:
    from PIL import Image

    path = save_preview(tmp_path / "sub" / "preview.png", per_class=2, size=40)
    img = Image.open(path)
    assert img.size[1] == len(SYNTHETIC_CLASSES) * 44 + 4
    arr = np.asarray(img)
    assert arr.min() == 0 and arr.max() == 255
