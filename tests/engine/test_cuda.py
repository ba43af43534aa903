"""The CUDA paths, checked against the CPU: they run where a GPU is, and are skipped elsewhere.

CI has no GPU, so everything here is also covered on the CPU by the other test modules;
what only a GPU can show is that the device code paths (views built with torch ops on the
device, bf16 autocast, channels_last, pinned memory, cuDNN) give the CPU's numbers. Run
them on a GPU machine with ``python -m pytest -q tests/engine/test_cuda.py``.

``SKETCH_TEST_DEVICE=cpu`` runs the same checks with the CPU standing in for the device
(every comparison then holds trivially), to check the tests themselves without a GPU.
"""

import json
import os
import subprocess
import sys

import pytest
import torch

from algorithms import build_algorithm
from algorithms.reference import reference_views
from config import load_config
from data.datasets import RasterDataset, StrokeDataset
from data.synthetic import SyntheticSketches
from engine.trainer import Trainer
from evaluation.features import extract_features
from models import build_model
from tests.common import ROOT
from utils.checkpoint import load_checkpoint

DEVICE = os.environ.get("SKETCH_TEST_DEVICE", "cuda")
pytestmark = pytest.mark.skipif(DEVICE.startswith("cuda") and not torch.cuda.is_available(),
                                reason="needs a CUDA device (SKETCH_TEST_DEVICE=cpu runs the checks on the CPU)")
SOURCE = SyntheticSketches("train", per_class=2, num_classes=6, seed=3)
TINY = {"data.train_per_class": 4, "data.val_per_class": 1, "data.num_classes": 4,
        "train.batch_size": 8, "train.epochs": 2}


def batch(modality: str, size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    ds = RasterDataset(SOURCE, image_size=size) if modality == "raster" else StrokeDataset(SOURCE)
    items = [ds[i] for i in range(len(ds))]
    return torch.stack([x for x, _ in items]), torch.tensor([y for _, y in items])


@pytest.mark.parametrize("modality", ["raster", "stroke"])
@pytest.mark.parametrize("name, params", [("rotation", {}), ("deformation", {"module": "released"}),
                                          ("deformation", {"module": "VC"})])
def test_views_on_the_device_equal_the_cpu_views(modality, name, params):
    algorithm = build_algorithm(name, modality, **params)
    x, y = batch(modality)
    cpu_inputs, cpu_targets = algorithm.views(x, y)
    inputs, targets = algorithm.views(x.to(DEVICE), y.to(DEVICE))
    assert inputs.device.type == torch.device(DEVICE).type and inputs.is_contiguous()
    assert torch.equal(targets.cpu(), cpu_targets)
    if modality == "stroke" and name == "deformation":
        # float64 sin/cos of two libraries may differ in the last bit before the cast to float32
        torch.testing.assert_close(inputs.cpu(), cpu_inputs, rtol=0, atol=1e-6)
    else:
        assert torch.equal(inputs.cpu(), cpu_inputs)  # moves, max and closed-form turns: bit for bit
    torch.testing.assert_close(inputs.cpu(), reference_views(algorithm, x, y)[0], rtol=0, atol=1e-6)


@pytest.mark.parametrize("name, params", [("rotation", {}), ("deformation", {"module": "released"})])
def test_views_of_ink_levels_on_the_device_equal_the_cpu_float_views(name, params):
    # train.uint8_rasters: the loader sends levels, the device turns them into floats by a
    # table lookup (not a division, whose reciprocal multiply would change the last bit).
    algorithm = build_algorithm(name, "raster", **params)
    ds = RasterDataset(SOURCE, image_size=64, ink_levels=True)
    levels = torch.stack([ds[i][0] for i in range(len(ds))])
    floats = torch.stack([RasterDataset(SOURCE, image_size=64)[i][0] for i in range(len(ds))])
    assert levels.dtype == torch.uint8 and len(levels.unique()) > 100  # many levels, not just 0 and 255
    cpu_inputs, _ = algorithm.views(floats)
    inputs, _ = algorithm.views(levels.to(DEVICE))
    assert inputs.dtype == torch.float32 and inputs.device.type == torch.device(DEVICE).type
    assert torch.equal(inputs.cpu().view(torch.int32), cpu_inputs.view(torch.int32))


@pytest.mark.parametrize("model_name, size", [("alexnet", 64), ("resnet", 64), ("tcn", None)])
def test_forward_on_the_device_matches_the_cpu(model_name, size):
    torch.manual_seed(0)
    model = build_model(model_name, num_classes=4).eval()
    x = batch("raster" if size else "stroke")[0]
    with torch.no_grad():
        expected = model(x)
        got = model.to(DEVICE)(x.to(DEVICE)).cpu()
        assert got.dtype == torch.float32
        # TF32 convolutions (torch's default on Ampere and later) round to 10-bit mantissas.
        torch.testing.assert_close(got, expected, rtol=2e-2, atol=2e-2)
        if size:
            cl = model.to(memory_format=torch.channels_last)(x.to(DEVICE).contiguous(memory_format=torch.channels_last))
            torch.testing.assert_close(cl.cpu(), got, rtol=2e-2, atol=2e-2)
        if DEVICE.startswith("cuda"):
            with torch.autocast("cuda", dtype=torch.bfloat16):
                low = model(x.to(DEVICE)).float().cpu()
            torch.testing.assert_close(low, expected, rtol=0.1, atol=0.1)  # bf16 keeps 8 bits


@pytest.mark.parametrize("name, extra", [
    ("cnn_rotation", {"data.image_size": 64}),
    ("tcn_deform", {}),
])
def test_training_on_the_device_follows_the_cpu_loss_curve(tmp_path, name, extra):
    def fit(device, tag, **more):
        cfg = load_config(name, {**TINY, **extra, **more, "train.device": device, "train.out": str(tmp_path / tag)})
        return Trainer(cfg, progress=False).fit()

    cpu = fit("cpu", "cpu")
    dev = fit(DEVICE, "dev")
    assert len(dev) == len(cpu) == 2
    for a, b in zip(cpu, dev):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=0.05, abs=0.05)
    # every speed switch at once: trains, finite, and the checkpoint reloads on the CPU
    fast = fit(DEVICE, "fast", **{"train.amp": "bf16", "train.channels_last": True, "train.workers": 2,
                                  "train.persistent_workers": True, "train.cudnn_benchmark": True})
    assert all(torch.isfinite(torch.tensor(h["train_loss"])) for h in fast)
    state = load_checkpoint(tmp_path / "fast" / name / "last.pt")  # maps to the CPU
    assert all(t.device.type == "cpu" for t in state["model"].values())


def test_features_on_the_device_match_the_cpu():
    torch.manual_seed(0)
    model = build_model("alexnet", num_classes=4)
    ds = RasterDataset(SOURCE, image_size=64)
    cpu, labels = extract_features(model, ds, "fc_block", torch.device("cpu"), batch_size=5, progress=False)
    dev, dev_labels = extract_features(model.to(DEVICE), ds, "fc_block", torch.device(DEVICE), batch_size=5,
                                       progress=False)
    assert dev.device.type == "cpu" and torch.equal(labels, dev_labels)
    cos = torch.nn.functional.cosine_similarity(cpu, dev, dim=1)
    assert cos.min() > 0.999  # the same features up to TF32 rounding


def test_bench_gpu_runs_on_the_device(tmp_path):
    out = tmp_path / "gpu.json"
    cmd = [sys.executable, "bench/bench_gpu.py", "--device", DEVICE, "--batch", "4", "--warmup", "1", "--steps", "2",
           "--e2e-steps", "2", "--image-size", "64", "--workers", "0", "--out-json", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(out.read_text())
    modes = {r["mode"] for r in report["model_rows"]}
    assert modes == ({"fp32", "bf16", "bf16+channels_last"} if DEVICE.startswith("cuda") else {"fp32"})
    assert all(r["images_per_s"] > 0 and "error" not in r for r in report["model_rows"] + report["e2e_rows"])
    if DEVICE.startswith("cuda"):
        assert all(r["peak_mem_gib"] > 0 for r in report["model_rows"])
