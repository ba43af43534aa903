"""Exact resume: stopping anywhere (a signal mid-epoch, during validation, after a save) and
``--resume`` ends with the same weights, optimiser state and history as a run straight
through, bit for bit on the CPU; a non-finite loss keeps the last good checkpoint."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from engine import build
from engine import trainer as trainer_module
from engine.cli import train_main
from tests.common import ROOT
from utils.checkpoint import load_checkpoint
from utils.sampler import EpochSampler, epoch_generator

# 16 training sketches in batches of 4: 4 steps per epoch; 8 validation sketches: 2 batches.
SMALL = {
    "data.train_per_class": 4,
    "data.val_per_class": 2,
    "data.num_classes": 4,
    "train.batch_size": 4,
}
CASES = {
    # Adam, stroke TCN (narrow embedding: small checkpoints, quick saves).
    "tcn_rotation": {"model.params": {"embed_dim": 256}},
    # SGD with Nesterov momentum, a batch-norm ResNet on 32 px rasters.
    "cnn_rotation_demo": {
        "data.image_size": 32,
        "model.params": {"widths": [16, 32, 64, 128], "blocks": [1, 1, 1, 1], "stem": "imagenet"},
    },
}


def args_for(name, out, epochs, *extra):
    args = ["--exp", name, "--epochs", str(epochs), "--out", str(out), "--no-progress",
            "--device", "cpu", "--workers", "0"]
    for key, value in {**SMALL, **CASES[name]}.items():
        args += ["--set", f"{key}={value}"]
    return args + list(extra)


def branch(name):
    return name[:3]


def signal_on_loss_call(monkeypatch, call, signum, training=True):
    """Send ``signum`` to this process from inside the ``call``-th loss computation
    (training steps if ``training`` else validation batches, counted from 1)."""
    real_build = build.build_algorithm

    def build_algorithm(cfg):
        algorithm = real_build(cfg)
        real_loss = algorithm.loss
        seen = [0]

        def loss(logits, targets):
            out = real_loss(logits, targets)
            if torch.is_grad_enabled() == training:
                seen[0] += 1
                if seen[0] == call:
                    os.kill(os.getpid(), signum)
            return out

        algorithm.loss = loss
        return algorithm

    monkeypatch.setattr(build, "build_algorithm", build_algorithm)


def assert_same_run(a: dict, b: dict):
    """Two final checkpoints hold identical weights, optimiser state and epoch records."""
    assert a["model"].keys() == b["model"].keys()
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    assert sa.keys() == sb.keys() and sa
    for index in sa:
        for key, value in sa[index].items():
            other = sb[index][key]
            assert torch.equal(value, other) if torch.is_tensor(value) else value == other, (index, key)
    strip = lambda history: [{k: v for k, v in h.items() if k != "seconds"} for h in history]  # noqa: E731
    assert strip(a["history"]) == strip(b["history"])
    assert a["best_value"] == b["best_value"] and a["epoch"] == b["epoch"]


def run_dir(out, name):
    return Path(out) / name


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """Three epochs without interruption, per experiment (computed once)."""
    cache = {}

    def get(name):
        if name not in cache:
            out = tmp_path_factory.mktemp(f"straight_{name}")
            assert train_main(branch(name), args_for(name, out, 3)) == 0
            cache[name] = load_checkpoint(run_dir(out, name) / "last.pt")
        return cache[name]

    return get


@pytest.mark.parametrize(
    "name, signum, call, code, where",
    [
        ("tcn_rotation", signal.SIGTERM, 6, 143, "epoch 2 step 2"),
        ("cnn_rotation_demo", signal.SIGINT, 7, 130, "epoch 2 step 3"),
    ],
)
def test_signal_mid_epoch_saves_the_step_and_resume_is_exact(tmp_path, monkeypatch, capsys, straight,
                                                              name, signum, call, code, where):
    before = signal.getsignal(signum)
    signal_on_loss_call(monkeypatch, call, signum)
    assert train_main(branch(name), args_for(name, tmp_path, 3)) == code
    err = capsys.readouterr().err.strip()
    assert err == f"[{name}] stopped at epoch {where.split()[1]} step {where.split()[3]}; resume with --resume"
    assert signal.getsignal(signum) is before  # the trainer's handlers are gone again
    run = run_dir(tmp_path, name)
    saved = load_checkpoint(run / "last.pt")
    # "epoch" counts completed epochs; "step" the steps done in the next one.
    assert (saved["epoch"], saved["step"]) == (1, int(where.split()[3]))
    assert saved["meters"]["count"] > 0
    assert load_checkpoint(run / "best.pt")["epoch"] == 1
    monkeypatch.undo()

    assert train_main(branch(name), args_for(name, tmp_path, 3, "--resume")) == 0
    resumed = load_checkpoint(run / "last.pt")
    assert (resumed["epoch"], resumed["step"]) == (3, 0)
    assert_same_run(resumed, straight(name))
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]


def test_signal_during_validation_resumes_with_validation(tmp_path, monkeypatch, capsys, straight):
    name = "tcn_rotation"
    # In epoch 1's first validation batch: the second batch is not run, nothing is recorded.
    signal_on_loss_call(monkeypatch, 1, signal.SIGTERM, training=False)
    assert train_main(branch(name), args_for(name, tmp_path, 3)) == 143
    assert "stopped at epoch 1 step 4" in capsys.readouterr().err
    saved = load_checkpoint(run_dir(tmp_path, name) / "last.pt")
    assert (saved["epoch"], saved["step"], saved["history"]) == (0, 4, [])
    monkeypatch.undo()
    assert train_main(branch(name), args_for(name, tmp_path, 3, "--resume")) == 0
    assert_same_run(load_checkpoint(run_dir(tmp_path, name) / "last.pt"), straight(name))


def test_signal_while_saving_stops_after_that_epoch(tmp_path, monkeypatch, capsys, straight):
    name = "tcn_rotation"
    real_save = trainer_module.save_checkpoint
    calls = []

    def save_then_signal(state, path):
        real_save(state, path)
        calls.append(Path(path).name)
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(trainer_module, "save_checkpoint", save_then_signal)
    assert train_main(branch(name), args_for(name, tmp_path, 3)) == 143
    assert "stopped at epoch 1 step 4; resume with --resume" in capsys.readouterr().err
    # The save that was under way completed (best.pt too); no extra save was needed.
    assert calls == ["best.pt", "last.pt"]  # best first: see Trainer._save
    saved = load_checkpoint(run_dir(tmp_path, name) / "last.pt")
    assert (saved["epoch"], saved["step"]) == (1, 0)
    monkeypatch.undo()
    assert train_main(branch(name), args_for(name, tmp_path, 3, "--resume")) == 0
    assert_same_run(load_checkpoint(run_dir(tmp_path, name) / "last.pt"), straight(name))


def random_jitter(monkeypatch):
    """Make the task draw from the torch, numpy and Python RNGs every step (a stand-in for
    random augmentation), so that only a run that restores every RNG resumes exactly."""
    import random

    import numpy as np

    real_build = build.build_algorithm

    def build_algorithm(cfg):
        algorithm = real_build(cfg)
        real_views = algorithm.views

        def views(x, y):
            scale = 1.0 + 0.05 * (torch.rand(()).item() + np.random.rand() + random.random())
            inputs, targets = real_views(x, y)
            return inputs * scale, targets

        algorithm.views = views
        return algorithm

    monkeypatch.setattr(build, "build_algorithm", build_algorithm)


def test_random_augmentation_resumes_exactly(tmp_path, monkeypatch):
    name = "tcn_rotation"
    random_jitter(monkeypatch)
    assert train_main(branch(name), args_for(name, tmp_path / "straight", 2)) == 0
    straight_run = load_checkpoint(run_dir(tmp_path / "straight", name) / "last.pt")
    monkeypatch.undo()
    random_jitter(monkeypatch)
    signal_on_loss_call(monkeypatch, 3, signal.SIGTERM)  # wraps the jittering task
    assert train_main(branch(name), args_for(name, tmp_path / "stopped", 2)) == 143
    monkeypatch.undo()
    random_jitter(monkeypatch)
    assert train_main(branch(name), args_for(name, tmp_path / "stopped", 2, "--resume")) == 0
    assert_same_run(load_checkpoint(run_dir(tmp_path / "stopped", name) / "last.pt"), straight_run)


def test_real_sigterm_to_a_training_process(tmp_path, straight):
    # A separate process, signalled from outside once its first checkpoint exists. Where it
    # stops depends on timing; that resuming from there is exact does not.
    name = "tcn_rotation"
    run = run_dir(tmp_path, name)
    # Bit-identical float sums need the same number of threads as this process.
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    proc = subprocess.Popen([sys.executable, "train_tcn.py"] + args_for(name, tmp_path, 40),
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while not (run / "last.pt").exists():
            assert proc.poll() is None, proc.communicate()
            assert time.time() < deadline, "no checkpoint after 60 s"
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err
    assert "stopped at epoch" in err and "resume with --resume" in err and "Traceback" not in err
    saved = load_checkpoint(run / "last.pt")
    assert saved["epoch"] < 40
    # Straight through to epoch 3 vs interrupted-and-resumed to epoch 3 (if it stopped
    # before epoch 3 ended) or to where it stopped (compared against the same straight run).
    stop_epoch = saved["epoch"] + (1 if saved["step"] else 0)
    target = max(3, stop_epoch)
    assert train_main(branch(name), args_for(name, tmp_path, target, "--resume")) == 0
    resumed = load_checkpoint(run / "last.pt")
    if target == 3:
        assert_same_run(resumed, straight(name))
    else:
        other = tmp_path / "straight"
        assert train_main(branch(name), args_for(name, other, target)) == 0
        assert_same_run(resumed, load_checkpoint(run_dir(other, name) / "last.pt"))


def test_resume_after_the_last_epoch_does_nothing(tmp_path, capsys):
    name = "tcn_rotation"
    assert train_main(branch(name), args_for(name, tmp_path, 1)) == 0
    before = (run_dir(tmp_path, name) / "last.pt").read_bytes()
    assert train_main(branch(name), args_for(name, tmp_path, 1, "--resume")) == 0
    assert "already trained for 1 epochs; nothing to do" in capsys.readouterr().out
    assert (run_dir(tmp_path, name) / "last.pt").read_bytes() == before


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, capsys):
    name = "tcn_rotation"
    run = run_dir(tmp_path, name)
    assert train_main(branch(name), args_for(name, tmp_path, 1)) == 0
    digest = {f: hashlib.sha256((run / f).read_bytes()).hexdigest() for f in ("last.pt", "best.pt", "metrics.jsonl")}
    capsys.readouterr()

    real_build = build.build_algorithm

    def build_algorithm(cfg):
        algorithm = real_build(cfg)
        real_loss, seen = algorithm.loss, [0]

        def loss(logits, targets):
            out = real_loss(logits, targets)
            if torch.is_grad_enabled():
                seen[0] += 1
                if seen[0] == 2:  # epoch 2, step 2 of the resumed run
                    return out * float("nan")
            return out

        algorithm.loss = loss
        return algorithm

    monkeypatch.setattr(build, "build_algorithm", build_algorithm)
    assert train_main(branch(name), args_for(name, tmp_path, 3, "--resume")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("error: non-finite loss nan at epoch 2, step 2; the last good checkpoint is ")
    assert err.endswith(str(run / "last.pt"))
    for f, d in digest.items():
        assert hashlib.sha256((run / f).read_bytes()).hexdigest() == d, f
    assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp")]


# ---------------------------------------------------------------- the epoch order
def test_single_process_order_is_the_seeded_permutation_and_resumes_mid_epoch():
    n, batch = 10, 4
    full = list(EpochSampler(n, batch, seed=3, epoch=2))
    expected = torch.randperm(n, generator=epoch_generator(3, 2)).tolist()[:8]  # 2 full batches
    assert full == expected
    assert list(EpochSampler(n, batch, seed=3, epoch=2, start_step=1)) == full[4:]
    assert list(EpochSampler(n, batch, seed=3, epoch=3)) != full
    assert EpochSampler(n, batch, seed=3, epoch=2).num_steps == 2
    # A dataset smaller than one batch is one (short) batch.
    small = EpochSampler(3, batch, seed=0, epoch=1)
    assert sorted(small) == [0, 1, 2] and small.num_steps == 1


def test_ranks_batches_together_are_the_single_process_batch():
    n, batch, world = 22, 6, 3
    single = list(EpochSampler(n, batch, seed=1, epoch=4))
    shares = [list(EpochSampler(n, batch, seed=1, epoch=4, rank=r, world_size=world)) for r in range(world)]
    local = batch // world
    for step in range(EpochSampler(n, batch, seed=1, epoch=4).num_steps):
        together = sorted(i for share in shares for i in share[step * local:(step + 1) * local])
        assert together == sorted(single[step * batch:(step + 1) * batch]), step
    resumed = list(EpochSampler(n, batch, seed=1, epoch=4, rank=1, world_size=world, start_step=2))
    assert resumed == shares[1][2 * local:]
    with pytest.raises(ValueError, match="not divisible by 4"):
        EpochSampler(n, batch, seed=1, epoch=4, world_size=4)
    # Too few samples for every rank: wrapped around so that all take the same steps.
    padded = [list(EpochSampler(3, 4, seed=0, epoch=1, rank=r, world_size=2)) for r in range(2)]
    assert [len(p) for p in padded] == [2, 2] and set(padded[0] + padded[1]) == {0, 1, 2}


# ---------------------------------------------------------------- the signal handlers
def test_first_signal_is_recorded_second_one_aborts_and_handlers_are_restored():
    from utils.signals import StopSignals

    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    with StopSignals() as stop:
        assert not stop.requested
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.signum == signal.SIGTERM
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    with StopSignals() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        with pytest.raises(SystemExit) as info:
            os.kill(os.getpid(), signal.SIGTERM)
        assert info.value.code == 143 and stop.signum == signal.SIGINT
    assert {s: signal.getsignal(s) for s in before} == before
