"""Experiment configs: one module per experiment, selected by ``--exp NAME``.

``load_config("cnn_rotation", overrides={"train.epochs": 2})`` imports
``config/cnn_rotation.py``, applies dotted-key overrides to its ``CONFIG`` dict and returns a
checked :class:`~config.schema.ExperimentConfig`.
"""

from __future__ import annotations

import copy
import importlib
import pkgutil
from pathlib import Path
from typing import Any, Mapping

from config.schema import ConfigError, ExperimentConfig, from_dict

__all__ = ["ConfigError", "ExperimentConfig", "available_experiments", "load_config", "from_dict"]

_NOT_EXPERIMENTS = {"schema"}


def available_experiments() -> list[str]:
    """Names of the experiment modules in this folder."""
    here = Path(__file__).parent
    return sorted(
        m.name
        for m in pkgutil.iter_modules([str(here)])
        if not m.name.startswith("_") and m.name not in _NOT_EXPERIMENTS
    )


def load_raw(name: str) -> dict:
    """The experiment's ``CONFIG`` dict (a deep copy), with ``name`` filled in."""
    known = available_experiments()
    if name not in known:
        raise ConfigError(f"unknown experiment '{name}'; known: {', '.join(known)}")
    module = importlib.import_module(f"config.{name}")
    raw = getattr(module, "CONFIG", None)
    if not isinstance(raw, dict):
        raise ConfigError(f"config/{name}.py must define a dict named CONFIG")
    raw = copy.deepcopy(raw)
    raw.setdefault("name", name)
    return raw


def apply_overrides(raw: dict, overrides: Mapping[str, Any]) -> dict:
    """Set dotted keys (``"train.epochs"``) in a nested dict, creating sections as needed."""
    for dotted, value in overrides.items():
        node = raw
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{dotted}': '{key}' is not a section")
        node[leaf] = value
    return raw


def load_config(name: str, overrides: Mapping[str, Any] | None = None) -> ExperimentConfig:
    raw = apply_overrides(load_raw(name), overrides or {})
    return from_dict(raw, where=f"config/{name}.py")
