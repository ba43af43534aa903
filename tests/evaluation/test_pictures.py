"""Pictures: the grid frames each retrieval by whether it is right, and picks queries class
by class; the charts are written whole."""

import numpy as np
from PIL import Image

from data.synthetic import SyntheticSketches
from evaluation import pictures


def test_grid_frames_right_wrong_and_unknown(tmp_path):
    src = SyntheticSketches("query", per_class=1, num_classes=4)
    path = pictures.query_grid(tmp_path / "g.png", [src[0]], [[src[1], src[2], src[3]]], [[True, False, None]],
                               ["q"], "title", size=32)
    img = np.asarray(Image.open(path).convert("RGB")).astype(int)
    colours = {tuple(c) for c in img.reshape(-1, 3)}

    def near(colour):
        return any(sum(abs(a - b) for a, b in zip(c, colour)) < 40 for c in colours)

    assert near(pictures.CORRECT) and near(pictures.WRONG) and near(pictures.UNKNOWN)
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))


def test_grid_queries_go_class_by_class():
    labels = np.array([2, 2, 0, 1, 0, 2])
    assert pictures.pick_grid_queries(labels, 4) == [2, 3, 0, 4]
    assert pictures.pick_grid_queries(labels, 10) == [2, 3, 0, 4, 1, 5]


def test_charts_draw_every_series(tmp_path):
    names = [f"c{i}" for i in range(50)]
    series = [("a", list(np.linspace(0, 1, 50))), ("b", [float("nan")] * 50)]
    ap = pictures.class_ap_chart(tmp_path / "ap.png", names, series, "AP")
    pr = pictures.pr_chart(tmp_path / "pr.png", [("a", [0, 0.5, 1], [1, 0.5, 0.2])], "PR")
    for path in (ap, pr):
        with Image.open(path) as img:
            assert img.width > 300 and img.height > 300
    assert pictures.select_classes([0.1, 0.3, 0.9, 0.5], 2) == [2, 0]  # the best and the worst
