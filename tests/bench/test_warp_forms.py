"""bench/warp_forms.py on a coarse grid of float32 inputs: every input counted, the two forms
never more than 1 ulp apart, and a setting that has one form only never differs."""

from __future__ import annotations

import pytest

from algorithms.warps import AxisWarp
from tests.bench.bench_scripts import load_bench, restore_threads  # noqa: F401 (a fixture)

bench = load_bench("warp_forms")
pytestmark = pytest.mark.usefixtures("restore_threads")


def test_counts_on_a_coarse_grid(capsys):
    step = 1 << 14
    got = bench.main(["--step", str(step)])
    rows = [line.strip("| ").split(" | ") for line in capsys.readouterr().out.splitlines()
            if line.startswith("| ") and "---" not in line and not line.startswith("| lam")]
    expected_inputs = len(range(0, bench.ONE_BITS + 1, step))  # 0, step, 2 step, ... <= the bits of 1.0
    assert [r[0] for r in rows] == ["2.1", "-4.1"] and sorted(got) == [-4.1, 2.1]
    for r, found in zip(rows, (got[2.1], got[-4.1])):
        assert found["inputs"] == expected_inputs and int(r[1].replace(",", "")) == expected_inputs
        assert found["max_ulps"] <= 1 and found["differ"] <= 2 and int(r[2].replace(",", "")) == found["differ"]


def test_a_setting_with_one_form_never_differs():
    got = bench.compare(AxisWarp(1.5, 0.2, 0.7), step=1 << 16)  # not a = 0, b = 1: f is the product form
    assert got["differ"] == 0 and got["max_ulps"] == 0 and got["inputs"] == len(range(0, bench.ONE_BITS + 1, 1 << 16))


def test_bad_step_is_refused(capsys):
    with pytest.raises(SystemExit) as info:
        bench.main(["--step", "0"])
    assert info.value.code == 2 and "--step must be >= 1" in capsys.readouterr().err
