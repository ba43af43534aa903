"""Recognition by a weighted k-nearest-neighbour vote on frozen features.

The standard frozen-feature metric of self-supervised learning (InstDisc, Wu et al. 2018;
reported by solo-learn, VISSL and lightly). Every query sketch is classified by its
:data:`DEFAULT_K` nearest sketches of the labelled split, here the gallery (the same one the
linear probe trains on, and the one retrieval ranks): neighbour j with similarity s_j votes
for its class with weight exp(s_j / T), T = :data:`DEFAULT_TEMPERATURE`; the classes are
ranked by their summed votes. Top-1 / top-5: the query's class is the first / among the
first five.

The neighbours are the first k items of the query's retrieval ranking, taken in the same
pass over the gallery that computes mAP (:func:`evaluation.metrics.retrieval.retrieval_metrics`
with ``neighbours=k``), with the same similarity (cosine by default; with the euclidean
metric the similarity is minus the squared distance) and the same tie rule (lower gallery
index first). This module only votes.

Details that change no ranking but make the vote well defined:

- weights are computed as exp((s_j - s_1) / T), s_1 the nearest neighbour's similarity: the
  common factor exp(-s_1 / T) cancels in every comparison and nothing overflows or
  underflows to all-zero votes;
- only classes that have a neighbour are ranked (top-5 is not padded with classes no
  neighbour belongs to); equal votes rank the lower class label first;
- a query whose class has no gallery sketch counts as wrong.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

#: Neighbours that vote (InstDisc and solo-learn use 20 and 200; 20 is solo-learn's default).
DEFAULT_K = 20
#: Temperature of the vote weights exp(s / T) (InstDisc, solo-learn).
DEFAULT_TEMPERATURE = 0.07


def knn_vote(neighbour_labels: torch.Tensor, neighbour_scores: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Classes ranked by weighted vote.

    Args:
        neighbour_labels: int64 (Q, k), the labels of each query's neighbours, nearest first.
        neighbour_scores: (Q, k) their similarities.
        temperature: T > 0.

    Returns:
        ``(classes, votes)``: int64 (Q, k) class labels in vote order and float64 (Q, k)
        their summed weights; positions past the classes a query's neighbours hold have
        class -1 and vote 0.
    """
    if temperature <= 0:
        raise ValueError(f"kNN temperature must be > 0, got {temperature}")
    labels = neighbour_labels.long()
    q, k = labels.shape
    if k == 0:
        return labels.clone(), torch.zeros(q, 0, dtype=torch.float64)
    s = neighbour_scores.double()
    w = torch.exp((s - s[:, :1]) / temperature)
    # Sum the weights per class: sort each row by label, then add up runs of equal labels.
    lab_sorted, order = torch.sort(labels, dim=1, stable=True)
    w_sorted = w.gather(1, order)
    first = torch.ones_like(lab_sorted, dtype=torch.bool)
    first[:, 1:] = lab_sorted[:, 1:] != lab_sorted[:, :-1]
    run = first.cumsum(1) - 1  # run number of each position within its row
    votes = torch.zeros(q, k, dtype=torch.float64).scatter_add_(1, run, w_sorted)
    classes = torch.full((q, k), -1, dtype=torch.int64).scatter_(1, run, lab_sorted)
    # Rank: vote descending; equal votes keep the runs' order, which is ascending label.
    rank = torch.sort(votes, dim=1, descending=True, stable=True).indices
    classes, votes = classes.gather(1, rank), votes.gather(1, rank)
    return torch.where(votes > 0, classes, torch.full_like(classes, -1)), votes


def knn_classify(
    neighbour_index: torch.Tensor,
    neighbour_scores: torch.Tensor,
    gallery_labels: torch.Tensor | np.ndarray,
    query_labels: torch.Tensor | np.ndarray,
    k: int = DEFAULT_K,
    temperature: float = DEFAULT_TEMPERATURE,
    ks: Sequence[int] = (1, 5),
) -> dict:
    """Top-k accuracies of the weighted kNN vote.

    Args:
        neighbour_index: int64 (Q, N >= k) gallery indices of each query's nearest items,
            nearest first (the ``neighbours`` of the retrieval metrics).
        neighbour_scores: (Q, N) their similarities.
        gallery_labels: (G,) labels of the gallery; query_labels: (Q,).
        k: neighbours that vote (at most N); temperature: T of the weights.
        ks: accuracies reported, e.g. top-1 and top-5.

    Returns:
        ``{"top1", "top5" (one "topK" per ks), "k", "temperature", "num_queries"}``.
    """
    if k < 1:
        raise ValueError(f"kNN needs k >= 1, got {k}")
    if neighbour_index.shape[1] < k and neighbour_index.shape[1] < len(gallery_labels):
        raise ValueError(f"kNN with k={k} needs {k} neighbours per query, got {neighbour_index.shape[1]}")
    k = min(k, neighbour_index.shape[1])
    gl = torch.as_tensor(np.asarray(gallery_labels)).long()
    ql = torch.as_tensor(np.asarray(query_labels)).long()
    classes, _ = knn_vote(gl[neighbour_index[:, :k]], neighbour_scores[:, :k], temperature)
    out: dict = {}
    for top in ks:
        hit = (classes[:, :top] == ql.unsqueeze(1)).any(1)
        out[f"top{top}"] = float(hit.double().mean()) if len(ql) else float("nan")
    out.update({"k": int(k), "temperature": float(temperature), "num_queries": len(ql)})
    return out
