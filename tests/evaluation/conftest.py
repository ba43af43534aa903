"""Shared pieces of the evaluation tests: tiny configs and tiny trained checkpoints.

The checkpoints are trained once per test session (a few seconds); tests that write next
to them use their own ``--cache-dir`` / ``--json`` / ``--name`` so that they do not depend
on each other's order.
"""

from pathlib import Path

import pytest

from engine.cli import train_main
from tests.common import TINY, set_args

#: Options every evaluation in these tests takes.
BASE = ["--no-progress", "--device", "cpu"]


def train_tiny(out: Path, exp: str, branch: str, *extra: str) -> Path:
    """One epoch of ``exp`` on the tiny data; returns its best.pt."""
    args = ["--exp", exp, "--epochs", "1", "--out", str(out), "--no-progress", "--device", "cpu"]
    assert train_main(branch, args + set_args(TINY) + list(extra)) == 0
    return out / exp / "best.pt"


@pytest.fixture(scope="session")
def runs(tmp_path_factory):
    """Tiny checkpoints: a TCN (rotation), a supervised TCN and a small ResNet on 32 px."""
    out = tmp_path_factory.mktemp("runs")
    return {
        "tcn": train_tiny(out, "tcn_rotation", "tcn"),
        "sup": train_tiny(out, "tcn_supervised", "tcn"),
        "cnn": train_tiny(out, "cnn_rotation_demo", "cnn", "--set", "data.image_size=32"),
    }
