"""Recognition: a linear classifier on frozen features of the retrieval set.

Which sketches (PROTOCOL section 5: "trained on frozen features of labelled sketches and
tested on held-out ones"): the classifier trains on gallery sketches and is tested on the
query sketches, so it reuses the retrieval features (no extra extraction) and never sees a
pretext-training sketch. The training part is capped at ``per_class`` gallery sketches per
class (the first ones in gallery order; default 100, 0 = all) to keep a full-batch fit
cheap at the full protocol size (345 classes x 100 = 34,500 x 4096 features). The fit
itself is :func:`utils.probe.linear_probe`: standardise, weight decay chosen on a held-out
20% of the training part, refit on all of it, top-1 and top-5 on the queries.

The encoder is frozen by construction (the probe only sees features); the evaluation still
checks afterwards that every encoder's weights and buffers equal its checkpoint's
(:meth:`engine.features.Encoder.unchanged`), which catches e.g. features read in train mode,
where batch norm would have updated its running statistics.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from utils.feature_store import FeatureSource, read_all, read_rows
from utils.probe import DEFAULT_HOLDOUT, DEFAULT_MAX_ITER, DEFAULT_WD_GRID, linear_probe

DEFAULT_PER_CLASS = 100

RECIPE = (
    "train: the first {per_class} gallery sketches of each class; test: every query sketch. "
    "Features standardised with training mean/std; multinomial logistic regression "
    "(full-batch L-BFGS, {iters} iterations, zero init); weight decay from {grid} chosen by "
    "top-1 on the last 20% of each class's training sketches, then refit on all of them."
)


def probe_train_rows(gallery_labels: np.ndarray, per_class: int) -> np.ndarray:
    """Gallery rows the probe trains on: the first ``per_class`` of each class (0 = all)."""
    labels = np.asarray(gallery_labels)
    if per_class <= 0:
        return np.arange(len(labels))
    keep = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        keep[np.flatnonzero(labels == c)[:per_class]] = True
    return np.flatnonzero(keep)


def describe_recipe(per_class: int, wd_grid: Sequence[float], max_iter: int) -> str:
    return RECIPE.format(per_class=per_class if per_class > 0 else "all", iters=max_iter,
                         grid="{" + ", ".join(f"{w:g}" for w in wd_grid) + "}")


def run_probe(
    query: FeatureSource,
    query_labels: np.ndarray,
    gallery: FeatureSource,
    gallery_labels: np.ndarray,
    per_class: int = DEFAULT_PER_CLASS,
    wd_grid: Sequence[float] = DEFAULT_WD_GRID,
    max_iter: int = DEFAULT_MAX_ITER,
) -> dict:
    """Top-1 / top-5 of a linear probe trained on gallery features, tested on query features."""
    rows = probe_train_rows(gallery_labels, per_class)
    train_x = read_rows(gallery, rows)
    train_y = torch.as_tensor(np.asarray(gallery_labels)[rows]).long()
    test_x = read_all(query)
    test_y = torch.as_tensor(np.asarray(query_labels)).long()
    out = linear_probe(train_x, train_y, test_x, test_y, wd_grid=wd_grid, holdout=DEFAULT_HOLDOUT, max_iter=max_iter)
    out["val_top1"] = {f"{k:g}": v for k, v in out["val_top1"].items()}
    return out
