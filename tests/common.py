"""What many tests share: where things are, the tiny synthetic runs, the real sample.

Import from here (``from tests.common import TINY, tiny_args``); fixtures built on these
live in ``tests/conftest.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

#: The checkout's root.
ROOT = Path(__file__).resolve().parents[1]
#: Real Quick, Draw! files in the four public formats (../shared/quickdraw/README.md), read in
#: place and never copied into the project; tests that need them skip when it is absent.
QUICKDRAW = ROOT.parent / "shared" / "quickdraw"
#: Marks a test (or, as ``pytestmark``, a module) that reads the real sample.
needs_quickdraw = pytest.mark.skipif(not QUICKDRAW.is_dir(), reason=f"shared Quick, Draw! sample not found at {QUICKDRAW}")

#: Overrides that make a synthetic run tiny: 4 classes, 8 training sketches, batches of 4,
#: 8 queries against 12 gallery sketches. A CPU run of any experiment takes seconds.
TINY = {
    "data.train_per_class": 2,
    "data.val_per_class": 1,
    "data.query_per_class": 2,
    "data.gallery_per_class": 3,
    "data.num_classes": 4,
    "train.batch_size": 4,
}


def set_args(overrides: dict) -> list[str]:
    """``--set KEY=VALUE`` command-line arguments for ``overrides``."""
    return [a for key, value in overrides.items() for a in ("--set", f"{key}={value}")]


def tiny_args(out: Path, *extra: str, overrides: dict = TINY) -> list[str]:
    """Training command-line options for a tiny CPU run writing under ``out``."""
    return ["--out", str(out), "--no-progress", "--device", "cpu", "--workers", "0", *set_args(overrides), *extra]
