"""Fixtures shared by the whole suite (constants and helpers: tests/common.py)."""

from __future__ import annotations

import json

import pytest

from tests.common import QUICKDRAW


@pytest.fixture(scope="session")
def quickdraw_store(tmp_path_factory):
    """``quickdraw_store(per_class, classes=None, formats="simplified", **prepare_options)``:
    a store prepared from the real sample (skips when it is absent), once per distinct set of
    arguments in the session; tests must not write into it."""
    from data.prepare import prepare  # noqa: PLC0415 (the data package is what is tested)

    made: dict = {}

    def make(per_class: dict, classes: list[str] | None = None, formats: str = "simplified", **options):
        if not QUICKDRAW.is_dir():
            pytest.skip(f"shared Quick, Draw! sample not found at {QUICKDRAW}")
        key = json.dumps([per_class, classes, formats, options], sort_keys=True, default=str)
        if key not in made:
            out = tmp_path_factory.mktemp("store") / "store"
            prepare([QUICKDRAW / formats], out, per_class=per_class, classes=classes, progress=False,
                    log=lambda _: None, **options)
            made[key] = out
        return made[key]

    return make


@pytest.fixture(autouse=True)
def keep_torch_threads():
    """Every test ends with the process's torch threads as it found them: a config's
    ``train.threads`` (the quick start fixes 2) sets them for the whole process, and a later
    test comparing two runs bit for bit must not inherit that."""
    import torch  # noqa: PLC0415

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
