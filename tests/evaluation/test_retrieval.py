"""Retrieval metrics against hand-computed answers and a brute-force reference."""

import math

import numpy as np
import pytest
import torch

from evaluation.metrics.retrieval import retrieval_metrics


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


# ---------------------------------------------------------------------------- exact, chunked, streamed
from evaluation.feature_matrix import NpyReader, NpyWriter  # noqa: E402
from evaluation.metrics.retrieval import (  # noqa: E402
    plan_chunks,
    ranking_keys,
    reference_metrics,
    topk_indices,
)


def brute_force_full(q, ql, g, gl, metric):
    """Per-query AP from a plain-Python ranking by the library's float32 scores, ties by index."""
    scores = similarity_np(q, g, metric)
    aps = []
    for i in range(len(q)):
        order = sorted(range(len(g)), key=lambda j: (-scores[i, j], j))
        hits, precs = 0, []
        for r, j in enumerate(order, 1):
            if gl[j] == ql[i]:
                hits += 1
                precs.append(hits / r)
        aps.append(sum(precs) / len(precs) if precs else float("nan"))
    return np.array(aps)


def similarity_np(q, g, metric):
    from evaluation.metrics.retrieval import similarity

    return similarity(torch.tensor(q, dtype=torch.float32), torch.tensor(g, dtype=torch.float32), metric).numpy()


def tied_data(seed, nq=29, ng=83, dim=4, classes=5):
    """Features whose scores are exact in float32 whatever the order of summation, so that
    many of them tie exactly: entries +-1 (norm 2, cosines in {-1, -0.5, 0, 0.5, 1}) for
    cosine, small integers for euclidean; a few all-zero gallery rows and repeated rows.

    (Mathematically equal cosines of *different* vectors with irrational norms may differ in
    the last bit between two matrix products of different shapes, as in any implementation;
    exact ties, such as repeated or all-zero features, always tie.)"""
    rng = np.random.default_rng(seed)
    q = rng.choice([-1.0, 1.0], size=(nq, dim)).astype(np.float32)
    g = rng.choice([-1.0, 1.0], size=(ng, dim)).astype(np.float32)
    g[10:14] = g[3]  # repeated gallery vectors with different labels
    g[20:23] = 0.0  # all-zero features: cosine 0 with every query
    return q, rng.integers(0, classes, nq), g, rng.integers(0, classes, ng)


def tied_data_euclidean(seed, nq=29, ng=83, dim=4, classes=5):
    rng = np.random.default_rng(seed)
    q = rng.integers(-2, 3, size=(nq, dim)).astype(np.float32)
    g = rng.integers(-2, 3, size=(ng, dim)).astype(np.float32)
    g[10:14] = g[3]
    return q, rng.integers(0, classes, nq), g, rng.integers(0, classes, ng)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_exact_with_many_ties_against_plain_python(metric, seed):
    q, ql, g, gl = (tied_data if metric == "cosine" else tied_data_euclidean)(seed)
    ref_ap = brute_force_full(q, ql, g, gl, metric)
    out = retrieval_metrics(torch.tensor(q), torch.tensor(ql), torch.tensor(g), torch.tensor(gl), metric=metric,
                            topk=(1, 3, 10, 1000), chunk=4, block=9)
    np.testing.assert_allclose(out["ap"].numpy(), ref_ap, rtol=0, atol=1e-12)
    ref = reference_metrics(torch.tensor(q), torch.tensor(ql), torch.tensor(g), torch.tensor(gl), metric, (1, 3, 10, 1000))
    for k in (1, 3, 10, 1000):
        assert out[f"P@{k}"] == pytest.approx(ref[f"P@{k}"], abs=1e-12)
    # per-class AP is the mean AP of that class's queries
    for label, value in out["class_ap"].items():
        assert value == pytest.approx(np.nanmean(ref_ap[ql == label]), abs=1e-12)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_every_chunking_and_block_size_gives_identical_results(metric):
    q, ql, g, gl = (tied_data if metric == "cosine" else tied_data_euclidean)(5, nq=31, ng=97)
    args = (torch.tensor(q), torch.tensor(ql), torch.tensor(g), torch.tensor(gl), metric)
    whole = retrieval_metrics(*args, topk=(1, 5, 50), chunk=len(q), block=len(g))
    for chunk, block, mem in [(1, 1, 512), (3, 7, 512), (None, None, 0.001), (31, 2, 512)]:
        part = retrieval_metrics(*args, topk=(1, 5, 50), chunk=chunk, block=block, memory_mb=mem)
        assert torch.equal(part["ap"], whole["ap"])
        assert [part[f"P@{k}"] for k in (1, 5, 50)] == [whole[f"P@{k}"] for k in (1, 5, 50)]
        assert part["class_ap"] == whole["class_ap"]
        assert part["pr_curve"] == whole["pr_curve"]


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_chunking_never_changes_a_result_on_general_float_data(metric):
    # A BLAS rounds a product differently for different shapes; fixed score tiles make the
    # result bit-for-bit independent of chunk, block and memory budget. Sizes span several
    # tiles (256 queries x 2048 gallery items); at 512-d this BLAS does round products of
    # other shapes differently.
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(23, 512, generator=g)
    ql, gl = torch.arange(300) % 23, torch.randint(0, 23, (2500,), generator=g)
    q = 0.3 * centres[ql] + torch.randn(300, 512, generator=g)
    x = 0.3 * centres[gl] + torch.randn(2500, 512, generator=g)
    base = retrieval_metrics(q, ql, x, gl, metric, (1, 10, 100))
    ref = reference_metrics(q, ql, x, gl, metric, (1, 10, 100))
    assert 0.05 < base["mAP"] < 0.5 and base["mAP"] == pytest.approx(ref["mAP"], abs=1e-9)
    for chunk, block, mem in [(300, 2500, 512), (97, 999, 512), (None, None, 0.3), (256, 2048, 512)]:
        part = retrieval_metrics(q, ql, x, gl, metric, (1, 10, 100), chunk=chunk, block=block, memory_mb=mem)
        assert torch.equal(part["ap"], base["ap"])
        assert [part[f"P@{k}"] for k in (1, 10, 100)] == [base[f"P@{k}"] for k in (1, 10, 100)]
        assert part["pr_curve"] == base["pr_curve"]


def test_hand_computed_tie_between_relevant_items_and_pr_curve():
    # Scores for one query: g0 0.5 (rel), g1 1.0 (irrelevant), g2 0.5 (rel, tied with g0 -> after it),
    # g3 -1 (rel). Ranking: g1, g0, g2, g3 -> relevant at ranks 2, 3, 4.
    q = torch.tensor([[1.0, 0.0]])
    g = torch.tensor([[0.5, 0.8660254], [1.0, 0.0], [0.5, -0.8660254], [-1.0, 0.0]])
    out = retrieval_metrics(q, torch.tensor([1]), g, torch.tensor([1, 0, 1, 1]), topk=(1, 2, 3))
    assert out["mAP"] == pytest.approx((1 / 2 + 2 / 3 + 3 / 4) / 3)
    assert (out["P@1"], out["P@2"], out["P@3"]) == (0.0, 0.5, pytest.approx(2 / 3))
    # Interpolated precision: recall 1/3 -> max(1/2, 2/3, 3/4) = 3/4 and so on up to recall 1.
    pr = dict(zip(out["pr_curve"]["recall"], out["pr_curve"]["precision"]))
    assert pr[0.0] == pytest.approx(0.75) and pr[1.0] == pytest.approx(0.75)


def test_streaming_from_a_float16_file_equals_in_memory(tmp_path):
    rng = np.random.default_rng(7)
    g = rng.normal(size=(300, 16)).astype(np.float16)
    q = rng.normal(size=(40, 16)).astype(np.float16)
    gl, ql = rng.integers(0, 6, 300), rng.integers(0, 6, 40)
    with NpyWriter(tmp_path / "g.npy", 300, "float16") as w:
        for a in range(0, 300, 64):
            w.write(g[a : a + 64])
    with NpyWriter(tmp_path / "q.npy", 40, "float16") as w:
        w.write(q)
    disk = retrieval_metrics(NpyReader(tmp_path / "q.npy"), ql, NpyReader(tmp_path / "g.npy"), gl, chunk=7, block=50)
    mem = retrieval_metrics(torch.tensor(q).float(), ql, torch.tensor(g).float(), gl, chunk=7, block=50)
    assert torch.equal(disk["ap"], mem["ap"])
    ref = reference_metrics(torch.tensor(q).float(), torch.tensor(ql), torch.tensor(g).float(), torch.tensor(gl))
    assert disk["mAP"] == pytest.approx(ref["mAP"], abs=1e-12)


def test_ranking_keys_order_is_score_descending_then_index():
    s = torch.tensor([[0.5, -0.0, 0.0, -3.0, float("inf"), -float("inf"), 0.5, 1e-30, -1e-30]])
    order = torch.argsort(ranking_keys(s, 0), dim=1).flatten().tolist()
    assert order == [4, 0, 6, 7, 1, 2, 8, 3, 5]  # -0.0 and 0.0 tie: index order
    rng = np.random.default_rng(0)
    x = torch.tensor(rng.normal(size=(3, 500)).astype(np.float32))
    x[:, 100:150] = x[:, :50]  # ties
    keys = ranking_keys(x, 10)
    expected = torch.sort(x, dim=1, descending=True, stable=True).indices
    assert torch.equal(torch.argsort(keys, dim=1), expected)


def test_nan_scores_are_refused():
    q = torch.tensor([[float("nan"), 1.0]])
    with pytest.raises(ValueError, match="NaN"):
        retrieval_metrics(q, torch.tensor([0]), torch.ones(3, 2), torch.tensor([0, 1, 0]))


def test_topk_indices_follow_the_ranking_whatever_the_block():
    q, ql, g, gl = tied_data(3)
    scores = torch.tensor(similarity_np(q, g, "cosine"))
    expected = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :12]
    for block in (1, 5, 1000):
        idx, sc = topk_indices(torch.tensor(q), torch.tensor(g), 12, "cosine", block=block)
        assert torch.equal(idx, expected)
        assert torch.equal(sc, scores.gather(1, expected))


def test_memory_plan_at_full_protocol_size_stays_in_budget():
    plan = plan_chunks(34_500, 345_000, 4096, max_relevant=1000, memory_mb=512)
    assert plan["bytes"] <= 512 * 2**20
    assert plan["chunk"] >= 5000 and plan["block"] >= 2048
    small = plan_chunks(10, 20, 8, 3, memory_mb=512)
    assert (small["chunk"], small["block"]) == (10, 20)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_neighbours_are_the_first_items_of_the_ranking_whatever_the_chunking(metric):
    q, ql, g, gl = (tied_data if metric == "cosine" else tied_data_euclidean)(4, nq=31, ng=97)
    scores = torch.tensor(similarity_np(q, g, metric))
    expected = torch.sort(scores, dim=1, descending=True, stable=True)
    args = (torch.tensor(q), torch.tensor(ql), torch.tensor(g), torch.tensor(gl), metric, (1, 5))
    plain = retrieval_metrics(*args)
    for chunk, block in [(None, None), (1, 1), (4, 9), (31, 97)]:
        out = retrieval_metrics(*args, chunk=chunk, block=block, neighbours=12)
        assert torch.equal(out["neighbours"]["index"], expected.indices[:, :12])  # ties: lower index first
        assert torch.equal(out["neighbours"]["score"], expected.values[:, :12])
        assert torch.equal(out["ap"], plain["ap"]) and out["P@5"] == plain["P@5"]  # nothing else changes
    assert "neighbours" not in plain
    assert retrieval_metrics(*args, neighbours=500)["neighbours"]["index"].shape == (31, 97)  # the whole gallery
