"""kNN classification: the vote against a hand-computed case and a brute-force reference, and
the whole metric from the retrieval pass's neighbours against a plain full sort."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from evaluation.metrics.knn import (
    DEFAULT_K,
    DEFAULT_TEMPERATURE,
    knn_classify,
    knn_vote,
)
from evaluation.metrics.retrieval import retrieval_metrics


def brute_force_knn(q, ql, g, gl, k, t):
    """Plain Python: cosine similarities, the k nearest (ties: lower index), votes
    sum exp(s / T) per class, classes ranked by vote (ties: lower label)."""
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    gn = g / np.linalg.norm(g, axis=1, keepdims=True)
    top1 = top5 = 0
    for i in range(len(q)):
        s = (gn @ qn[i]).astype(np.float32)
        near = sorted(range(len(g)), key=lambda j: (-s[j], j))[:k]
        votes = {}
        for j in near:
            votes[int(gl[j])] = votes.get(int(gl[j]), 0.0) + math.exp(float(s[j]) / t)
        ranked = sorted(votes, key=lambda c: (-votes[c], c))
        top1 += ranked[0] == ql[i]
        top5 += ql[i] in ranked[:5]
    return top1 / len(q), top5 / len(q)


def test_hand_computed_vote():
    # Query 0: neighbours of classes 3, 1, 1 with similarities 0.9, 0.8, 0.8 at T = 0.1:
    # class 3 gets e^9, class 1 gets 2 e^8 = 5963 < e^9 = 8103: class 3 first.
    # At T = 1: e^0.9 = 2.46 < 2 e^0.8 = 4.45: class 1 first.
    labels = torch.tensor([[3, 1, 1]])
    sims = torch.tensor([[0.9, 0.8, 0.8]])
    assert knn_vote(labels, sims, 0.1)[0].tolist() == [[3, 1, -1]]
    classes, votes = knn_vote(labels, sims, 1.0)
    assert classes.tolist() == [[1, 3, -1]]
    # votes are taken relative to the nearest neighbour: e^((s - 0.9) / T)
    assert votes[0, :2].tolist() == pytest.approx([2 * math.exp(-0.1), 1.0])
    # equal votes rank the lower label first; top-5 is never padded with classes without votes
    assert knn_vote(torch.tensor([[7, 2]]), torch.tensor([[0.5, 0.5]]), 0.07)[0].tolist() == [[2, 7]]
    out = knn_classify(torch.tensor([[0, 1, 2], [2, 0, 1]]), torch.tensor([[0.9, 0.8, 0.8], [0.3, 0.2, 0.1]]),
                       np.array([3, 1, 1]), np.array([1, 5]), k=3, temperature=1.0)
    assert (out["top1"], out["top5"]) == (0.5, 0.5)  # query 1's class 5 is in no neighbour: wrong


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_brute_force_on_random_features(seed):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(9, 16))
    gl, ql = rng.integers(0, 9, 400), rng.integers(0, 9, 60)
    g = (0.6 * centres[gl] + rng.normal(size=(400, 16))).astype(np.float32)
    q = (0.6 * centres[ql] + rng.normal(size=(60, 16))).astype(np.float32)
    res = retrieval_metrics(torch.tensor(q), ql, torch.tensor(g), gl, chunk=7, block=50, neighbours=DEFAULT_K)
    nb = res["neighbours"]
    for k, t in ((DEFAULT_K, DEFAULT_TEMPERATURE), (5, 0.5), (1, 0.07)):
        out = knn_classify(nb["index"], nb["score"], gl, ql, k, t)
        ref = brute_force_knn(q, ql, g, gl, k, t)
        assert (out["top1"], out["top5"]) == pytest.approx(ref, abs=1e-12), (k, t)
        assert 0.2 < out["top1"] < 0.95  # neither trivial nor hopeless: the comparison means something


def test_near_perfect_on_separable_features():
    g = torch.Generator().manual_seed(0)
    centres = F.normalize(torch.randn(12, 32, generator=g), dim=1) * 10
    gl, ql = torch.arange(600) % 12, torch.arange(120) % 12
    gallery = centres[gl] + torch.randn(600, 32, generator=g)
    query = centres[ql] + torch.randn(120, 32, generator=g)
    nb = retrieval_metrics(query, ql, gallery, gl, neighbours=DEFAULT_K)["neighbours"]
    out = knn_classify(nb["index"], nb["score"], gl, ql)
    assert out["top1"] >= 0.99 and out["top5"] == 1.0 and out["k"] == DEFAULT_K
    # the same features with shuffled gallery labels: chance level
    perm = gl[torch.randperm(600, generator=g)]
    assert knn_classify(nb["index"], nb["score"], perm, ql)["top1"] < 0.3


def test_bad_settings_are_refused():
    idx, sc = torch.zeros(2, 3, dtype=torch.int64), torch.zeros(2, 3)
    with pytest.raises(ValueError, match="k >= 1"):
        knn_classify(idx, sc, np.zeros(10), np.zeros(2), k=0)
    with pytest.raises(ValueError, match="needs 5 neighbours"):
        knn_classify(idx, sc, np.zeros(10), np.zeros(2), k=5)
    with pytest.raises(ValueError, match="temperature"):
        knn_classify(idx, sc, np.zeros(10), np.zeros(2), k=3, temperature=0)
