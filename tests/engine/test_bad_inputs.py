"""The catalogue of bad inputs: each is one line on stderr, exit status 2, and leaves every
file an earlier run wrote exactly as it was.

(The evaluation cache's interrupted/broken entries are tested with the cache itself, in
tests/evaluation/test_features.py.)
"""

import errno
import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from config import load_config
from engine import build
from engine.cli import train_main
from tests import common
from utils.checkpoint import load_checkpoint, save_checkpoint

NAME = "tcn_rotation"


def tiny_args(out, name=NAME, *extra):
    return ["--exp", name, *common.tiny_args(out, *extra)]


def snapshot(folder: Path) -> dict:
    """Path -> sha256 of every file under ``folder``."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """One epoch of tcn_rotation, trained once and copied for each test."""
    out = tmp_path_factory.mktemp("finished")
    assert train_main("tcn", tiny_args(out, NAME, "--epochs", "1")) == 0
    return out


@pytest.fixture
def out(finished_run, tmp_path):
    target = tmp_path / "out"
    shutil.copytree(finished_run, target)
    return target


def fails_with(capsys, branch, argv, message):
    assert train_main(branch, argv) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("error: ") and message in err, err
    assert "Traceback" not in captured.out + captured.err
    return err


def not_a_store(tmp_path):
    f = tmp_path / "qd.ndjson"
    f.write_text("{}\n")
    return f


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--exp", "nope"], "unknown experiment 'nope'"),
        (["--set", "train.batch_size='big'"], "train.batch_size: expected int, got str 'big'"),
        (["--set", "optim.lr_schedule=0.1"], "optim.lr_schedule: expected list, got float 0.1"),
        (["--set", "data.center='yes'"], "data.center: expected bool, got str 'yes'"),
        (["--epochs", "0"], "train.epochs must be positive, got 0"),
        (["--data", "/no/such/dir"], "data path /no/such/dir does not exist"),
        (["--epochs", "2"], "last.pt already exists: add --resume to continue that run"),
        (["--resume", "--set", "algorithm.name='deformation'", "--set", "model.num_classes=2"],
         "last.pt: was trained with algorithm.name 'rotation', this run asks for 'deformation'"),
        (["--resume", "--set", "model.params={'channels': 16}"],
         "last.pt: was trained with model.params {}, this run asks for {'channels': 16}"),
    ],
)
def test_bad_command_lines_leave_an_existing_run_untouched(out, capsys, argv, message):
    before = snapshot(out)
    argv = tiny_args(out) + argv if argv[0] != "--exp" else argv + ["--out", str(out), "--no-progress"]
    fails_with(capsys, "tcn", argv, message)
    assert snapshot(out) == before


def test_data_path_that_is_a_file(tmp_path, capsys):
    path = not_a_store(tmp_path)
    fails_with(capsys, "tcn", tiny_args(tmp_path / "o", NAME, "--data", str(path)),
               f"data path {path} is not a folder")
    assert not (tmp_path / "o").exists()


def test_unreadable_data_path(tmp_path, capsys, monkeypatch):
    store = tmp_path / "store"
    store.mkdir()
    if os.geteuid() == 0:
        # root reads everything; simulate the permission check failing instead
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == store else real_access(p, mode))
    else:
        store.chmod(0)
    try:
        fails_with(capsys, "tcn", tiny_args(tmp_path / "o", NAME, "--data", str(store)),
                   f"data path {store} is not readable (permission denied)")
    finally:
        store.chmod(0o755)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("split", ["train", "val"])
def test_empty_split(tmp_path, capsys, monkeypatch, split):
    real = build.build_dataset

    def build_dataset(cfg, name, *args):
        return torch.utils.data.Subset(real(cfg, name, *args), []) if name == split else real(cfg, name, *args)

    monkeypatch.setattr(build, "build_dataset", build_dataset)
    fails_with(capsys, "tcn", tiny_args(tmp_path), f"experiment '{NAME}': split '{split}' is empty")
    assert not (tmp_path / NAME).exists()


def test_checkpoint_of_another_model(out, capsys):
    # tcn_rotation's last.pt put where the dilated TCN's run lives.
    other = out / "tcn_rotation_dilated"
    other.mkdir()
    shutil.copy(out / NAME / "last.pt", other / "last.pt")
    before = snapshot(out)
    fails_with(capsys, "tcn", tiny_args(out, "tcn_rotation_dilated", "--resume"),
               "last.pt: was trained with model.name 'tcn', this run asks for 'tcn_dilated'")
    assert snapshot(out) == before


def test_checkpoint_with_weights_that_do_not_fit(out, capsys):
    # Same names everywhere, but a tensor of another shape: refused, not half-loaded.
    path = out / NAME / "last.pt"
    state = torch.load(path, weights_only=False)
    key = next(iter(state["model"]))
    state["model"][key] = torch.zeros(3)
    del state["checksum"]
    save_checkpoint(state, path)
    before = snapshot(out)
    fails_with(capsys, "tcn", tiny_args(out, NAME, "--resume", "--epochs", "2"),
               "last.pt: does not fit this model (Error(s) in loading state_dict")
    assert snapshot(out) == before


@pytest.mark.parametrize("damage", ["truncate", "flip", "foreign"])
def test_damaged_checkpoint_on_resume(out, capsys, damage):
    path = out / NAME / "last.pt"
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 3])
        message = "last.pt: unreadable or truncated checkpoint"
    elif damage == "flip":
        raw = bytearray(data)
        raw[len(raw) // 2] ^= 0xFF
        path.write_bytes(bytes(raw))
        message = "last.pt: corrupt checkpoint (tensor data does not match its checksum)"
    else:  # weights saved by some other tool
        torch.save({"model": {}, "epoch": 1, "config": {}}, path)
        message = "last.pt: not a training checkpoint (missing optimizer, rng, num_outputs, best_value)"
    before = snapshot(out)
    fails_with(capsys, "tcn", tiny_args(out, NAME, "--resume", "--epochs", "2"), message)
    assert snapshot(out) == before  # the damaged file is left for the user to inspect


def test_disk_full_during_a_save(out, capsys, monkeypatch):
    real_save = torch.save

    def fills_the_disk(obj, fh, *a, **k):
        real_save(obj, fh, *a, **k)
        fh.truncate(fh.tell() // 2)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", fills_the_disk)
    run = out / NAME
    keep = {name: (run / name).read_bytes() for name in ("last.pt", "best.pt", "metrics.jsonl")}
    err = fails_with(capsys, "tcn", tiny_args(out, NAME, "--resume", "--epochs", "2"),
                     ".pt: could not write checkpoint (No space left on device); the previous ")
    # the first file of the save: best.pt when epoch 2 improved (it goes first), else last.pt
    assert str(run / "best.pt") in err or str(run / "last.pt") in err
    for name, data in keep.items():
        assert (run / name).read_bytes() == data, name  # epoch 2 was neither saved nor logged
    assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp")]


def test_stale_temporaries_of_a_killed_save_are_removed_at_start(out):
    run = out / NAME
    stale = [run / ".last.pt.k1ll3d.tmp", run / ".best.pt.x.tmp", run / ".config.json.y.tmp"]
    for p in stale:
        p.write_bytes(b"half a checkpoint")
    assert train_main("tcn", tiny_args(out, NAME, "--resume", "--epochs", "2")) == 0
    assert not any(p.exists() for p in stale)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the machine has CUDA")
def test_cuda_without_cuda(tmp_path, capsys):
    argv = tiny_args(tmp_path)
    argv[argv.index("--device") + 1] = "cuda"
    fails_with(capsys, "tcn", argv, "--device cuda was asked for but this machine has no usable CUDA device")
    assert not tmp_path.joinpath(NAME).exists()


def test_raster_too_small_for_the_model_is_refused_before_anything_runs(tmp_path, capsys):
    # AlexNet-BN's pool5 has no cell below 63 px (models/alexnet.py): refused at build time,
    # with the model's own minimum, before data is read or a run folder is made.
    argv = ["--exp", "cnn_rotation", "--out", str(tmp_path), "--no-progress", "--set", "data.image_size=62"]
    fails_with(capsys, "cnn", argv, "model 'alexnet' needs rasters of at least 63 px; data.image_size is 62")
    assert not any(tmp_path.iterdir())
    # 63 px builds and runs (the ResNet has no such minimum: 8 px runs).
    for exp, size in (("cnn_rotation", 63), ("cnn_rotation_resnet", 8)):
        model = build.build_model(load_config(exp, {"data.image_size": size}), 4).eval()
        with torch.no_grad():
            assert model(torch.rand(2, 1, size, size)).shape == (2, 4), exp


def test_refused_resume_still_removes_a_killed_saves_temporaries(out, capsys):
    # A run killed in the middle of a save leaves a temporary; a --resume refused for another
    # reason (here: the wrong model) must not leave it behind for good.
    run = out / NAME
    other = out / "tcn_rotation_dilated"
    other.mkdir()
    shutil.copy(run / "last.pt", other / "last.pt")
    stale = other / ".last.pt.k1ll3d.tmp"
    stale.write_bytes(b"x" * 4096)
    fails_with(capsys, "tcn", tiny_args(out, "tcn_rotation_dilated", "--resume"),
               "was trained with model.name 'tcn'")
    assert not stale.exists() and (other / "last.pt").exists()


def test_a_second_run_on_the_same_folder_is_refused(out, capsys):
    import subprocess
    import sys
    import time

    run = out / NAME
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; sys.path.insert(0, sys.argv[2]); from utils.run_lock import RunLock; "
         "lock = RunLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(60)",
         str(run), str(Path(__file__).resolve().parents[2])],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = snapshot(out)
        err = fails_with(capsys, "tcn", tiny_args(out, NAME, "--resume", "--epochs", "2"),
                         "another run is using this folder")
        assert f"(process {holder.pid})" in err
        assert snapshot(out) == before
    finally:
        holder.kill()
        holder.wait()
    time.sleep(0.05)
    assert train_main("tcn", tiny_args(out, NAME, "--resume", "--epochs", "2")) == 0  # a killed holder blocks nobody
    assert not (run / ".lock").exists()  # a run that ended removes its lock file


def test_wrong_data_is_named_before_an_existing_checkpoint(out, tmp_path, capsys):
    # Without --resume the folder's last.pt would be refused too; the wrong --data comes first.
    folder = tmp_path / "not_a_store"
    folder.mkdir()
    fails_with(capsys, "tcn", tiny_args(out, NAME, "--data", str(folder)), "is not a prepared sketch store")


@pytest.mark.parametrize("target", ["metrics.jsonl", "tensorboard"])
def test_disk_full_while_logging(out, capsys, monkeypatch, target):
    from tensorboardX.event_file_writer import EventsWriter

    from utils import atomic

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    if target == "tensorboard":
        monkeypatch.setattr(EventsWriter, "flush", no_space)
        expected = "tensorboard/events.out.tfevents."
    else:
        real, writes = atomic.atomic_write, []

        def atomic_write(path, write):
            if Path(path).name == "metrics.jsonl":
                writes.append(path)
                if len(writes) == 2:  # the first rewrites the resumed history; the second is epoch 2's
                    return real(path, lambda fh: (fh.write(b"{}"), no_space()))
            return real(path, write)

        monkeypatch.setattr(atomic, "atomic_write", atomic_write)
        expected = "metrics.jsonl: could not write (No space left on device)"
    run = out / NAME
    metrics = (run / "metrics.jsonl").read_bytes()
    err = fails_with(capsys, "tcn", tiny_args(out, NAME, "--resume", "--epochs", "2"), expected)
    assert str(run) in err and ("intact" in err or "unchanged" in err)
    saved = load_checkpoint(run / "last.pt")
    assert saved["epoch"] == 2  # the checkpoint went first and is whole
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]  # never half a line
    assert lines == saved["history"][: len(lines)]  # what the log holds, the checkpoint records
    if target == "metrics.jsonl":
        assert (run / "metrics.jsonl").read_bytes() == metrics  # the failed rewrite changed nothing


def test_training_without_tensorboardx_warns_once_and_keeps_metrics(tmp_path, capsys, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_tensorboardx(name, *args, **kwargs):
        if name.startswith("tensorboardX"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboardx)
    assert train_main("tcn", tiny_args(tmp_path, NAME, "--epochs", "2")) == 0
    err = capsys.readouterr().err
    assert err.count("tensorboardX is not installed") == 1
    run = tmp_path / NAME
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2 and not (run / "tensorboard").exists()


def test_torchrun_summary_names_the_error(tmp_path, monkeypatch, capsys):
    # torchrun prints its own traceback after a worker fails; its summary reads the worker's
    # error file, so the one line must be there (read back with torch's own parser).
    from torch.distributed.elastic.multiprocessing.errors import ProcessFailure

    error_file = tmp_path / "error.json"
    monkeypatch.setenv("TORCHELASTIC_ERROR_FILE", str(error_file))
    fails_with(capsys, "tcn", tiny_args(tmp_path, NAME, "--data", str(tmp_path / "missing")), "does not exist")
    failure = ProcessFailure(local_rank=0, pid=1, exitcode=2, error_file=str(error_file))
    assert failure.message.startswith("error: data path ") and failure.message.endswith("does not exist")
