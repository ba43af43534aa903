"""utils.host_memory: with glibc, freed blocks are reused instead of being faulted in afresh;
the trainer applies it unless train.keep_host_memory is False."""

import subprocess
import sys

import pytest

from config import load_config
from engine import trainer as trainer_module
from tests.common import ROOT
from utils.host_memory import keep_freed_memory

# malloc, touch and free a 64 MiB block a few times; print the fewest page faults a round took
# once the heap has settled. It runs in its own process: the setting is process-wide.
ROUNDS = """
import ctypes, resource, sys
sys.path.insert(0, sys.argv[2])
from utils.host_memory import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "keep" else None
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
size = 64 << 20
def round_faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)
    libc.free(block)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
faults = [round_faults() for _ in range(6)]
print(applied, min(faults[2:]))
"""


def faults_per_round(mode: str) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", ROUNDS, mode, str(ROOT)], capture_output=True, text=True,
                         check=True).stdout.split()
    return out[0], int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's (Linux)")
def test_freed_blocks_are_reused_instead_of_faulted_in_again():
    applied, kept = faults_per_round("keep")
    _, default = faults_per_round("default")
    pages = (64 << 20) // 4096
    assert applied == "True"
    assert kept <= pages // 100 < default  # default: a fresh mapping every round, faulted in again


def test_no_glibc_means_no_change(monkeypatch):
    monkeypatch.setattr(sys, "platform", "darwin")
    assert keep_freed_memory() is False


def test_trainer_applies_it_unless_switched_off(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(trainer_module, "keep_freed_memory", lambda: calls.append(1) or True)
    tiny = {"data.train_per_class": 2, "data.val_per_class": 1, "data.num_classes": 4, "train.batch_size": 4,
            "train.device": "cpu"}
    on = trainer_module.Trainer(load_config("tcn_rotation", {**tiny, "train.out": str(tmp_path / "on")}),
                                progress=False)
    assert on.host_memory_kept and calls == [1]
    off = trainer_module.Trainer(load_config("tcn_rotation", {**tiny, "train.out": str(tmp_path / "off"),
                                                              "train.keep_host_memory": False}), progress=False)
    assert not off.host_memory_kept and calls == [1]
