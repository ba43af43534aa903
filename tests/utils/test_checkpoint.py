"""Checkpoints: atomic writes, and clear errors instead of silent fresh starts."""

import pytest
import torch

from utils.checkpoint import CheckpointError, load_checkpoint, save_checkpoint


def test_roundtrip_and_no_temporary_left(tmp_path):
    state = {"model": {"w": torch.arange(3.0)}, "epoch": 2, "config": {"name": "x"}}
    save_checkpoint(state, tmp_path / "last.pt")
    back = load_checkpoint(tmp_path / "last.pt")
    assert back["epoch"] == 2 and torch.equal(back["model"]["w"], torch.arange(3.0))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_failed_save_keeps_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint({"model": {}, "epoch": 1, "config": {}}, path)

    def boom(*a, **k):
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError):
        save_checkpoint({"model": {}, "epoch": 2, "config": {}}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_truncated_file_is_a_clear_error(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint({"model": {"w": torch.zeros(1000)}, "epoch": 1, "config": {}}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"last\.pt: unreadable or truncated"):
        load_checkpoint(path)


def test_missing_and_foreign_files(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "nope.pt")
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="missing model, epoch, config"):
        load_checkpoint(tmp_path / "other.pt")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="holds a list"):
        load_checkpoint(tmp_path / "list.pt")


# ---------------------------------------------------------------- corruption and crashes
import errno
import multiprocessing
import os
import random
import signal
import time

from utils.atomic import atomic_write_text, remove_stale_temporaries, temporaries
from utils.checkpoint import CheckpointWriteError


def test_flipped_byte_in_tensor_data_is_caught_by_the_checksum(tmp_path):
    # torch itself loads such a file without complaint; the stored digest does not.
    path = tmp_path / "last.pt"
    save_checkpoint({"model": {"w": torch.zeros(100_000)}, "epoch": 1, "config": {}}, path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # the middle of the file is the tensor's bytes
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"last\.pt: corrupt checkpoint \(tensor data does not match"):
        load_checkpoint(path)


def test_garbage_file_is_a_clear_error(tmp_path):
    path = tmp_path / "last.pt"
    path.write_bytes(b"\x00" * 100 + b"not a checkpoint" * 10)
    with pytest.raises(CheckpointError, match=r"last\.pt: unreadable or truncated"):
        load_checkpoint(path)


def test_save_does_not_modify_the_callers_state_and_checksum_is_not_returned(tmp_path):
    state = {"model": {"w": torch.ones(3)}, "epoch": 1, "config": {}}
    save_checkpoint(state, tmp_path / "a.pt")
    assert set(state) == {"model", "epoch", "config"}
    assert set(load_checkpoint(tmp_path / "a.pt")) == {"model", "epoch", "config"}


def test_disk_full_halfway_through_a_write_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint({"model": {"w": torch.ones(1000)}, "epoch": 1, "config": {}}, path)
    before = path.read_bytes()
    real_save = torch.save

    def fills_the_disk(obj, fh, *a, **k):
        real_save(obj, fh, *a, **k)
        fh.truncate(fh.tell() // 2)  # half of it reached the disk ...
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # ... then the disk was full

    monkeypatch.setattr(torch, "save", fills_the_disk)
    with pytest.raises(CheckpointWriteError) as info:
        save_checkpoint({"model": {"w": torch.zeros(1000)}, "epoch": 2, "config": {}}, path)
    message = str(info.value)
    assert "last.pt: could not write checkpoint (No space left on device)" in message
    assert len(message.splitlines()) == 1
    assert isinstance(info.value, OSError) and isinstance(info.value, CheckpointError)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_published_files_get_the_usual_permissions(tmp_path):
    # mkstemp makes 0600 files; a checkpoint or config.json should be readable like any file.
    mask = os.umask(0o022)
    os.umask(mask)
    save_checkpoint({"model": {}, "epoch": 1, "config": {}}, tmp_path / "last.pt")
    atomic_write_text(tmp_path / "config.json", "{}\n")
    for name in ("last.pt", "config.json"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~mask


def test_remove_stale_temporaries_only_touches_that_files_leftovers(tmp_path):
    for name in (".last.pt.abc123.tmp", ".last.pt.zzz.tmp", ".best.pt.q.tmp", "last.pt", "notes.tmp"):
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in temporaries(tmp_path / "last.pt")] == [".last.pt.abc123.tmp", ".last.pt.zzz.tmp"]
    removed = remove_stale_temporaries(tmp_path / "last.pt")
    assert sorted(p.name for p in removed) == [".last.pt.abc123.tmp", ".last.pt.zzz.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".best.pt.q.tmp", "last.pt", "notes.tmp"]


PAYLOAD = 5_000_000  # 20 MB of float32: one save takes tens of milliseconds


def _save_forever(path: str, start: int) -> None:
    # A forked child: keep overwriting the checkpoint with ever newer, self-describing states.
    torch.set_num_threads(1)  # no OpenMP region after fork
    w = torch.empty(PAYLOAD)
    i = start
    while True:
        i += 1
        w.fill_(float(i))
        save_checkpoint({"model": {"w": w}, "epoch": i, "config": {"payload": PAYLOAD}}, path)


def test_sigkill_while_saving_never_leaves_a_corrupt_checkpoint(tmp_path):
    path = tmp_path / "last.pt"
    ctx = multiprocessing.get_context("fork")
    rng = random.Random(1234)
    newest, kills_mid_write, loaded = 0, 0, 0
    for _ in range(15):
        child = ctx.Process(target=_save_forever, args=(str(path), newest))
        child.start()
        time.sleep(rng.uniform(0.02, 0.4))
        os.kill(child.pid, signal.SIGKILL)
        child.join(timeout=30)
        assert child.exitcode == -signal.SIGKILL
        leftovers = temporaries(path)
        kills_mid_write += bool(leftovers)
        assert all(p.name.endswith(".tmp") for p in leftovers)
        if newest == 0 and not path.exists():
            continue  # killed before its first save finished: there is nothing, not a torso
        state = load_checkpoint(path)  # the newest finished save, complete and verified
        assert state["epoch"] >= newest and state["config"]["payload"] == PAYLOAD
        w = state["model"]["w"]
        assert w.shape == (PAYLOAD,) and bool((w == float(state["epoch"])).all())
        newest, loaded = state["epoch"], loaded + 1
    assert loaded >= 10 and newest > 15
    # Most kills land inside a save (they take most of the loop), so temporaries were left
    # behind and were never mistaken for the checkpoint; a starting run removes them.
    assert kills_mid_write >= 1
    remove_stale_temporaries(path)
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]
    assert load_checkpoint(path)["epoch"] == newest
