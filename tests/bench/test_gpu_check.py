"""bench/gpu_check.py, the one-command GPU check, run as its CPU dry run (tiny sizes) so that
the script cannot rot: every part is recorded with a status, the figures are positive and
agree with each other and between the JSON and the Markdown, a part that raises is recorded as
failed while the later parts still run; plus the guard around parts, the pytest report parser,
the time budget, and the fast stop when CUDA is asked for and missing."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys

import pytest
import torch

from tests.common import ROOT

_spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "bench" / "gpu_check.py")
gc = importlib.util.module_from_spec(_spec)
sys.modules["gpu_check"] = gc
_spec.loader.exec_module(gc)


def md_tables(text: str) -> list[tuple[list[str], list[list[str]]]]:
    """Markdown tables of a text: (header cells, row cells) each."""
    found, block = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            block.append([c.strip() for c in line.strip().strip("|").split("|")])
        elif block:
            assert set(block[1]) == {"---"}, block[1]
            found.append((block[0], block[2:]))
            block = []
    return found


def table(text: str, *first: str) -> tuple[list[str], list[list[str]]]:
    """The one table whose header starts with ``first``."""
    matches = [t for t in md_tables(text) if t[0][: len(first)] == list(first)]
    assert len(matches) == 1, [t[0] for t in md_tables(text)]
    return matches[0]


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    """The whole check on the CPU, with train_tcn made to raise."""
    out = tmp_path_factory.mktemp("gpu_check")
    cmd = [sys.executable, "bench/gpu_check.py", "--device", "cpu", "--out", str(out), "--fail", "train_tcn"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    summary = json.loads((out / "gpu_check.json").read_text())
    return proc, out, summary, (out / "gpu_check.md").read_text()


def test_dry_run_records_every_part_and_goes_on_after_a_failed_one(dry_run):
    proc, out, s, md = dry_run
    assert proc.returncode == 1, proc.stdout[-3000:]  # one part failed (the injected one)
    # what comes back from the device tool: at most 8 files, so the check writes three
    assert sorted(p.name for p in out.iterdir()) == ["gpu_check.json", "gpu_check.log", "gpu_check.md"]
    assert list(s["parts"]) == gc.PART_NAMES == s["part_names"]
    status = {name: r["status"] for name, r in s["parts"].items()}
    assert status == {"preflight": "ok", "test_cuda": "ok", "store": "ok", "bench_gpu": "ok", "train_cnn": "ok",
                      "train_tcn": "failed", "eval": "ok", "bench_gpu_compile": "skipped"}
    assert s["status"] == "failed"
    tcn = s["parts"]["train_tcn"]
    assert tcn["error"] == "RuntimeError: injected failure in part train_tcn (--fail)"
    assert "CPU dry run" in s["parts"]["bench_gpu_compile"]["reason"]
    for name, r in s["parts"].items():
        assert r["status"] in gc.STATUSES
        if r["status"] in ("ok", "failed"):
            assert r["seconds"] >= 0, name
    # the exact command, and the machine
    assert s["command"].startswith("python bench/gpu_check.py --device cpu --out ")
    assert s["device"] == "cpu" and s["mode"].startswith("dry run")
    m = s["machine"]
    assert m["torch"] == torch.__version__ and m["cpu_count"] == os.cpu_count() and m["cuda_available"] is False
    assert m["problems"] == [] and m["smoke"]["conv_shape"] == [8, 64, 55, 55]  # (224 + 4 - 11) // 4 + 1 = 55
    log = (out / "gpu_check.log").read_text()
    assert "[train_tcn] RuntimeError: injected failure" in log  # the child's traceback is in the log
    assert proc.stdout.rstrip().endswith(f"{out / 'gpu_check.log'}")


def test_dry_run_test_cuda_and_store(dry_run):
    _, _, s, _ = dry_run
    t = s["parts"]["test_cuda"]
    assert (t["passed"], t["failed"], t["skipped"], t["failures"]) == (1, 0, 0, [])
    st = s["parts"]["store"]
    plan = s["plan"]
    assert st["classes"] == plan["classes"] == 4 and st["meta_num_classes"] == 4
    assert st["per_class"]["query"] == plan["query_per_class"] and st["per_class"]["gallery"] == plan["gallery_per_class"]
    assert st["sketches"] == 4 * sum(st["per_class"].values())
    assert plan["store"] == st["store"]


def test_dry_run_training_figures_agree(dry_run):
    _, _, s, md = dry_run
    r = s["parts"]["train_cnn"]
    plan = s["plan"]
    warm = plan["warmup"] + 2 * plan["workers"]  # the loader's queue: 2 batches a worker
    assert (r["experiment"], r["source"], r["warmup_steps"], r["steps"]) == ("cnn_rotation", "store", warm, plan["steps"])
    assert r["batch_sketches"] == 4 and r["inputs_per_sketch"] == 4 and r["inputs_per_step"] == 16  # 4 quarter turns
    assert r["switches"] == {"amp": "bf16", "channels_last": True, "workers": 1, "pin_memory": True,
                             "persistent_workers": True, "cudnn_benchmark": True, "compile": False}
    assert r["channels_last_used"] is False  # CUDA-only switches are no-ops on the CPU
    assert r["step_ms"] > 0 and r["data_ms"] >= 0 and r["compute_ms"] > 0
    # data wait + compute tile the steps exactly: both are differences of the same clock marks
    assert r["data_ms"] + r["compute_ms"] == pytest.approx(r["step_ms"], rel=1e-9)
    assert 0 <= r["data_wait_fraction"] <= 1
    assert r["data_wait_fraction"] == pytest.approx(r["data_ms"] / r["step_ms"], rel=1e-9)
    assert r["sketches_per_s"] == pytest.approx(4 / (r["step_ms"] / 1000), rel=1e-9)
    assert r["inputs_per_s"] == pytest.approx(4 * r["sketches_per_s"], rel=1e-9)
    alone = r["model_alone"]
    assert alone["inputs_per_s"] > 0 and math.isfinite(alone["loss"])
    assert r["e2e_vs_model_alone"] == pytest.approx(alone["step_ms"] / r["step_ms"], rel=1e-9)
    assert r["peak_mem_allocated_gib"] is None and r["peak_mem_reserved_gib"] is None  # no GPU
    assert math.isfinite(r["train_loss"]) and 0 <= r["val_acc"] <= 1
    assert r["checkpoint"].endswith("cnn_rotation/best.pt")

    header, rows = table(md, "experiment", "model")
    assert header == gc.TRAIN_HEADER and len(rows) == 1  # train_tcn failed: no row
    row = dict(zip(header, rows[0]))
    assert row["experiment"] == "cnn_rotation" and row["inputs/step"] == "16"
    assert row["sketches/s"] == f"{r['sketches_per_s']:.1f}" and row["inputs/s"] == f"{r['inputs_per_s']:.1f}"
    assert row["GPU wait fraction"] == f"{r['data_wait_fraction']:.3f}"
    assert row["data wait ms/step"] == f"{r['data_ms']:.2f}" and row["compute ms/step"] == f"{r['compute_ms']:.2f}"
    assert row["peak allocated GiB"] == "-"


def test_dry_run_eval_and_bench_figures(dry_run):
    _, _, s, md = dry_run
    e = s["parts"]["eval"]
    plan = s["plan"]
    assert e["num_queries"] == 4 * plan["query_per_class"] and e["gallery_size"] == 4 * plan["gallery_per_class"]
    assert e["sketches"] == e["num_queries"] + e["gallery_size"]
    assert 0 < e["mAP"] <= 1 and e["features_s"] >= 0 and e["ranking_s"] >= 0
    assert e["checkpoint"] == s["parts"]["train_cnn"]["checkpoint"]
    header, rows = table(md, "layer")
    row = dict(zip(header, rows[0]))
    assert row["mAP"] == f"{e['mAP']:.4f}" and row["queries"] == str(e["num_queries"])

    rep = s["parts"]["bench_gpu"]["report"]
    assert rep["machine"]["device"] == "cpu" and s["parts"]["bench_gpu"]["source"] == "store"
    assert [(r["model"], r["mode"]) for r in rep["model_rows"]] == [("resnet", "fp32")]
    assert all(r["images_per_s"] > 0 for r in rep["model_rows"] + rep["e2e_rows"])
    assert [r["source"] for r in rep["e2e_rows"]] == ["store"]

    # one line per part, with the JSON's status
    header, rows = table(md, "part")
    assert header == ["part", "status", "seconds", "result"]
    assert {r[0]: r[1] for r in rows} == {name: r["status"] for name, r in s["parts"].items()}
    assert f"command: `{s['command']}`" in md and f"torch {torch.__version__}" in md


# ---------------------------------------------------------------------------- fast, in-process
def make_check(tmp_path, budget: float = 100.0, fail: list | None = None):
    args = gc.parse_args(["--device", "cpu", "--out", str(tmp_path)] + sum((["--fail", f] for f in fail or []), []))
    plan = gc.make_plan(args, tmp_path / "work")
    summary = {"command": "python x", "device": "cpu", "mode": "test", "started": "now", "budget_s": budget,
               "plan": {}, "machine": {}, "part_names": [], "parts": {}, "notes": []}
    return gc.Check(plan, tmp_path, gc.Console(tmp_path / "gpu_check.log"), budget, summary)


def test_a_raising_part_is_recorded_and_the_parts_after_it_still_run(tmp_path):
    ran = []

    def ok(name):
        def run(check, timeout):
            ran.append(name)
            assert 0 < timeout <= gc.CPU_CAP_S
            return {"value": name}
        return run

    def boom(check, timeout):
        ran.append("boom")
        raise ValueError("boom\nsecond line")

    parts = [gc.Part("a", boom, 10), gc.Part("b", ok("b"), 10), gc.Part("c", ok("c"), 10, needs=("a",)),
             gc.Part("d", ok("d"), 10, needs=("b",)), gc.Part("e", ok("e"), 10, why_skip=lambda c: "by design"),
             gc.Part("f", ok("f"), 10)]
    check = make_check(tmp_path, fail=["bench_gpu"])
    check.summary["part_names"] = [p.name for p in parts]
    gc.run_parts(check, parts)
    r = check.summary["parts"]
    assert ran == ["boom", "b", "d", "f"]
    assert (r["a"]["status"], r["a"]["error"]) == ("failed", "ValueError: boom")
    assert r["b"]["status"] == "ok" and r["b"]["value"] == "b"
    assert r["c"] == {"status": "not run", "reason": "needs a, which did not pass"}
    assert r["e"] == {"status": "skipped", "reason": "by design"}
    assert r["f"]["status"] == "ok" and not any(x.get("fatal") for x in r.values())
    saved = json.loads((tmp_path / "gpu_check.json").read_text())
    assert {k: v["status"] for k, v in saved["parts"].items()} == {k: v["status"] for k, v in r.items()}
    _, rows = table((tmp_path / "gpu_check.md").read_text(), "part")
    assert [(row[0], row[1]) for row in rows] == [(k, v["status"]) for k, v in r.items()]
    assert rows[0][3] == "ValueError: boom"


def test_a_fatal_failure_stops_the_rest_and_fail_injects_in_the_parent(tmp_path):
    ran = []
    check = make_check(tmp_path, fail=["test_cuda"])
    parts = [gc.Part("test_cuda", lambda c, t: ran.append("t") or {}, 10),  # made to raise by --fail
             gc.Part("pre", lambda c, t: (_ for _ in ()).throw(RuntimeError("no CUDA")), 10, fatal=True),
             gc.Part("later", lambda c, t: ran.append("later") or {}, 10)]
    check.summary["part_names"] = [p.name for p in parts]
    gc.run_parts(check, parts)
    r = check.summary["parts"]
    assert ran == []
    assert r["test_cuda"]["error"] == "RuntimeError: injected failure in part test_cuda (--fail)"
    assert r["pre"]["status"] == "failed" and r["pre"]["fatal"] is True
    assert r["later"] == {"status": "not run", "reason": "the pre failed: RuntimeError: no CUDA"}


def test_no_part_starts_once_the_budget_is_spent(tmp_path):
    check = make_check(tmp_path, budget=gc.MIN_PART_S - 1)
    gc.run_parts(check, [gc.Part("a", lambda c, t: {}, 10)])
    assert check.summary["parts"]["a"]["status"] == "not run"
    assert "time budget spent" in check.summary["parts"]["a"]["reason"]


def test_parse_junit_counts_and_names_failures(tmp_path):
    xml = tmp_path / "r.xml"
    xml.write_text("""<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest">
<testcase classname="tests.test_cuda" name="test_a[x]" time="0.1"/>
<testcase classname="tests.test_cuda" name="test_b" time="0.1"><failure message="assert 1 == 2">...</failure></testcase>
<testcase classname="tests.test_cuda" name="test_c" time="0.0"><skipped message="needs CUDA"/></testcase>
<testcase classname="tests.test_cuda" name="test_d" time="0.0"><error message="fixture">...</error></testcase>
<testcase classname="tests.test_cuda" name="test_e" time="0.1"/>
</testsuite></testsuites>""")
    assert gc.parse_junit(xml) == {"passed": 2, "failed": 2, "skipped": 1,
                                   "failures": ["tests.test_cuda::test_b", "tests.test_cuda::test_d"]}


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the stop on a machine without CUDA")
def test_cuda_asked_for_without_cuda_stops_after_the_preflight(tmp_path):
    proc = subprocess.run([sys.executable, "bench/gpu_check.py", "--device", "cuda", "--out", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stdout[-2000:]
    s = json.loads((tmp_path / "gpu_check.json").read_text())
    pre = s["parts"]["preflight"]
    assert pre["status"] == "failed" and pre["fatal"] is True
    assert pre["error"].startswith("FatalError: --device cuda: torch") and "no usable CUDA device" in pre["error"]
    assert all(r["status"] == "not run" and r["reason"].startswith("the preflight failed")
               for name, r in s["parts"].items() if name != "preflight")
    assert s["status"] == "failed (broken environment)"
