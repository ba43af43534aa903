"""Retrieval metrics: every query ranks the whole gallery; mAP, precision@K, per-class AP, PR,
and each query's nearest gallery items (for the kNN vote, :mod:`evaluation.metrics.knn`).

Ranking rule: descending similarity (cosine similarity, or negative squared euclidean
distance); equal scores keep gallery order, so results are deterministic. A gallery item is
relevant when it has the query's label. Average precision is taken over the full ranking; a
query with no relevant gallery item has no defined AP and is left out of the mean (the count
is reported).

How it stays exact without sorting the gallery. Give every (query, gallery item j) the
integer key ``key(j) = desc(score_j) * 2**31 + j``, where ``desc`` maps float32 scores to
int32 so that a higher score gets a smaller number (:func:`ranking_keys`). Keys are unique
and ascending key order *is* the ranking (score descending, then gallery index). For one
query with R relevant items, sort only their R keys: K_0 < K_1 < ... < K_{R-1}. For every
other gallery item, ``p(j) = #{relevant keys < key(j)}`` is one binary search. The k-th
relevant item then has rank ``k + 1 + #{other j : p(j) <= k}`` (the relevant and the other
items ranked before it, plus itself), so a histogram of ``p`` over the gallery and its
cumulative sum give all R ranks:

    AP    = mean over k of (k + 1) / rank_k
    P@K   = #{k : rank_k <= K} / K

These are the same numbers a full stable argsort of the gallery gives (tests check this
against a brute-force ranking, ties included), but the work per score is a key, a binary
search in R and a histogram increment, all done in blocks.

Tiles. Scores are float32 matrix products, and a BLAS rounds a product differently
depending on the shapes it is called with, so the same (query, gallery item) pair may score
differently in the last bit when computed in a product of another shape. Every score is
therefore computed in one fixed tile product (:class:`TiledScores`: queries and gallery in
class order, cut into fixed tiles), which makes every result independent of how the work is
chunked (tests check bit-for-bit equality across chunk, block and memory settings). Class
order also puts each query's relevant items into one or two gallery tiles, so their scores
(pass 1) cost about 1% of all products.

Memory. Queries are ranked ``chunk`` at a time: pass 1 finds their relevant keys, pass 2
streams the gallery once in blocks of ``block`` rows from any feature source
(:mod:`evaluation.feature_matrix`, e.g. a float16 file on disk) and updates each query's histogram
and, when asked, its running top-``neighbours`` keys (the smallest keys are the nearest items).
A chunk holds, per query, its prepared features, R sorted keys and an R + 1 histogram;
:func:`plan_chunks` sizes chunk and block from one budget (``memory_mb``). At the full
protocol size (34,500 queries x 345,000 gallery items, 4096-d, R = 1000) and 512 MiB, that is
a few chunks, each one pass over the gallery file.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from evaluation.feature_matrix import FeatureSource, as_source

#: Working memory of one evaluation (queries of a chunk, gallery block, ranking scratch), in MiB.
DEFAULT_MEMORY_MB = 512
#: Recall levels of the interpolated precision-recall curve: 0, 0.05, ..., 1.
PR_LEVELS = 21
#: Gallery indices must fit the low 31 bits of a ranking key.
MAX_GALLERY = 1 << 31
_PAD_KEY = torch.iinfo(torch.int64).max


def similarity(query: torch.Tensor, gallery: torch.Tensor, metric: str) -> torch.Tensor:
    """Scores (Q, G), larger is closer. query (Q, D), gallery (G, D)."""
    if metric == "cosine":
        return F.normalize(query, dim=1) @ F.normalize(gallery, dim=1).T
    if metric == "euclidean":
        sq = (query * query).sum(1, keepdim=True) - 2 * query @ gallery.T + (gallery * gallery).sum(1)
        return -sq
    raise ValueError(f"unknown metric '{metric}' (cosine or euclidean)")


def ranking_keys(scores: torch.Tensor, index: torch.Tensor | int) -> torch.Tensor:
    """Unique int64 keys whose ascending order is the ranking (score descending, index ascending).

    Args:
        scores: float32 (C, B) similarity scores, no NaN.
        index: gallery index of each column: an int (columns are ``index, index + 1, ...``)
            or an int64 tensor broadcastable to ``scores``.

    Returns:
        int64 (C, B): ``desc(score) * 2**31 + index``. ``desc`` is the float's bit pattern
        ``b`` read as an int32 and made monotone (``b ^ ((b >> 31) & 0x7FFFFFFF)`` orders
        like the float, the standard trick), then negated so that a higher score gets a
        smaller key; -0.0 is first turned into +0.0 (they compare equal as floats, so they
        tie and the index decides). Temporaries: 4 + 4 + 8 bytes per score.
    """
    if scores.dtype != torch.float32:
        raise ValueError(f"scores must be float32, got {scores.dtype}")
    bits = (scores + 0.0).view(torch.int32)  # + 0.0 maps -0.0 to +0.0
    mono = (bits >> 31).bitwise_and_(0x7FFFFFFF).bitwise_xor_(bits)
    del bits
    keys = mono.neg_().to(torch.int64)  # no overflow: only a NaN pattern maps to INT32_MIN
    if isinstance(index, int):
        index = torch.arange(index, index + scores.shape[-1], device=scores.device)
    return keys.mul_(1 << 31).add_(index)


def key_index(keys: torch.Tensor) -> torch.Tensor:
    """Gallery index stored in the low 31 bits of ranking keys."""
    return keys & (MAX_GALLERY - 1)


#: Queries and gallery items per tile of the score computation (see :class:`TiledScores`).
TILE_Q, TILE_G = 256, 2048


def plan_chunks(
    num_queries: int,
    num_gallery: int,
    dim: int,
    max_relevant: int = 1000,
    memory_mb: float = DEFAULT_MEMORY_MB,
    chunk: int | None = None,
    block: int | None = None,
    neighbours: int = 0,
) -> dict:
    """How many queries are ranked per pass over the gallery, and gallery rows per block.

    Working memory (bytes; D = dim, R = max_relevant, N = neighbours, tiles TQ x TG):

    - fixed: two cached gallery tiles (8 TG D), one query tile's relevant-score scratch
      (44 TQ R), summaries of 1024 queries (40 * 1024 R);
    - per query of a chunk: its prepared features (4 D), its relevant items' sorted keys
      (8 R), its rank histogram (8 (R + 1)) and the ranks read from it (8 R), its nearest
      items' keys and scores and their merge scratch (24 N);
    - per gallery row of a block: the prepared rows and their read buffer (6 D, for the
      block plus one tile it may straddle) and the ranking scratch of one query tile
      against the block (about 28 TQ: scores, keys, positions).

    What the budget leaves after the fixed part goes 60% to the chunk, 40% to the block, in
    whole tiles (at least one each). Explicit ``chunk``/``block`` win; any size gives the
    same results (the tiles are fixed).

    Returns:
        ``{"chunk": C, "block": B, "bytes": the estimate for C and B}``.
    """
    budget = max(1e-3, float(memory_mb)) * 2**20
    r = max(1, max_relevant)
    fixed = 8 * TILE_G * dim + 44 * TILE_Q * r + 40 * 1024 * r
    avail = max(0.0, budget - fixed)
    per_q = 4 * dim + 24 * r + 8 + 24 * max(0, neighbours)
    c = chunk or max(TILE_Q, int(0.6 * avail // per_q) // TILE_Q * TILE_Q)
    c = max(1, min(c, max(1, num_queries)))
    per_g = 6 * dim + 28 * TILE_Q
    b = block or max(TILE_G, int((0.4 * avail - TILE_G * 6 * dim) // per_g) // TILE_G * TILE_G)
    b = max(1, min(b, max(1, num_gallery)))
    est = fixed + (c + TILE_Q) * per_q + (b + TILE_G) * 6 * dim + 28 * TILE_Q * b
    return {"chunk": c, "block": b, "bytes": int(est)}


class TiledScores:
    """Similarity scores of fixed tiles: the same number for a (query, gallery item) pair
    however the evaluation is chunked.

    A float32 matrix product's rounding depends on the shapes it is called with (the BLAS
    picks its blocking and threading from them), so the score of one pair can differ in the
    last bit between a product over 300 queries and one over 1000. Here every score comes
    out of one product of a ``tq x D`` query tile and a ``tg x D`` gallery tile, fixed sets
    of items: queries and gallery items are put in class order (label, then index; stable)
    and cut into consecutive tiles, the last one zero-padded (``tq = min(TILE_Q, Q)``,
    ``tg = min(TILE_G, G)``: tiles depend on the data only). Rows are
    L2-normalised (cosine) or their squared norms taken (euclidean) within their tile.

    Class order also makes a query's relevant items sit in one or two gallery tiles, so all
    relevant scores come from about 1% of the products (:meth:`relevant_scores`).
    """

    def __init__(self, query: FeatureSource, query_cls: torch.Tensor, gallery: FeatureSource,
                 gallery_cls: torch.Tensor, metric: str, device: torch.device) -> None:
        self.q, self.g, self.metric, self.device = query, gallery, metric, device
        # Tile sizes depend only on the data sizes (small problems get small tiles).
        self.tq, self.tg = min(TILE_Q, max(1, len(query))), min(TILE_G, max(1, len(gallery)))
        # class order; a query of a class the gallery lacks (-1) goes first
        self.q_order = torch.argsort(query_cls, stable=True)
        self.g_order = torch.argsort(gallery_cls, stable=True)
        self.q_cls = query_cls[self.q_order]  # class of each query in class order
        self.g_cls = gallery_cls[self.g_order]
        self._g_cache: dict[int, tuple] = {}

    def _prepare(self, src: FeatureSource, order: torch.Tensor, t0: int, size: int) -> tuple:
        rows = order[t0 : t0 + size]
        x = src.take(rows)
        if len(x) < size:
            x = torch.cat([x, x.new_zeros(size - len(x), x.shape[1])])
        x = x.to(self.device)
        if self.metric == "cosine":
            x.div_(x.norm(dim=1, keepdim=True).clamp_min_(1e-12))  # = F.normalize
            return x, None
        return x, (x * x).sum(1)

    def query_tile(self, t0: int) -> tuple:
        """Prepared query tile starting at class-order position ``t0`` (a multiple of ``tq``)."""
        return self._prepare(self.q, self.q_order, t0, self.tq)

    def gallery_tile(self, u0: int, keep: int = 0) -> tuple:
        """Prepared gallery tile starting at class-order position ``u0``; the last ``keep``
        tiles asked for are cached (the relevant pass asks for neighbouring ones)."""
        if u0 in self._g_cache:
            return self._g_cache[u0]
        tile = self._prepare(self.g, self.g_order, u0, self.tg)
        if keep:
            while len(self._g_cache) >= keep:
                self._g_cache.pop(next(iter(self._g_cache)))
            self._g_cache[u0] = tile
        return tile

    def product(self, q_tile: tuple, g_tile: tuple) -> torch.Tensor:
        """Scores (tq, tg) of two prepared tiles."""
        (q, qq), (g, gg) = q_tile, g_tile
        s = q @ g.T
        if self.metric == "euclidean":
            s = -(qq.unsqueeze(1) - 2 * s + gg)
        return s


def retrieval_metrics(
    query: torch.Tensor | FeatureSource,
    query_labels: torch.Tensor | np.ndarray,
    gallery: torch.Tensor | FeatureSource,
    gallery_labels: torch.Tensor | np.ndarray,
    metric: str = "cosine",
    topk: Sequence[int] = (1, 10, 100),
    chunk: int | None = None,
    block: int | None = None,
    memory_mb: float = DEFAULT_MEMORY_MB,
    device: torch.device | str | None = None,
    progress: bool = False,
    neighbours: int = 0,
) -> dict:
    """mAP, precision@K, per-class AP and a precision-recall curve of ``query`` vs ``gallery``,
    and each query's ``neighbours`` nearest gallery items from the same pass over the gallery.

    Args:
        query, gallery: (Q, D) and (G, D) features: tensors, or feature sources read in
            blocks (:mod:`evaluation.feature_matrix`).
        query_labels, gallery_labels: (Q,) and (G,) integer class labels.
        metric: ``"cosine"`` or ``"euclidean"``.
        topk: K values for precision@K; a K larger than the gallery is clamped to its size.
        chunk: queries ranked per pass over the gallery; block: gallery rows per block
            (default: from ``memory_mb``, see :func:`plan_chunks`). They change memory and
            speed, never a result.
        memory_mb: working-memory budget in MiB.
        device: where scores are computed (default: the CPU).
        progress: show a progress bar over gallery blocks.
        neighbours: also return the first N items of every query's ranking (0: none;
            clamped to the gallery size), whatever their labels.

    Returns:
        ``{"mAP", "P@K" for each K, "ap": float64 (Q,) (NaN where undefined),
        "num_queries", "num_valid_queries", "class_ap": {label: mean AP of its queries},
        "pr_curve": {"recall": [...], "precision": [...]} (interpolated precision averaged
        over valid queries), "plan": the sizes used}``, and with ``neighbours`` N > 0
        ``"neighbours": {"index": int64 (Q, N) gallery indices, "score": float32 (Q, N)
        similarities}``, best first, in the ranking's order (ties: lower gallery index).
    """
    if metric not in ("cosine", "euclidean"):
        raise ValueError(f"unknown metric '{metric}' (cosine or euclidean)")
    q_src, g_src = as_source(query), as_source(gallery)
    if q_src.dim != g_src.dim:
        raise ValueError(f"feature shapes do not match: query (Q, {q_src.dim}), gallery (G, {g_src.dim})")
    ql = torch.as_tensor(np.asarray(query_labels)).long().flatten().cpu()
    gl = torch.as_tensor(np.asarray(gallery_labels)).long().flatten().cpu()
    num_q, num_g = len(q_src), len(g_src)
    if len(ql) != num_q or len(gl) != num_g:
        raise ValueError("features and labels differ in length")
    if num_g == 0:
        raise ValueError("the gallery is empty")
    if num_g >= MAX_GALLERY:
        raise ValueError(f"gallery of {num_g} items is larger than {MAX_GALLERY - 1}")
    ks = [min(int(k), num_g) for k in topk]
    if any(k < 1 for k in ks):
        raise ValueError(f"topk values must be positive, got {list(topk)}")
    device = torch.device(device or "cpu")

    classes, g_cls = torch.unique(gl, sorted=True, return_inverse=True)
    counts = torch.bincount(g_cls, minlength=len(classes))
    g_start = torch.cumsum(counts, 0) - counts  # class-order position of each class's first item
    pos = torch.searchsorted(classes, ql).clamp(max=len(classes) - 1)
    q_cls = torch.where(classes[pos] == ql, pos, torch.full_like(pos, -1))
    num_rel = torch.where(q_cls >= 0, counts[q_cls.clamp(min=0)], torch.zeros_like(q_cls))
    r_max = max(1, int(num_rel.max())) if num_q else 1
    n_nb = min(max(0, int(neighbours)), num_g)
    plan = plan_chunks(num_q, num_g, g_src.dim, r_max, memory_mb, chunk, block, n_nb)
    scorer = TiledScores(q_src, q_cls, g_src, g_cls, metric, device)
    g_index = scorer.g_order.to(device)  # original gallery index at each class-order position
    g_cls_dev = scorer.g_cls.to(device)

    # Per-query results, in class order, reduced once at the end (so no floating-point sum
    # depends on the chunking); summaries are row-wise, taken 1024 queries at a time.
    r_sorted = num_rel[scorer.q_order]
    ap_sorted = torch.empty(num_q, dtype=torch.float64)
    hits_sorted = torch.zeros(num_q, len(ks), dtype=torch.int64)
    pr_sorted = torch.empty(num_q, PR_LEVELS, dtype=torch.float64)
    nb_keys_sorted = torch.empty(num_q, n_nb, dtype=torch.int64)
    nb_scores_sorted = torch.empty(num_q, n_nb, dtype=torch.float32)
    bar = tqdm(total=num_q, desc="ranking", disable=not progress, leave=False)
    for a in range(0, num_q, plan["chunk"]):
        b = min(a + plan["chunk"], num_q)
        ranks, nb_keys_sorted[a:b], nb_scores_sorted[a:b] = _rank_chunk(
            scorer, a, b, r_max, g_start, counts, g_index, g_cls_dev, plan["block"], device, n_nb)
        for s0 in range(a, b, 1024):
            s1 = min(s0 + 1024, b)
            ap_sorted[s0:s1], hits_sorted[s0:s1], pr_sorted[s0:s1] = _summaries(ranks[s0 - a : s1 - a],
                                                                                r_sorted[s0:s1], ks)
        del ranks
        bar.update(b - a)
    bar.close()

    # Back to the callers' query order.
    ap = torch.empty(num_q, dtype=torch.float64)
    ap[scorer.q_order] = ap_sorted
    hits = hits_sorted.sum(0)
    ok = ~torch.isnan(ap)
    n_valid = int(ok.sum())
    pr_valid = pr_sorted[~torch.isnan(ap_sorted)]
    class_ap = {}
    for label in torch.unique(ql[ok]).tolist():
        class_ap[int(label)] = float(ap[ok & (ql == label)].mean())
    out: dict = {
        "mAP": float(ap[ok].mean()) if n_valid else float("nan"),
        "num_queries": num_q,
        "num_valid_queries": n_valid,
        "ap": ap,
        "class_ap": class_ap,
        "pr_curve": {
            "recall": [i / (PR_LEVELS - 1) for i in range(PR_LEVELS)],
            "precision": (pr_valid.mean(0) if n_valid else torch.full((PR_LEVELS,), float("nan"))).tolist(),
        },
        "plan": {"chunk": plan["chunk"], "block": plan["block"], "tile": [scorer.tq, scorer.tg]},
    }
    for i, (k_req, k) in enumerate(zip(topk, ks)):
        out[f"P@{int(k_req)}"] = float(hits[i]) / (k * num_q) if num_q else float("nan")
    if n_nb:
        nb_index, nb_scores = torch.empty_like(nb_keys_sorted), torch.empty_like(nb_scores_sorted)
        nb_index[scorer.q_order], nb_scores[scorer.q_order] = key_index(nb_keys_sorted), nb_scores_sorted
        out["neighbours"] = {"index": nb_index, "score": nb_scores}
    return out


def _rank_chunk(scorer: TiledScores, a: int, b: int, r_max: int, g_start: torch.Tensor, counts: torch.Tensor,
                g_index: torch.Tensor, g_cls: torch.Tensor, block: int, device: torch.device,
                n_nb: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For queries a..b-1 (class order): ranks (b - a, r_max) of their relevant items (0 past
    R), and the ranking keys (b - a, n_nb) and scores of their first ``n_nb`` items."""
    n, num_g = b - a, len(g_index)
    q_cls = scorer.q_cls[a:b]
    r = torch.where(q_cls >= 0, counts[q_cls.clamp(min=0)], torch.zeros_like(q_cls))
    tiles = range((a // scorer.tq) * scorer.tq, b, scorer.tq)
    q_tiles = {t0: scorer.query_tile(t0) for t0 in tiles}

    # Pass 1: scores of every (query, relevant item) pair, from the few tile products that
    # hold them, and their sorted ranking keys (padded with the largest key), tile by tile.
    col = torch.arange(r_max, device=device)
    real = col.unsqueeze(0) < r.to(device).unsqueeze(1)
    g_start_dev = g_start.to(device)
    rel_keys = torch.full((n, r_max), _PAD_KEY, dtype=torch.int64, device=device)
    for t0, qt in q_tiles.items():
        r0, r1 = max(a, t0), min(b, t0 + scorer.tq)
        cls = q_cls[r0 - a : r1 - a]
        present = cls[cls >= 0]
        if len(present) == 0:
            continue
        lo = int(g_start[present.min()]) // scorer.tg * scorer.tg
        hi = int(g_start[present.max()] + counts[present.max()])
        row_cls = torch.full((scorer.tq,), -1, dtype=torch.int64)
        row_cls[r0 - t0 : r1 - t0] = cls
        row_cls = row_cls.to(device)
        scores = torch.zeros(r1 - r0, r_max, dtype=torch.float32, device=device)
        for u0 in range(lo, hi, scorer.tg):
            s = scorer.product(qt, scorer.gallery_tile(u0, keep=2))
            col_cls = torch.full((scorer.tg,), -2, dtype=torch.int64, device=device)
            col_cls[: min(scorer.tg, num_g - u0)] = g_cls[u0 : u0 + scorer.tg]
            rr, cc = torch.nonzero(row_cls.unsqueeze(1) == col_cls.unsqueeze(0), as_tuple=True)
            scores[rr + t0 - r0, (u0 + cc) - g_start_dev[row_cls[rr]]] = s[rr, cc]
        at = (g_start_dev[cls.clamp(min=0).to(device)].unsqueeze(1) + col).clamp(max=num_g - 1)
        keys = ranking_keys(scores, g_index[at]).masked_fill_(~real[r0 - a : r1 - a], _PAD_KEY)
        rel_keys[r0 - a : r1 - a] = keys.sort(dim=1).values
        del scores, at, keys

    # Pass 2: one sweep over the gallery; for every other item p = #{relevant keys below its
    # key}, counted per query in a histogram; the k-th relevant item has rank
    # k + 1 + #{others with p <= k}. The n_nb smallest keys of all items (relevant or not)
    # are merged into a running best list on the way: keys are unique, so the merge does not
    # depend on the blocks.
    hist = torch.zeros(n, r_max + 1, dtype=torch.int64, device=device)
    nb_keys = torch.full((n, n_nb), _PAD_KEY, dtype=torch.int64, device=device)
    nb_scores = torch.zeros(n, n_nb, dtype=torch.float32, device=device)
    for g0 in range(0, num_g, block):
        g1 = min(g0 + block, num_g)
        g_tiles = [(u0, scorer.gallery_tile(u0)) for u0 in range((g0 // scorer.tg) * scorer.tg, g1, scorer.tg)]
        cols = torch.arange(g0, g1, device=device)
        idx, cls_cols = g_index[cols], g_cls[cols]
        for t0, qt in q_tiles.items():
            r0, r1 = max(a, t0), min(b, t0 + scorer.tq)
            s = torch.cat([scorer.product(qt, gt)[r0 - t0 : r1 - t0, max(g0, u0) - u0 : min(g1, u0 + scorer.tg) - u0]
                           for u0, gt in g_tiles], dim=1)
            if torch.isnan(s).any():
                raise ValueError("similarity scores contain NaN (features with NaN or inf values?)")
            keys = ranking_keys(s, idx)
            if n_nb:
                near = torch.topk(keys, min(n_nb, keys.shape[1]), dim=1, largest=False, sorted=False).indices
                cand_k = torch.cat([nb_keys[r0 - a : r1 - a], keys.gather(1, near)], 1)
                cand_s = torch.cat([nb_scores[r0 - a : r1 - a], s.gather(1, near)], 1)
                best = torch.topk(cand_k, n_nb, dim=1, largest=False, sorted=True).indices
                nb_keys[r0 - a : r1 - a], nb_scores[r0 - a : r1 - a] = cand_k.gather(1, best), cand_s.gather(1, best)
                del near, cand_k, cand_s, best
            del s
            keys.masked_fill_(q_cls[r0 - a : r1 - a].to(device).unsqueeze(1) == cls_cols.unsqueeze(0), _PAD_KEY)
            p = torch.searchsorted(rel_keys[r0 - a : r1 - a], keys)
            del keys
            offsets = torch.arange(r1 - r0, device=device).mul_(r_max + 1).unsqueeze(1)
            hist[r0 - a : r1 - a] += torch.bincount(p.add_(offsets).view(-1), minlength=(r1 - r0) * (r_max + 1)).view(
                r1 - r0, r_max + 1)
            del p
    before = hist[:, :r_max].cumsum(1)
    ranks = (col + 1).unsqueeze(0) + before
    return torch.where(real, ranks, torch.zeros_like(ranks)).cpu(), nb_keys.cpu(), nb_scores.cpu()


def _summaries(ranks: torch.Tensor, r: torch.Tensor, ks: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per query: AP (NaN without relevant items), hits within each K, interpolated precision
    at the PR levels (NaN rows where undefined). ranks (Q, Rmax), 0 past R."""
    num_q, r_max = ranks.shape
    kth = torch.arange(1, r_max + 1, dtype=torch.float64)
    real = kth.unsqueeze(0) <= r.unsqueeze(1)
    prec = torch.where(real, kth / ranks.double().clamp(min=1), torch.zeros((), dtype=torch.float64))
    # A running sum read at R - 1 adds each query's terms in the same order whatever the
    # padding, so AP does not depend on how queries were grouped.
    ap = prec.cumsum(1).gather(1, (r - 1).clamp(min=0).unsqueeze(1)).squeeze(1) / r.clamp(min=1)
    ap = torch.where(r > 0, ap, torch.full_like(ap, float("nan")))
    hits = torch.stack([((ranks <= k) & real).sum(1) for k in ks], 1) if ks else torch.zeros(num_q, 0, dtype=torch.int64)
    # Interpolated precision at recall l / (L - 1): the best precision at any k whose recall
    # (k + 1) / R reaches it.
    interp = prec.flip(1).cummax(1).values.flip(1)
    levels = torch.arange(PR_LEVELS, dtype=torch.int64)
    k_min = ((levels.unsqueeze(0) * r.unsqueeze(1) + PR_LEVELS - 2) // (PR_LEVELS - 1) - 1).clamp(min=0, max=r_max - 1)
    pr = interp.gather(1, k_min)
    pr[r == 0] = float("nan")
    return ap, hits, pr


def topk_indices(
    query: torch.Tensor | FeatureSource,
    gallery: torch.Tensor | FeatureSource,
    k: int,
    metric: str = "cosine",
    block: int = 8192,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``k`` gallery items of each query's ranking (same rule as the metrics).

    Streams the gallery in blocks and keeps the ``k`` smallest ranking keys; keys are
    unique, so the merge does not depend on the block size. Returns (indices int64 (Q, k),
    scores float32 (Q, k)), best first. Meant for a few queries (pictures).
    """
    q_src, g_src = as_source(query), as_source(gallery)
    device = torch.device(device or "cpu")
    k = min(int(k), len(g_src))
    q = q_src.read(0, len(q_src)).to(device)
    qq = None
    if metric == "cosine":
        q = F.normalize(q, dim=1)
    else:
        qq = (q * q).sum(1, keepdim=True)
    best_keys = torch.empty(len(q), 0, dtype=torch.int64, device=device)
    best_scores = torch.empty(len(q), 0, dtype=torch.float32, device=device)
    for g0 in range(0, len(g_src), block):
        g1 = min(g0 + block, len(g_src))
        g = g_src.read(g0, g1).to(device)
        s = q @ F.normalize(g, dim=1).T if metric == "cosine" else -(qq - 2 * q @ g.T + (g * g).sum(1))
        if torch.isnan(s).any():
            raise ValueError("similarity scores contain NaN (features with NaN or inf values?)")
        keys = torch.cat([best_keys, ranking_keys(s, g0)], 1)
        vals = torch.cat([best_scores, s], 1)
        take = torch.topk(keys, min(k, keys.shape[1]), dim=1, largest=False, sorted=True).indices
        best_keys, best_scores = keys.gather(1, take), vals.gather(1, take)
    return key_index(best_keys).cpu(), best_scores.cpu()


def reference_metrics(
    query: torch.Tensor,
    query_labels: torch.Tensor,
    gallery: torch.Tensor,
    gallery_labels: torch.Tensor,
    metric: str = "cosine",
    topk: Sequence[int] = (1, 10, 100),
) -> dict:
    """The plain definition, for checking :func:`retrieval_metrics`: one full stable argsort
    of every query's scores (memory Q x G x 20 bytes). Returns mAP, P@K and ``ap``."""
    scores = similarity(query.float(), gallery.float(), metric)
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices
    rel = (torch.as_tensor(gallery_labels).long()[order] == torch.as_tensor(query_labels).long()[:, None]).double()
    hits = rel.cumsum(1)
    n_rel = hits[:, -1]
    ranks = torch.arange(1, len(gallery) + 1, dtype=torch.float64)
    ap = (rel * hits / ranks).sum(1) / n_rel.clamp(min=1)
    ap[n_rel == 0] = float("nan")
    ok = ~torch.isnan(ap)
    out = {"mAP": float(ap[ok].mean()) if ok.any() else float("nan"), "ap": ap}
    for k_req in topk:
        k = min(int(k_req), len(gallery))
        out[f"P@{int(k_req)}"] = float((hits[:, k - 1] / k).mean())
    return out

