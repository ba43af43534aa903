"""Retrieval metrics: every query ranks the whole gallery; mAP and precision@K.

Ranking rule: descending similarity (cosine similarity, or negative squared euclidean
distance); equal scores keep gallery order (a stable sort), so results are deterministic.
A gallery item is relevant when it has the query's label. Average precision is taken over
the full ranking; a query with no relevant gallery item has no defined AP and is left out of
the mean (the count is reported).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

# Bound on query x gallery scores held at once (sorting also keeps an int64 index per score).
_MAX_SCORES_PER_CHUNK = 1 << 24


def similarity(query: torch.Tensor, gallery: torch.Tensor, metric: str) -> torch.Tensor:
    """Scores (Q, G), larger is closer. query (Q, D), gallery (G, D)."""
    if metric == "cosine":
        return F.normalize(query, dim=1) @ F.normalize(gallery, dim=1).T
    if metric == "euclidean":
        sq = (query * query).sum(1, keepdim=True) - 2 * query @ gallery.T + (gallery * gallery).sum(1)
        return -sq
    raise ValueError(f"unknown metric '{metric}' (cosine or euclidean)")


def retrieval_metrics(
    query: torch.Tensor,
    query_labels: torch.Tensor,
    gallery: torch.Tensor,
    gallery_labels: torch.Tensor,
    metric: str = "cosine",
    topk: Sequence[int] = (1, 10, 100),
    chunk: int | None = None,
) -> dict:
    """mAP and precision@K of ``query`` (Q, D) against ``gallery`` (G, D).

    Returns ``{"mAP": float, "P@K": float for each K, "ap": Tensor (Q,) (NaN where
    undefined), "num_queries": int, "num_valid_queries": int}``. K larger than the gallery is
    clamped to its size. Work is done ``chunk`` queries at a time to bound memory.
    """
    if query.ndim != 2 or gallery.ndim != 2 or query.shape[1] != gallery.shape[1]:
        raise ValueError(f"feature shapes do not match: query {tuple(query.shape)}, gallery {tuple(gallery.shape)}")
    if len(query) != len(query_labels) or len(gallery) != len(gallery_labels):
        raise ValueError("features and labels differ in length")
    num_q, num_g = len(query), len(gallery)
    if num_g == 0:
        raise ValueError("the gallery is empty")
    query = query.float()
    gallery = gallery.float()
    query_labels = query_labels.to(query.device)
    gallery_labels = gallery_labels.to(query.device)
    ks = [min(int(k), num_g) for k in topk]
    chunk = chunk or max(1, _MAX_SCORES_PER_CHUNK // num_g)

    ap = torch.empty(num_q, dtype=torch.float64)
    hits_at_k = torch.zeros(len(ks), dtype=torch.float64)
    ranks = torch.arange(1, num_g + 1, dtype=torch.float64, device=query.device)
    for start in range(0, num_q, chunk):
        q = query[start : start + chunk]
        scores = similarity(q, gallery, metric)
        order = torch.sort(scores, dim=1, descending=True, stable=True).indices
        rel = (gallery_labels[order] == query_labels[start : start + chunk, None]).double()
        hits = rel.cumsum(1)
        num_rel = hits[:, -1]
        ap_chunk = (rel * hits / ranks).sum(1) / num_rel.clamp(min=1)
        ap_chunk[num_rel == 0] = float("nan")
        ap[start : start + len(q)] = ap_chunk.cpu()
        for i, k in enumerate(ks):
            hits_at_k[i] += (hits[:, k - 1] / k).sum().cpu()
    valid = ~torch.isnan(ap)
    out: dict = {
        "mAP": float(ap[valid].mean()) if valid.any() else float("nan"),
        "num_queries": num_q,
        "num_valid_queries": int(valid.sum()),
        "ap": ap,
    }
    for k_req, value in zip(topk, hits_at_k):
        out[f"P@{int(k_req)}"] = float(value / num_q)
    return out
