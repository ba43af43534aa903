"""Retrieval metrics against hand-computed answers and a brute-force reference."""

import math

import numpy as np
import pytest
import torch

from utils.retrieval import retrieval_metrics


def brute_force(q, ql, g, gl, topk):
    """Plain-Python AP and P@K over a ranking by cosine similarity, ties by gallery index."""
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    gn = g / np.linalg.norm(g, axis=1, keepdims=True)
    aps, pk = [], {k: [] for k in topk}
    for i in range(len(q)):
        s = gn @ qn[i]
        order = sorted(range(len(g)), key=lambda j: (-s[j], j))
        rel = [gl[j] == ql[i] for j in order]
        hits, precs = 0, []
        for r, is_rel in enumerate(rel, 1):
            if is_rel:
                hits += 1
                precs.append(hits / r)
        if precs:
            aps.append(sum(precs) / len(precs))
        for k in topk:
            pk[k].append(sum(rel[: min(k, len(g))]) / min(k, len(g)))
    return float(np.mean(aps)), {k: float(np.mean(v)) for k, v in pk.items()}


def test_hand_computed_case_with_ties():
    # One query at angle 0. Gallery: g0 and g1 identical (a tie) at angle 0, g2 at 90 deg,
    # g3 at 180 deg. Labels: g0 wrong, g1 right, g2 right, g3 wrong.
    q = torch.tensor([[1.0, 0.0]])
    g = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    out = retrieval_metrics(q, torch.tensor([1]), g, torch.tensor([0, 1, 1, 0]), topk=(1, 2, 4))
    # Ranking (tie kept in gallery order): g0 (miss), g1 (hit, P=1/2), g2 (hit, P=2/3), g3.
    assert out["mAP"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert out["P@1"] == 0.0
    assert out["P@2"] == pytest.approx(0.5)
    assert out["P@4"] == pytest.approx(0.5)


def test_euclidean_ranking_differs_from_cosine_where_it_should():
    # Same direction, different length: cosine calls both equal, euclidean prefers the near one.
    q = torch.tensor([[1.0, 0.0]])
    g = torch.tensor([[10.0, 0.0], [1.0, 0.1]])
    lab = torch.tensor([0, 1])
    cos = retrieval_metrics(q, torch.tensor([1]), g, lab, metric="cosine", topk=(1,))
    euc = retrieval_metrics(q, torch.tensor([1]), g, lab, metric="euclidean", topk=(1,))
    assert cos["P@1"] == 0.0  # g0 is exactly parallel, so it ranks first by cosine
    assert euc["P@1"] == 1.0


@pytest.mark.parametrize("seed", [0, 1])
def test_matches_brute_force_on_random_data(seed):
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(23, 8))
    g = rng.normal(size=(61, 8))
    g[5] = g[4]  # an exact tie in the gallery
    ql, gl = rng.integers(0, 4, 23), rng.integers(0, 4, 61)
    topk = (1, 5, 10, 100)
    ref_map, ref_pk = brute_force(q, ql, g, gl, topk)
    out = retrieval_metrics(torch.tensor(q), torch.tensor(ql), torch.tensor(g), torch.tensor(gl), topk=topk)
    assert out["mAP"] == pytest.approx(ref_map, abs=1e-6)
    for k in topk:
        assert out[f"P@{k}"] == pytest.approx(ref_pk[k], abs=1e-6)


def test_chunked_equals_unchunked():
    rng = np.random.default_rng(3)
    q, g = torch.tensor(rng.normal(size=(40, 6))), torch.tensor(rng.normal(size=(90, 6)))
    ql, gl = torch.tensor(rng.integers(0, 5, 40)), torch.tensor(rng.integers(0, 5, 90))
    full = retrieval_metrics(q, ql, g, gl, chunk=1000)
    for chunk in (1, 7, 40):
        part = retrieval_metrics(q, ql, g, gl, chunk=chunk)
        assert torch.equal(part["ap"], full["ap"])
        assert part["P@10"] == full["P@10"]


def test_query_without_relevant_items_is_left_out():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    g = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    out = retrieval_metrics(q, torch.tensor([0, 7]), g, torch.tensor([0, 1]), topk=(1,))
    assert out["num_valid_queries"] == 1
    assert out["mAP"] == 1.0
    assert math.isnan(out["ap"][1])


def test_shape_errors():
    with pytest.raises(ValueError, match="feature shapes"):
        retrieval_metrics(torch.zeros(2, 3), torch.zeros(2), torch.zeros(4, 5), torch.zeros(4))
