"""Puts the leaf packages together: config -> dataset, model, algorithm, networks.

This is the only place that knows how a config section maps onto ``data``, ``models`` and
``algorithms``; it also makes the checks that span them (does the head match the task? does
the model read the data's modality? does the algorithm report the metric that picks the
best checkpoint?) so that a bad config fails before any training.
"""

from __future__ import annotations


import torch

import algorithms
import models
from config import ConfigError, ExperimentConfig
from data.datasets import PairedDataset, RasterDataset, SketchPair, StrokeDataset
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


def build_dataset(cfg: ExperimentConfig, split: str, raster_cache: bool | None = False) -> torch.utils.data.Dataset:
    """A torch dataset yielding ``(input, class label)`` in the config's modality:
    rasters (1, S, S) in [0, 1], stroke tensors (max_points, 4), or both forms of each
    sketch (``data.SketchPair``, modality "paired"). ``raster_cache``: raster batches from
    the store's rasters drawn once (the trainer passes ``data.raster_cache``; None: only a
    small cache, see the config)."""
    return dataset_of(cfg, build_source(cfg, split), raster_cache)


def dataset_of(cfg: ExperimentConfig, source, raster_cache: bool | None = False) -> torch.utils.data.Dataset:
    """:func:`build_dataset` for any sketch source (e.g. a list of :class:`data.sketch.Sketch`
    read from your own files): the config's modality, size and centring."""
    d = cfg.data
    if d.modality == "raster":
        return RasterDataset(source, image_size=d.image_size, line_width=d.line_width, center=d.center,
                             cache=raster_cache)
    if d.modality == models.PAIRED:
        return PairedDataset(source, image_size=d.image_size, line_width=d.line_width, max_len=d.max_points,
                             center=d.center, cache=raster_cache)
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
        algorithm = algorithms.build_algorithm(cfg.algorithm.name, cfg.data.modality, **cfg.algorithm.params)
    except ValueError as err:
        raise ConfigError(f"algorithm: {err}") from None
    check_algorithm_settings(cfg, algorithm)
    return algorithm


def validation_metrics(algorithm) -> tuple[str, ...]:
    """The validation metrics an algorithm's runs record: ``val_loss`` and ``val_<name>``."""
    return ("val_loss",) + tuple(f"val_{m}" for m in algorithm.metric_names)


def check_algorithm_settings(cfg: ExperimentConfig, algorithm) -> None:
    """Train settings that depend on the algorithm: the metric that picks best.pt must be
    one it reports; the per-sample reference views exist for the pretext tasks only."""
    known = validation_metrics(algorithm)
    if cfg.train.best_metric not in known:
        raise ConfigError(
            f"train.best_metric '{cfg.train.best_metric}' is not reported by the '{cfg.algorithm.name}' "
            f"algorithm (it reports {', '.join(known)})"
        )
    if cfg.train.views == "per_sample" and cfg.algorithm.name not in ("rotation", "deformation", "supervised"):
        raise ConfigError(f"train.views 'per_sample' (the reference views) exists for the pretext tasks only, "
                          f"not for '{cfg.algorithm.name}'")


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
        model = models.build_model(name, num_outputs, **cfg.model.params)
    except ValueError as err:
        raise ConfigError(f"model: {err}") from None
    if modality == models.PAIRED and cfg.data.image_size < model.min_side:  # its raster branch's own limit
        raster = model.branch_names["raster"]
        raise ConfigError(f"model '{name}': its raster branch '{raster}' needs rasters of at least "
                          f"{model.min_side} px; data.image_size is {cfg.data.image_size}")
    return model


def sample_input(cfg: ExperimentConfig, device: torch.device | str = "cpu", batch: int = 2):
    """A zero batch of the config's input shape (what the loader yields), for sizing heads:
    rasters (batch, 1, S, S), strokes (batch, max_points, 4), or a ``SketchPair`` of both."""
    d = cfg.data
    if d.modality == models.PAIRED:
        return SketchPair(torch.zeros((batch, 1, d.image_size, d.image_size), device=device),
                          torch.zeros((batch, d.max_points, 4), device=device))
    shape = (batch, 1, d.image_size, d.image_size) if d.modality == "raster" else (batch, d.max_points, 4)
    return torch.zeros(shape, device=device)


def build_networks(cfg: ExperimentConfig, algorithm, model: torch.nn.Module):
    """The container the trainer optimises: the encoder (``model``, on its device) plus the
    algorithm's own heads and target (:class:`algorithms.Networks`).

    An algorithm that does not read logits leaves the encoder's classifier untouched, so its
    parameters are frozen (no gradient, not optimised, not synchronised by DDP). The layer
    its loss reads is ``algorithm.params.feature`` when given, else the layer evaluation
    reads (``eval.feature``, else the model's default).

    A dual model (modality "paired") gets both branches' classifiers frozen when the
    algorithm reads features, and the algorithm the pair of layers it projects: each
    branch's ``algorithm.params.<branch>_feature``, else that branch model's default."""
    device = next(model.parameters()).device
    if cfg.data.modality == models.PAIRED:
        return _build_paired_networks(cfg, algorithm, model, device)
    layer = model.default_feature
    if not algorithm.uses_logits:
        classifier = getattr(model, "classifier", None)
        if classifier is not None:
            classifier.requires_grad_(False)
        layer = feature_layer(cfg, model, getattr(algorithm, "requested_feature", None))
    try:
        return algorithm.build_networks(model, layer, sample_input(cfg, device))
    except ValueError as err:
        raise ConfigError(f"algorithm: {err}") from None


def _build_paired_networks(cfg: ExperimentConfig, algorithm, model: torch.nn.Module, device: torch.device):
    if not algorithm.uses_logits:
        for branch in models.BRANCHES:
            classifier = getattr(model.branch(branch), "classifier", None)
            if classifier is not None:
                classifier.requires_grad_(False)
    requested = getattr(algorithm, "requested_features", (None, None))
    layers = []
    for branch, layer in zip(models.BRANCHES, requested):
        net = model.branch(branch)
        layer = layer or net.default_feature
        if layer not in net.feature_names:
            raise ConfigError(f"algorithm: {branch}_feature '{layer}' is not a layer of the {branch} model "
                              f"'{model.branch_names[branch]}'; known: {', '.join(net.feature_names)}")
        layers.append(f"{branch}.{layer}")
    try:
        return algorithm.build_networks(model, tuple(layers), sample_input(cfg, device))
    except ValueError as err:
        raise ConfigError(f"algorithm: {err}") from None


def feature_layer(cfg: ExperimentConfig, model: torch.nn.Module, layer: str | None = None) -> str:
    """The layer to read features from: the argument, else the config's, else the model's."""
    layer = layer or cfg.eval.feature or model.default_feature
    if layer not in model.feature_names:
        raise ConfigError(
            f"layer '{layer}' is not a feature of model '{cfg.model.name}'; "
            f"known: {', '.join(model.feature_names)}"
        )
    return layer
