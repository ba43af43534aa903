"""Helpers for the tests of the benchmark scripts under bench/ (scripts, not a package)."""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

import pytest
import cv2
import torch

from tests.common import ROOT


def load_bench(name: str) -> ModuleType:
    """Import ``bench/<name>.py`` as the module ``name`` (once; later calls reuse it)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def restore_threads():
    """The benchmarks pin torch (and OpenCV) to one thread; give the rest of the suite its
    threads back."""
    threads, cv_threads = torch.get_num_threads(), cv2.getNumThreads()
    yield
    torch.set_num_threads(threads)
    cv2.setNumThreads(cv_threads)
