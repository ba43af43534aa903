"""Puts the leaf packages together: config -> dataset, model, pretext algorithm.

This is the only place that knows how a config section maps onto ``data``, ``models`` and
``algorithms``; it also makes the checks that span them (does the head match the task? does
the model read the data's modality?) so that a bad config fails before any training.
"""

from __future__ import annotations


import torch

import algorithms
import models
from config import ConfigError, ExperimentConfig
from data.datasets import RasterDataset, StrokeDataset
from data.store import StoreError, StoreSketches, read_meta
from data.synthetic import SyntheticSketches

SPLITS = ("train", "val", "query", "gallery")


def build_source(cfg: ExperimentConfig, split: str):
    """The sketches of one split (``train``/``val`` for the pretext task, ``query``/``gallery``
    for retrieval), as an indexable source of :class:`data.sketch.Sketch`."""
    if split not in SPLITS:
        raise ValueError(f"unknown split '{split}' (one of {', '.join(SPLITS)})")
    d = cfg.data
    if d.source == "synthetic":
        return SyntheticSketches(
            split, per_class=getattr(d, f"{split}_per_class"), num_classes=d.num_classes, seed=d.seed
        )
    try:
        source = StoreSketches(d.path, split)
    except StoreError as err:
        raise ConfigError(str(err)) from None
    if len(source) == 0:
        raise ConfigError(
            f"split '{split}' of store {d.path} is empty (prepare the store with more sketches per class, "
            "see python -m data.prepare --per-class)"
        )
    return source


def build_dataset(cfg: ExperimentConfig, split: str) -> torch.utils.data.Dataset:
    """A torch dataset yielding ``(input, class label)`` in the config's modality:
    rasters (1, S, S) in [0, 1] or stroke tensors (max_points, 4)."""
    return dataset_of(cfg, build_source(cfg, split))


def dataset_of(cfg: ExperimentConfig, source) -> torch.utils.data.Dataset:
    """:func:`build_dataset` for any sketch source (e.g. a list of :class:`data.sketch.Sketch`
    read from your own files): the config's modality, size and centring."""
    d = cfg.data
    if d.modality == "raster":
        return RasterDataset(source, image_size=d.image_size, line_width=d.line_width, center=d.center)
    return StrokeDataset(source, max_len=d.max_points, center=d.center)


def num_data_classes(cfg: ExperimentConfig) -> int:
    """Classes of the data: ``data.num_classes`` for synthetic data, the store's own count
    (from its ``meta.json``) for a prepared store."""
    if cfg.data.source == "store":
        try:
            return int(read_meta(cfg.data.path)["num_classes"])
        except StoreError as err:
            raise ConfigError(str(err)) from None
    return cfg.data.num_classes


def build_algorithm(cfg: ExperimentConfig):
    try:
        return algorithms.build_algorithm(cfg.algorithm.name, cfg.data.modality, **cfg.algorithm.params)
    except ValueError as err:
        raise ConfigError(f"algorithm: {err}") from None


def head_size(cfg: ExperimentConfig, algorithm=None) -> int:
    """Outputs the model needs for the config's task; refuses a mismatched explicit head."""
    algorithm = algorithm or build_algorithm(cfg)
    need = algorithm.num_outputs(num_data_classes(cfg))
    have = cfg.model.num_classes
    if have is not None and have != need:
        raise ConfigError(
            f"model.num_classes is {have} but the '{cfg.algorithm.name}' task has {need} outputs "
            f"(set model.num_classes to {need}, or leave it unset to size it from the task)"
        )
    return need


def build_model(cfg: ExperimentConfig, num_outputs: int) -> torch.nn.Module:
    name = cfg.model.name
    if name not in models.MODELS:
        raise ConfigError(f"model.name '{name}' is unknown; known: {', '.join(sorted(models.MODELS))}")
    modality = models.MODELS[name].modality
    if modality != cfg.data.modality:
        raise ConfigError(
            f"model '{name}' reads {modality} input but data.modality is '{cfg.data.modality}'"
        )
    min_side = models.MODELS[name].min_side
    if modality == "raster" and cfg.data.image_size < min_side:
        raise ConfigError(f"model '{name}' needs rasters of at least {min_side} px; data.image_size is "
                          f"{cfg.data.image_size}")
    try:
        return models.build_model(name, num_outputs, **cfg.model.params)
    except ValueError as err:
        raise ConfigError(f"model: {err}") from None


def feature_layer(cfg: ExperimentConfig, model: torch.nn.Module, layer: str | None = None) -> str:
    """The layer to read features from: the argument, else the config's, else the model's."""
    layer = layer or cfg.eval.feature or model.default_feature
    if layer not in model.feature_names:
        raise ConfigError(
            f"layer '{layer}' is not a feature of model '{cfg.model.name}'; "
            f"known: {', '.join(model.feature_names)}"
        )
    return layer
