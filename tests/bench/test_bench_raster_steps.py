"""bench/bench_raster_steps.py on a tiny store: a row per step, in order, each a positive
time, and the whole path costs at least its dearest step."""

from __future__ import annotations

import shutil

import pytest

from tests.bench.bench_scripts import load_bench, restore_threads  # noqa: F401 (a fixture)
from tests.common import QUICKDRAW, needs_quickdraw

bench = load_bench("bench_raster_steps")
pytestmark = pytest.mark.usefixtures("restore_threads")


@needs_quickdraw
def test_every_step_is_timed(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("apple", "cat"):
        shutil.copy(QUICKDRAW / "simplified" / f"{name}.ndjson", src)
    got = bench.main(["--src", str(src), "--limit", "5", "--batch", "4", "--size", "32", "--batches", "2",
                      "--rounds", "1", "--work", str(tmp_path / "w")])
    out = capsys.readouterr().out
    rows = [line.strip("| ").split(" | ") for line in out.splitlines()
            if line.startswith("| ") and "---" not in line and not line.startswith("| step")]
    assert [r[0] for r in rows] == list(got) and len(rows) == 11
    assert rows[1][0].startswith("draw") and rows[-1][0] == "dataset + collate + views"
    assert all(float(r[1]) == pytest.approx(got[r[0]], abs=0.06) and got[r[0]] > 0 for r in rows)
    assert got["dataset + collate + views"] > max(got["draw (render_packed)"], got["views in all (algorithm.views)"]) * 0.5
    assert got["drawn once + collate + views"] > got["views in all (algorithm.views)"] * 0.5


def test_bad_arguments_are_refused(capsys):
    with pytest.raises(SystemExit) as info:
        bench.main(["--batch", "0"])
    assert info.value.code == 2 and "must be >= 1" in capsys.readouterr().err
