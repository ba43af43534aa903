"""Recognition by a linear probe: logistic regression on frozen features, one fixed recipe.

Which sketches (PROTOCOL section 5: "trained on frozen features of labelled sketches and
tested on held-out ones"): the classifier trains on gallery sketches and is tested on the
query sketches, so it reuses the retrieval features (no extra extraction) and never sees a
pretext-training sketch. The training part is capped at :data:`DEFAULT_PER_CLASS` gallery
sketches per class (the first ones in gallery order; 0 = all) to keep a full-batch fit
cheap at the full protocol size (345 classes x 100 = 34,500 x 4096 features).

Recipe (:func:`linear_probe`; :func:`describe_recipe` states it with the values used):

1. Hold out the last :data:`DEFAULT_HOLDOUT` fraction of each class's training examples, in
   the order given (at least one when a class has two or more), for choosing weight decay.
2. For each weight decay in the grid (:data:`DEFAULT_WD_GRID`): standardise with the mean
   and standard deviation of the rest (a constant dimension gets standard deviation 1), fit,
   and measure top-1 accuracy on the held-out part. The best wins; a tie goes to the larger
   weight decay (the simpler model).
3. Standardise with the statistics of the whole training part, refit with the chosen weight
   decay, and report top-1 / top-5 accuracy on the test examples.

Fit: logits = x W + b, loss = mean cross-entropy + (wd / 2) |W|^2 (bias not decayed), from
W = 0, b = 0, full-batch L-BFGS (strong Wolfe line search, history 20,
:data:`DEFAULT_MAX_ITER` iterations) in float32. The problem is convex and the start fixed,
so the result is deterministic for given features.

The encoder is frozen by construction (the probe only sees features); the evaluation still
checks afterwards that every encoder's weights and buffers equal its checkpoint's
(:meth:`evaluation.encoders.Encoder.unchanged`).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from evaluation.feature_matrix import FeatureSource, read_all, read_rows

#: Weight decays tried on the held-out part.
DEFAULT_WD_GRID: tuple[float, ...] = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
#: Fraction of each class's training examples held out to pick the weight decay.
DEFAULT_HOLDOUT = 0.2
#: L-BFGS iterations per fit.
DEFAULT_MAX_ITER = 100
#: Gallery sketches per class the probe trains on (0 = all).
DEFAULT_PER_CLASS = 100


def standardizer(x: torch.Tensor, eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (D,) and standard deviation (D,) of x (N, D); std < eps becomes 1."""
    mean = x.mean(0)
    std = x.std(0, unbiased=False) if len(x) > 1 else torch.ones_like(mean)
    return mean, torch.where(std < eps, torch.ones_like(std), std)


def holdout_split(labels: torch.Tensor, fraction: float = DEFAULT_HOLDOUT) -> tuple[torch.Tensor, torch.Tensor]:
    """(fit indices, held-out indices): per class the last ``fraction`` of its examples in
    the given order, at least one when the class has two or more examples."""
    labels = torch.as_tensor(labels).long()
    fit, held = [], []
    for c in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == c).flatten()
        n_held = int(len(idx) * fraction)
        if len(idx) >= 2:
            n_held = max(1, n_held)
        fit.append(idx[: len(idx) - n_held])
        held.append(idx[len(idx) - n_held :])
    return torch.sort(torch.cat(fit)).values, torch.sort(torch.cat(held)).values


def fit_logistic(
    x: torch.Tensor, y: torch.Tensor, num_classes: int, weight_decay: float, max_iter: int = DEFAULT_MAX_ITER
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights (D, C) and bias (C,) of an L2-regularised multinomial logistic regression."""
    x, y = x.float(), y.long()
    w = torch.zeros(x.shape[1], num_classes, requires_grad=True)
    b = torch.zeros(num_classes, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, history_size=20,
                            line_search_fn="strong_wolfe", tolerance_grad=1e-7, tolerance_change=1e-10)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(x @ w + b, y) + 0.5 * weight_decay * (w * w).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return w.detach(), b.detach()


def topk_accuracy(logits: torch.Tensor, y: torch.Tensor, ks: Sequence[int] = (1, 5)) -> dict[int, float]:
    """Fraction of rows whose label is among the k highest logits (k clamped to the classes)."""
    out = {}
    for k in ks:
        top = logits.topk(min(k, logits.shape[1]), dim=1).indices
        out[k] = float((top == y.unsqueeze(1)).any(1).double().mean()) if len(y) else float("nan")
    return out


def linear_probe(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    wd_grid: Sequence[float] = DEFAULT_WD_GRID,
    holdout: float = DEFAULT_HOLDOUT,
    max_iter: int = DEFAULT_MAX_ITER,
) -> dict:
    """Run the recipe of the module docstring.

    Args:
        train_x, train_y: (N, D) features and (N,) labels to train on.
        test_x, test_y: (M, D) and (M,) to report on (labels never seen in training count
            as errors).
        wd_grid: weight decays to choose from; holdout: fraction held out per class.
        max_iter: L-BFGS iterations per fit.

    Returns:
        ``{"top1", "top5", "weight_decay", "val_top1": {wd: acc}, "num_train",
        "num_test", "num_classes"}``.
    """
    if train_x.ndim != 2 or test_x.ndim != 2 or train_x.shape[1] != test_x.shape[1]:
        raise ValueError(f"feature shapes do not match: train {tuple(train_x.shape)}, test {tuple(test_x.shape)}")
    if not wd_grid:
        raise ValueError("wd_grid is empty")
    train_x, test_x = train_x.float(), test_x.float()
    classes = torch.unique(torch.cat([torch.as_tensor(train_y), torch.as_tensor(test_y)]).long())
    ytr = torch.searchsorted(classes, torch.as_tensor(train_y).long())
    yte = torch.searchsorted(classes, torch.as_tensor(test_y).long())
    n_cls = len(classes)

    fit_idx, val_idx = holdout_split(ytr, holdout)
    val_top1: dict[float, float] = {}
    if len(val_idx) and len(wd_grid) > 1:
        mean, std = standardizer(train_x[fit_idx])
        xf, xv = (train_x[fit_idx] - mean) / std, (train_x[val_idx] - mean) / std
        for wd in wd_grid:
            w, b = fit_logistic(xf, ytr[fit_idx], n_cls, wd, max_iter)
            val_top1[float(wd)] = topk_accuracy(xv @ w + b, ytr[val_idx], (1,))[1]
        best = max(val_top1.values())
        chosen = max(wd for wd, acc in val_top1.items() if acc == best)
    else:
        chosen = float(max(wd_grid))
    mean, std = standardizer(train_x)
    w, b = fit_logistic((train_x - mean) / std, ytr, n_cls, chosen, max_iter)
    acc = topk_accuracy(((test_x - mean) / std) @ w + b, yte, (1, 5))
    return {
        "top1": acc[1],
        "top5": acc[5],
        "weight_decay": chosen,
        "val_top1": val_top1,
        "num_train": len(train_x),
        "num_test": len(test_x),
        "num_classes": n_cls,
    }


# ---------------------------------------------------------------------------- on retrieval features
def probe_train_rows(gallery_labels: np.ndarray, per_class: int) -> np.ndarray:
    """Gallery rows the probe trains on: the first ``per_class`` of each class (0 = all)."""
    labels = np.asarray(gallery_labels)
    if per_class <= 0:
        return np.arange(len(labels))
    keep = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        keep[np.flatnonzero(labels == c)[:per_class]] = True
    return np.flatnonzero(keep)


def describe_recipe(per_class: int = DEFAULT_PER_CLASS, wd_grid: Sequence[float] = DEFAULT_WD_GRID,
                    max_iter: int = DEFAULT_MAX_ITER, holdout: float = DEFAULT_HOLDOUT) -> str:
    """The recipe in one paragraph, with the values used (for the report)."""
    train = f"the first {per_class}" if per_class > 0 else "all"
    grid = "{" + ", ".join(f"{w:g}" for w in wd_grid) + "}"
    return (f"train: {train} gallery sketches of each class; test: every query sketch. Features standardised "
            f"with training mean/std; multinomial logistic regression (full-batch L-BFGS, {max_iter} iterations, "
            f"zero init); weight decay from {grid} chosen by top-1 on the last {holdout:.0%} of each class's "
            f"training sketches, then refit on all of them.")


def run_probe(
    query: FeatureSource,
    query_labels: np.ndarray,
    gallery: FeatureSource,
    gallery_labels: np.ndarray,
    per_class: int = DEFAULT_PER_CLASS,
    wd_grid: Sequence[float] = DEFAULT_WD_GRID,
    max_iter: int = DEFAULT_MAX_ITER,
) -> dict:
    """Top-1 / top-5 of a linear probe trained on gallery features, tested on query features
    (:func:`linear_probe` on the rows of :func:`probe_train_rows`)."""
    rows = probe_train_rows(gallery_labels, per_class)
    train_x = read_rows(gallery, rows)
    train_y = torch.as_tensor(np.asarray(gallery_labels)[rows]).long()
    test_x = read_all(query)
    test_y = torch.as_tensor(np.asarray(query_labels)).long()
    out = linear_probe(train_x, train_y, test_x, test_y, wd_grid=wd_grid, holdout=DEFAULT_HOLDOUT, max_iter=max_iter)
    out["val_top1"] = {f"{k:g}": v for k, v in out["val_top1"].items()}
    return out
