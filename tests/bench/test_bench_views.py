"""bench/bench_views.py on tiny batches: the table has a row per task and branch whose
numbers agree with each other, --fresh hands each call the next copy of the batch (and one
batch without it), and a bad --fresh is refused."""

from __future__ import annotations

import re

import pytest
import torch

from tests.bench.bench_scripts import load_bench, restore_threads  # noqa: F401 (a fixture)

bench = load_bench("bench_views")
pytestmark = pytest.mark.usefixtures("restore_threads")


def number(cell: str) -> float:
    return float(cell.replace(",", "").rstrip("x%"))


def test_table_rows_agree(capsys):
    bench.main(["--batch", "4", "--size", "16", "--repeats", "1", "--fresh", "2"])
    out = capsys.readouterr().out
    assert "inputs cycled over 2 copies of the batch" in out
    rows = [line.strip("| ").split(" | ") for line in out.splitlines()
            if line.startswith("| ") and not line.startswith("| task") and "---" not in line]
    assert [(r[0], r[1]) for r in rows] == [(t, m) for t, _ in bench.TASKS for m in ("raster", "stroke")]
    for task, branch, views, ref, fast, speedup, floor, share in rows:
        assert int(views) == (16 if task == "rotation" else 8)
        # speed-up is the ratio of the two rates, batched / floor the ratio of the floor's time
        assert number(speedup) == pytest.approx(number(fast) / number(ref), rel=0.05, abs=0.06)
        assert number(share) == pytest.approx(100 * number(fast) / number(floor), rel=0.05, abs=1)


@pytest.mark.parametrize("fresh", [1, 3])
def test_fresh_cycles_over_copies(monkeypatch, fresh):
    seen: dict[str, set[int]] = {"reference": set(), "batched": set()}
    real_reference = bench.reference_views

    def reference(algorithm, x, y):
        seen["reference"].add(x.data_ptr())
        return real_reference(algorithm.algorithm, x, y)

    class Recording:
        def __init__(self, algorithm):
            self.algorithm = algorithm

        def __getattr__(self, name):  # everything but views, for reference_views
            return getattr(self.algorithm, name)

        def views(self, x, y):
            seen["batched"].add(x.data_ptr())
            return self.algorithm.views(x, y)

    real_build = bench.build_algorithm
    monkeypatch.setattr(bench, "reference_views", reference)
    monkeypatch.setattr(bench, "build_algorithm", lambda *a, **k: Recording(real_build(*a, **k)))
    x, y = bench.make_batch("stroke", 4, 16)
    original = x.clone()
    bench.measure("rotation", {}, "stroke", bench.copies_of(x, fresh), y, repeats=4)
    assert len(seen["reference"]) == fresh and len(seen["batched"]) == fresh
    assert x.data_ptr() in seen["batched"] and torch.equal(x, original)


def test_bad_fresh_is_refused(capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--fresh", "0"])
    assert exit_info.value.code == 2
    assert re.search(r"--fresh must be >= 1, got 0", capsys.readouterr().err)
