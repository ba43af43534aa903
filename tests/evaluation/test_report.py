"""The report stage on its own: names, the table's marks and warnings, the index."""

import json

import pytest

from evaluation import report


def row(model, m, **extra):
    return {"model": model, "layer": "fc", "feature_dim": 8, "mAP": m, "P@1": 0.5, "P@100": 0.25, **extra}


def test_table_marks_k_above_the_gallery_and_shows_knn_and_probe_only_when_measured():
    rows = [row("a", 0.5), row("b", 0.25, knn={"top1": 0.75, "top5": 1.0})]
    text = report.format_table(rows, [1, 100], gallery_size=60)
    lines = text.splitlines()
    assert lines[0] == "| model | layer | dim | mAP | P@1 | P@100* | kNN top-1 | kNN top-5 |"
    assert lines[2] == "| a | fc | 8 | 0.5000 | 0.5000 | 0.2500 | - | - |"
    assert lines[3].endswith("| 0.7500 | 1.0000 |")
    assert report.table_notes([1, 100], 60) == [
        "* K = 100 is above the gallery size (60): precision taken at the gallery size."]
    assert "*" not in report.format_table(rows, [1, 100], gallery_size=100) and report.table_notes([1, 100], 100) == []


def test_small_splits_are_named():
    assert report.split_warnings(report.SMALL_SPLIT, report.SMALL_SPLIT) == []
    got = report.split_warnings(14, 5000)
    assert len(got) == 1 and got[0].startswith("only 14 queries (fewer than 100)")


def test_names_follow_what_is_evaluated():
    ident = {"rows": [{"kind": "pretrained"}], "metric": "cosine"}
    name = report.result_name("best", "fc", ["random", "", "probe"], ident)
    assert name.startswith("best_fc_random_probe_") and len(name.rsplit("_", 1)[1]) == 8
    assert report.result_name("best", "fc", ["random", "", "probe"], ident) == name  # stable
    other = report.result_name("best", "fc", ["random", "", "probe"], {**ident, "metric": "euclidean"})
    assert other != name  # any difference in what decides the numbers changes the name
    assert report.result_name("last", "pool+fc", ["fused-concat"], ident).startswith("last_pool+fc_fused-concat_")
    with pytest.raises(ValueError):
        report.check_name("../elsewhere")


def test_a_result_of_another_evaluation_is_not_replaced(tmp_path):
    path = tmp_path / "r.json"
    report.check_not_taken(path, {"a": 1})  # nothing there
    path.write_text(json.dumps({"identity": {"a": 1}}))
    report.check_not_taken(path, {"a": 1})  # the same evaluation
    for other in ({"a": 2}, {}):
        with pytest.raises(ValueError, match="holds the results of another evaluation"):
            report.check_not_taken(path, other)
    path.write_text("garbage")
    with pytest.raises(ValueError):
        report.check_not_taken(path, {"a": 1})


def test_index_keeps_one_entry_per_result_and_survives_a_broken_file(tmp_path):
    def entry(name):
        (tmp_path / f"{name}.json").write_text("{}")
        return {"name": name, "json": f"{name}.json", "written": "now", "checkpoint": "/x/best.pt",
                "checkpoint_sha256": "ab" * 32, "title": "t", "rows": ["r"], "layer": "fc",
                "data": {"source": "synthetic"}, "metric": "cosine", "mAP": 0.5, "knn_top1": None,
                "probe_top1": None, "command": "c"}

    report.update_index(tmp_path, entry("one"))
    report.update_index(tmp_path, entry("two"))
    report.update_index(tmp_path, {**entry("one"), "mAP": 0.75})
    got = json.loads((tmp_path / "index.json").read_text())["results"]
    assert [(e["name"], e["mAP"]) for e in got] == [("two", 0.5), ("one", 0.75)]
    (tmp_path / "two.json").unlink()  # a removed result leaves the index at its next update
    report.update_index(tmp_path, entry("three"))
    assert [e["name"] for e in json.loads((tmp_path / "index.json").read_text())["results"]] == ["one", "three"]
    assert "| [three](three.json) | best.pt (abababab) |" in (tmp_path / "index.md").read_text()
    (tmp_path / "index.json").write_text("{broken")
    report.update_index(tmp_path, entry("four"))
    assert (tmp_path / "index.json.bad").read_text() == "{broken"
    assert [e["name"] for e in json.loads((tmp_path / "index.json").read_text())["results"]] == ["four"]
