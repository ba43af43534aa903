"""Speed switches change no number: the batched pretext views and the per-sample reference
give the same loss curve from the same seed; the CUDA-only switches are no-ops on the CPU."""

import math

import pytest

from config import ConfigError, load_config
from engine.trainer import Trainer

TINY = {
    "data.train_per_class": 2,
    "data.val_per_class": 1,
    "data.num_classes": 4,
    "train.batch_size": 4,
    "train.epochs": 2,
    "train.device": "cpu",
}


def run(tmp_path, name, tag, **extra):
    cfg = load_config(name, {**TINY, "train.out": str(tmp_path / tag), **extra})
    return Trainer(cfg, progress=False).fit()


@pytest.mark.parametrize("name, extra", [
    ("cnn_deform", {"data.image_size": 64}),
    ("tcn_rotation", {}),
    ("tcn_deform", {}),
])
def test_batched_and_per_sample_views_give_the_same_loss_curve(tmp_path, name, extra):
    fast = run(tmp_path, name, "fast", **extra)
    ref = run(tmp_path, name, "ref", **{**extra, "train.views": "per_sample"})
    assert len(fast) == len(ref) == 2
    for a, b in zip(fast, ref):
        for key in ("train_loss", "val_loss", "train_acc", "val_acc"):
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-6), (name, key)


def test_cuda_only_switches_are_no_ops_on_the_cpu(tmp_path):
    # A raster model, where channels_last and bf16 autocast would change the kernels (and so
    # the float rounding) if they were applied on the CPU; train.cpu_bf16 is the CPU's switch.
    small = {"data.image_size": 32, "train.epochs": 1}
    plain = run(tmp_path, "cnn_rotation_demo", "plain", **small)
    switched = run(tmp_path, "cnn_rotation_demo", "switched", **small, **{
        "train.amp": "bf16", "train.channels_last": True, "train.pin_memory": False})
    assert [h["train_loss"] for h in plain] == [h["train_loss"] for h in switched]
    trainer = Trainer(load_config("cnn_rotation_demo", {**TINY, **small, "train.out": str(tmp_path / "t"),
                                                        "train.amp": "bf16", "train.channels_last": True}),
                      progress=False)
    assert not trainer._channels_last and not trainer._autocast()._enabled


def test_bad_switch_values_are_refused():
    with pytest.raises(ConfigError, match="train.views must be one of batched, per_sample"):
        load_config("cnn_rotation", {"train.views": "fast"})
    with pytest.raises(ConfigError, match="train.amp must be one of none, bf16"):
        load_config("cnn_rotation", {"train.amp": "fp8"})


def test_persistent_workers_keep_one_loader_and_give_the_same_loss_curve(tmp_path):
    plain = run(tmp_path, "tcn_rotation", "plain")
    extra = {"train.workers": 2, "train.persistent_workers": True}
    kept = run(tmp_path, "tcn_rotation", "kept", **extra)
    assert [h["train_loss"] for h in kept] == [h["train_loss"] for h in plain]
    assert [h["val_acc"] for h in kept] == [h["val_acc"] for h in plain]

    cfg = load_config("tcn_rotation", {**TINY, **extra, "train.out": str(tmp_path / "loaders")})
    trainer = Trainer(cfg, progress=False)
    first, _ = trainer.train_loader(1, 0)
    epoch1 = [y.tolist() for _, y in first]
    second, _ = trainer.train_loader(2, 1)  # epoch 2, resumed after its first step
    assert second is first and first.persistent_workers  # one loader, the same workers
    epoch2 = [y.tolist() for _, y in second]
    assert len(epoch1) == 2 and len(epoch2) == 1  # 8 sketches / batch 4; one step skipped
    fresh = load_config("tcn_rotation", {**TINY, "train.out": str(tmp_path / "fresh")})
    reference = Trainer(fresh, progress=False)
    assert epoch1 == [y.tolist() for _, y in reference.train_loader(1, 0)[0]]
    assert epoch2 == [y.tolist() for _, y in reference.train_loader(2, 1)[0]]
    assert trainer._val_loader() is trainer._val_loader()
    assert reference.train_loader(1, 0)[0] is not reference.train_loader(1, 0)[0]  # off: a loader per epoch


def test_cpu_bf16_runs_bfloat16_on_channels_last_and_stays_near_float32(tmp_path, monkeypatch, capsys):
    """What holds on every CPU: bf16 rounding moves the logits and the loss of a step only a
    little (compared with float32 from the same weights on the same batch). Whole training curves
    are not compared: a few steps amplify rounding differently on each CPU's kernels (a
    loss 27% apart after two epochs was seen on an AMD EPYC, 2% on an Intel Xeon). The gaps
    quoted below were measured on an AMD EPYC with AVX512-BF16 and with oneDNN capped at AVX2
    (ONEDNN_MAX_CPU_ISA=AVX2, bfloat16 emulated)."""
    import copy

    import torch

    from engine import trainer as trainer_module

    monkeypatch.setattr(trainer_module, "cpu_has_bf16", lambda: False)  # the warning path, on any CPU
    cfg = load_config("cnn_rotation", {**TINY, "data.image_size": 64, "train.out": str(tmp_path / "bf16"),
                                       "train.cpu_bf16": True})
    trainer = Trainer(cfg, progress=False)
    assert "train.cpu_bf16 on a CPU without AMX or AVX512-BF16" in capsys.readouterr().err
    conv = next(m for m in trainer.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert trainer._channels_last and conv.weight.is_contiguous(memory_format=torch.channels_last)
    float32 = copy.deepcopy(trainer.model).to(memory_format=torch.contiguous_format)
    x = torch.stack([trainer.train_set[i][0] for i in range(4)])
    inputs, targets = trainer.prepare_batch((x, torch.zeros(4, dtype=torch.long)))
    assert inputs.is_contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        with trainer._autocast():
            logits = trainer.model(inputs)
        reference = float32(inputs.contiguous())
    assert reference.dtype == torch.float32 and logits.dtype == torch.bfloat16  # autocast is on for the CPU
    gap = (logits.float() - reference).norm() / reference.norm()
    assert gap < 0.15, gap  # bf16 keeps 8 bits of mantissa: 2.8-3.0% measured, with and without bf16 kernels
    low = trainer.algorithm.loss(logits.float(), targets)
    high = trainer.algorithm.loss(reference, targets)
    assert float(low) == pytest.approx(float(high), rel=0.05)  # measured: 0.004-0.3% apart
    before = [p.detach().clone() for p in trainer.model.parameters()]
    history = trainer.fit()
    assert len(history) == 2 and all(math.isfinite(r["train_loss"]) for r in history)
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))
    # strokes: autocast without channels_last; off by default
    tcn = Trainer(load_config("tcn_rotation", {**TINY, "train.out": str(tmp_path / "tcn"), "train.cpu_bf16": True}),
                  progress=False)
    assert not tcn._channels_last and tcn._autocast().fast_dtype == torch.bfloat16 and tcn._autocast()._enabled
    off = Trainer(load_config("tcn_rotation", {**TINY, "train.out": str(tmp_path / "off")}), progress=False)
    assert not off._autocast()._enabled
