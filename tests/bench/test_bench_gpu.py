"""bench/bench_gpu.py, run on the CPU with tiny settings: both tables have the rows and columns
they promise with numbers that agree with each other and with the JSON; the FLOP count is the
hand formula; the peak table; a failed row is reported without losing the others; --device
cuda without CUDA is one line and exit code 2."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest
import torch

from config import load_config
from engine import build
from tests.common import ROOT

_spec = importlib.util.spec_from_file_location("bench_gpu", ROOT / "bench" / "bench_gpu.py")
bench = importlib.util.module_from_spec(_spec)
sys.modules["bench_gpu"] = bench
_spec.loader.exec_module(bench)

TINY = ["--device", "cpu", "--batch", "2", "--warmup", "1", "--steps", "1", "--e2e-steps", "2",
        "--image-size", "64", "--workers", "0"]
TABLE1 = ["model", "mode", "inputs/step", "images/s", "ms/step", "TFLOP/s", "peak TFLOP/s", "% of peak",
          "peak GPU mem GiB", "speed-up vs fp32"]
TABLE2 = ["experiment", "mode", "source", "workers", "sketches/s", "images/s", "data wait ms/step",
          "compute ms/step", "data share", "vs model-only"]


def tables(text: str) -> list[tuple[list[str], list[list[str]]]]:
    """Markdown tables of the output: (header cells, row cells) each."""
    found, block = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            block.append([c.strip() for c in line.strip().strip("|").split("|")])
        elif block:
            assert set(block[1]) == {"---"}, block[1]
            found.append((block[0], block[2:]))
            block = []
    return found


def test_cpu_run_prints_both_tables_and_the_same_rows_as_json(tmp_path, capsys):
    out_json = tmp_path / "gpu.json"
    assert bench.main(TINY + ["--out-json", str(out_json)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("machine: CPU only")
    assert "note: CPU: bf16, channels_last and compile rows skipped" in out
    (h1, rows1), (h2, rows2) = tables(out)
    assert h1 == TABLE1 and h2 == TABLE2
    assert [(r[0], r[1]) for r in rows1] == [("alexnet", "fp32"), ("resnet", "fp32")]
    assert [(r[0], r[1], r[2], r[3]) for r in rows2] == [("cnn_rotation", "fp32", "synthetic", "0"),
                                                         ("cnn_rotation_resnet", "fp32", "synthetic", "0")]
    for r in rows1:
        assert r[2] == "8"  # 2 sketches x 4 rotations
        assert float(r[3]) > 0 and float(r[4]) > 0 and float(r[5]) > 0
        assert r[6:9] == ["-", "-", "-"]  # no peak, no GPU memory on the CPU
        assert r[9] == "1.00x"
    for r in rows2:
        assert all(float(c) > 0 for c in (r[4], r[5], r[6], r[7], r[9]))

    report = json.loads(out_json.read_text())
    assert report["machine"]["device"] == "cpu" and report["machine"]["gpu"] is None
    gflop = report["forward_gflop_per_input"]
    assert set(gflop) == {"alexnet", "resnet"} and all(g > 0 for g in gflop.values())
    assert len(report["model_rows"]) == 2 and len(report["e2e_rows"]) == 2
    for row, cells in zip(report["model_rows"], rows1):
        assert (row["model"], row["mode"], row["inputs_per_step"]) == (cells[0], cells[1], 8)
        assert f"{row['images_per_s']:.1f}" == cells[3] and f"{row['ms_per_step']:.2f}" == cells[4]
        assert f"{row['tflops']:.3g}" == cells[5]  # significant digits: a slow CPU row is ~0.005
        assert row["images_per_s"] == pytest.approx(8 / (row["ms_per_step"] / 1000), rel=1e-9)
        # achieved TFLOP/s = 3 x forward FLOPs x inputs / step time
        assert row["tflops"] == pytest.approx(
            3 * gflop[row["model"]] * 1e9 * 8 / (row["ms_per_step"] / 1000) / 1e12, rel=1e-9)
        assert row["peak_tflops"] is None and row["peak_mem_gib"] is None and row["speedup_vs_fp32"] == 1.0
    for row, cells, base in zip(report["e2e_rows"], rows2, report["model_rows"]):
        assert row["experiment"] == cells[0] and f"{row['images_per_s']:.1f}" == cells[5]
        assert (row["steps"], row["warmup_steps"]) == (2, 1)  # --warmup 1 + 2 x 0 workers x prefetch
        step_ms = 1000 * 2 / row["sketches_per_s"]
        assert row["data_ms_per_step"] + row["compute_ms_per_step"] == pytest.approx(step_ms, rel=1e-6)
        assert row["data_share"] == pytest.approx(row["data_ms_per_step"] / step_ms, rel=1e-6)
        assert row["images_per_s"] == pytest.approx(4 * row["sketches_per_s"], rel=1e-9)
        assert row["vs_model_only"] == pytest.approx(row["images_per_s"] / base["images_per_s"], rel=1e-9)


def test_a_failed_row_is_reported_and_the_rows_before_it_are_kept(tmp_path, capsys, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(bench, "e2e_row", boom)
    out_json = tmp_path / "gpu.json"
    assert bench.main(TINY + ["--models", "resnet", "--out-json", str(out_json)]) == 1
    (_, rows1), (_, rows2) = tables(capsys.readouterr().out)
    assert rows1[0][:2] == ["resnet", "fp32"] and float(rows1[0][3]) > 0
    assert rows2[0][:3] == ["cnn_rotation_resnet", "fp32", "failed: RuntimeError: boom"]
    report = json.loads(out_json.read_text())
    assert report["model_rows"][0]["images_per_s"] > 0
    assert report["e2e_rows"] == [{"model": "resnet", "experiment": "cnn_rotation_resnet", "mode": "fp32",
                                   "error": "RuntimeError: boom"}]


def _out_side(side: int, module) -> int:
    k, s, p = (getattr(module, a) for a in ("kernel_size", "stride", "padding"))
    k, s, p = (v[0] if isinstance(v, tuple) else v for v in (k, s, p))
    return (side + 2 * p - k) // s + 1


@pytest.mark.parametrize("size", [64, 224])
def test_alexnet_flop_count_is_the_hand_formula(size):
    """FlopCounterMode counts 2 x multiply-adds of convolutions and matmuls (no bias, batch
    norm, ReLU or pooling): 2 Cin Cout k k Hout Wout per conv, 2 in out per linear layer."""
    cfg = load_config("cnn_rotation", {"data.image_size": size})
    model = build.build_model(cfg, build.head_size(cfg))
    side, expected = size, 0
    for name in model.feature_names[:8]:  # conv1 .. pool5
        layer = getattr(model, name)
        if isinstance(layer, torch.nn.MaxPool2d):
            side = _out_side(side, layer)
            continue
        conv = layer[0]
        side = _out_side(side, conv)
        kh, kw = conv.kernel_size
        expected += 2 * conv.in_channels * conv.out_channels * kh * kw * side * side
    for lin in [m for m in model.modules() if isinstance(m, torch.nn.Linear)]:
        expected += 2 * lin.in_features * lin.out_features
    assert bench.forward_flops(cfg) == expected
    if size == 224:  # the layer table of models/alexnet.py: conv1 55 x 55 ... pool5 6 x 6
        assert side == 6 and expected == 1_420_217_728


def test_peak_lookup():
    assert bench.peak_tflops("NVIDIA H200")["bf16"] == 989
    assert bench.peak_tflops("NVIDIA H200") == {"bf16": 989, "tf32": 494, "fp32": 67}
    assert bench.peak_tflops("NVIDIA H100 80GB HBM3")["bf16"] == 989
    assert bench.peak_tflops("NVIDIA H100 PCIe")["bf16"] == 756
    assert bench.peak_tflops("NVIDIA A100-SXM4-80GB") == {"bf16": 312, "tf32": 156, "fp32": 19.5}
    assert bench.peak_tflops("NVIDIA GeForce RTX 4090") is None
    assert bench.peak_tflops("") is None


def test_row_peak_picks_the_number_format(monkeypatch):
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    h200 = bench.peak_tflops("NVIDIA H200")
    monkeypatch.setattr(bench, "tf32_state", lambda: {"matmul": False, "cudnn_conv": True})
    assert bench.row_peak("fp32", cuda, h200, None) == (494, "tf32")
    assert bench.row_peak("bf16+channels_last", cuda, h200, None) == (989, "bf16")
    monkeypatch.setattr(bench, "tf32_state", lambda: {"matmul": False, "cudnn_conv": False})
    assert bench.row_peak("fp32", cuda, h200, None) == (67, "fp32")
    assert bench.row_peak("fp32", cuda, None, None) == (None, "-")
    assert bench.row_peak("fp32", cpu, h200, None) == (None, "-")
    assert bench.row_peak("bf16", cuda, h200, 500.0) == (500.0, "given")


def test_cuda_without_cuda_is_one_line_and_exit_code_2(monkeypatch, capsys):
    monkeypatch.setattr(bench.torch.cuda, "is_available", lambda: False)
    assert bench.main(["--device", "cuda"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and "no usable CUDA device" in captured.err


def test_cuda_without_cuda_exit_code_from_the_command_line():
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, "bench/bench_gpu.py", "--device", "cuda"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().count("\n") == 0 and "no usable CUDA device" in done.stderr
