"""bench/bench_pipeline.py on a tiny store: every table has its rows, and its ratios, floor
shares, worker scaling and disk extrapolations agree with the rates and sizes it printed."""

from __future__ import annotations

import shutil

import pytest

from tests.bench.bench_scripts import load_bench, restore_threads  # noqa: F401 (a fixture)
from tests.common import QUICKDRAW, needs_quickdraw

bench = load_bench("bench_pipeline")
pytestmark = pytest.mark.usefixtures("restore_threads")


def number(cell: str) -> float:
    return float(cell.replace(",", "").rstrip("x%").split()[0])


def tables(out: str) -> list[list[list[str]]]:
    found, current = [], None
    for line in out.splitlines():
        if line.startswith("| "):
            cells = line.strip("| ").split(" | ")
            if current is None:
                current = []
                found.append(current)
            if "---" not in cells[0]:
                current.append(cells)
        else:
            current = None
    return found


@needs_quickdraw
def test_tables_agree_with_themselves(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("apple", "banana", "cat"):
        shutil.copy(QUICKDRAW / "simplified" / f"{name}.ndjson", src)
    got = bench.main(["--src", str(src), "--limit", "12", "--batch", "4", "--size", "32", "--batches", "2",
                      "--slow-batches", "1", "--rounds", "1", "--workers", "0", "1", "--work", str(tmp_path / "w")])
    main_table, workers, disk = tables(capsys.readouterr().out)
    assert got["sketches"] == 36
    header, rows = main_table[0], main_table[1:]
    assert header[2:9] == [f"{p} sketches/s" for p in bench.PATHS]
    assert [(r[0], r[1]) for r in rows] == [(t, m) for t, m, _ in bench.TASKS]
    for r in rows:
        cell = dict(zip(header, r))
        rel, ref, before, f32, fast, once, alone = (
            None if cell[f"{p} sketches/s"] == "-" else number(cell[f"{p} sketches/s"]) for p in bench.PATHS)
        assert number(cell["vs released"]) == pytest.approx(fast / rel, rel=0.06, abs=0.06)
        assert number(cell["vs reference"]) == pytest.approx(fast / ref, rel=0.06, abs=0.06)
        assert number(cell["vs per-sketch loader"]) == pytest.approx(fast / before, rel=0.06, abs=0.06)
        assert number(cell["loader alone vs released"]) == pytest.approx(alone / rel, rel=0.06, abs=0.06)
        if r[1] == "raster":
            assert number(cell["vs float32 batches"]) == pytest.approx(fast / f32, rel=0.06, abs=0.06)
            assert number(cell["batched / floor"]) == pytest.approx(
                100 * fast / number(cell["write floor sketches/s"]), rel=0.06, abs=1)
            assert number(cell["drawn once vs released"]) == pytest.approx(once / rel, rel=0.06, abs=0.06)
            assert number(cell["drawn once / floor"]) == pytest.approx(
                100 * once / number(cell["write floor sketches/s"]), rel=0.06, abs=1)
        else:  # strokes have no float32-batches path (their batched path is it), no raster cache, no floor
            assert f32 is None and once is None
            assert (cell["vs float32 batches"] == cell["write floor sketches/s"] == cell["batched / floor"]
                    == cell["drawn once vs released"] == cell["drawn once / floor"] == "-")
    # Workers: a row per task and path measured; "1 vs 0" is the ratio of the two rates, and
    # the workers-0 column repeats the main table's rate.
    assert [(r[0], r[1], r[2]) for r in workers[1:]] == [(t, m, p) for t, m, _ in bench.TASKS for p in bench.paths_for(m)]
    for r in workers[1:]:
        assert number(r[5]) == pytest.approx(number(r[4]) / number(r[3]), rel=0.06, abs=0.02)
        main_row = next(m for m in rows if (m[0], m[1]) == (r[0], r[1]))
        assert r[3] == main_row[2 + bench.PATHS.index(r[2])]
    # Disk: per 1,000 sketches and the same extrapolated to 3,829,500.
    assert [r[0].split(" (")[0] for r in disk[1:]] == ["store arrays", "stroke tensors prepared once",
                                                      "rasters drawn once", "released pipeline's files"]
    assert got["raster_bytes"] == 36 * 32 * 32 + 128 + len((tmp_path / "w" / "store" / "train" / "rasters_S32_w3_centred"
                                                             / "meta.json").read_bytes())
    for r, size in zip(disk[1:], (got["store_bytes"], got["cache_bytes"], got["raster_bytes"], got["released_bytes"]),
                       strict=True):
        assert number(r[1]) == pytest.approx(size / 36, rel=0.01, abs=1)  # kB per 1,000 = bytes per sketch
        assert number(r[2]) == pytest.approx(size / 36 * bench.FULL_KEPT / 1e9, rel=0.01, abs=0.01)
    assert got["cache_bytes"] > got["store_bytes"] > 0


def test_bad_arguments_are_refused(capsys):
    for argv, message in ((["--workers", "1"], "include 0"), (["--batch", "0"], "must be >= 1")):
        with pytest.raises(SystemExit) as info:
            bench.main(argv)
        assert info.value.code == 2 and message in capsys.readouterr().err
