"""Descriptors: two copies of one encoder rank like the encoder alone, the fusion weights act
exactly as documented (squared on cosine in concat mode, linear in score mode), parts are
parsed from the command line, and a row's parts must have read the same sketches."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from config import ConfigError
from evaluation.descriptors import (
    Descriptor,
    FusedSource,
    combine,
    fuse,
    fusion_scales,
    parse_part,
)
from evaluation.feature_matrix import TensorSource
from evaluation.features import CachedFeatures
from evaluation.metrics.retrieval import (
    reference_metrics,
    retrieval_metrics,
    topk_indices,
)


def encoders(seed=0, n_q=30, n_g=120, classes=6):
    """Two 'encoders' that disagree: A separates classes 0-2 well, B classes 3-5."""
    g = torch.Generator().manual_seed(seed)
    ql, gl = torch.arange(n_q) % classes, torch.arange(n_g) % classes
    centres_a, centres_b = torch.randn(classes, 16, generator=g), torch.randn(classes, 12, generator=g)
    noise_a = torch.where(torch.arange(classes) < 3, 0.3, 3.0)
    noise_b = torch.where(torch.arange(classes) < 3, 3.0, 0.3)

    def feats(labels):
        n = len(labels)
        a = centres_a[labels] + noise_a[labels, None] * torch.randn(n, 16, generator=g)
        b = centres_b[labels] + noise_b[labels, None] * torch.randn(n, 12, generator=g)
        return a, b

    (qa, qb), (ga, gb) = feats(ql), feats(gl)
    return qa, qb, ql, ga, gb, gl


def full_ranking(q, g, metric="cosine"):
    return topk_indices(q, g, len(g), metric)[0]


@pytest.mark.parametrize("mode", ["concat", "score"])
@pytest.mark.parametrize("weights", [(1.0, 1.0), (0.3, 0.3)])
def test_two_copies_of_one_encoder_rank_like_the_encoder_alone(mode, weights):
    qa, _, ql, ga, _, gl = encoders()
    alone = retrieval_metrics(qa, ql, ga, gl, topk=(1, 10))
    fq, fg = fuse([qa, qa], weights, mode), fuse([ga, ga], weights, mode)
    fused = retrieval_metrics(fq, ql, fg, gl, topk=(1, 10))
    assert torch.equal(full_ranking(fq, fg), full_ranking(qa, ga))
    assert torch.allclose(fused["ap"], alone["ap"], rtol=0, atol=1e-12)
    assert fused["P@10"] == alone["P@10"]


def test_concat_weights_act_squared_on_the_cosine():
    qa, qb, _, ga, gb, _ = encoders()
    w = (2.0, 1.0)
    fused_cos = F.normalize(fuse([qa, qb], w), dim=1) @ F.normalize(fuse([ga, gb], w), dim=1).T
    cos_a = F.normalize(qa, dim=1) @ F.normalize(ga, dim=1).T
    cos_b = F.normalize(qb, dim=1) @ F.normalize(gb, dim=1).T
    assert torch.allclose(fused_cos, (4 * cos_a + 1 * cos_b) / 5, atol=1e-6)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_score_mode_ranks_by_the_weighted_sum_of_similarities(metric):
    qa, qb, ql, ga, gb, gl = encoders(1)
    w = (0.7, 0.3)
    na, nb, nga, ngb = (F.normalize(x, dim=1) for x in (qa, qb, ga, gb))
    if metric == "cosine":
        total = w[0] * na @ nga.T + w[1] * nb @ ngb.T
    else:
        total = -(w[0] * torch.cdist(na, nga) ** 2 + w[1] * torch.cdist(nb, ngb) ** 2)
    expected = torch.sort(total.double(), dim=1, descending=True, stable=True).indices
    got = full_ranking(fuse([qa, qb], w, "score"), fuse([ga, gb], w, "score"), metric)
    assert torch.equal(got, expected)
    # concat with weights (a, b) is score mode with weights (a^2, b^2)
    concat = full_ranking(fuse([qa, qb], (0.7**0.5, 0.3**0.5)), fuse([ga, gb], (0.7**0.5, 0.3**0.5)), metric)
    assert torch.equal(concat, got)


def test_weights_move_the_result_between_the_two_encoders():
    qa, qb, ql, ga, gb, gl = encoders(2)

    def m(wa, wb):
        return retrieval_metrics(fuse([qa, qb], (wa, wb)), ql, fuse([ga, gb], (wa, wb)), gl)

    only_a, only_b = retrieval_metrics(qa, ql, ga, gl), retrieval_metrics(qb, ql, gb, gl)
    # weight 0 switches a part off exactly
    assert torch.allclose(m(1, 0)["ap"], only_a["ap"], atol=1e-12)
    assert torch.allclose(m(0, 1)["ap"], only_b["ap"], atol=1e-12)
    # A is good on classes 0-2, B on 3-5: more weight on A lifts classes 0-2 and lowers 3-5
    heavy_a, heavy_b = m(3, 1)["class_ap"], m(1, 3)["class_ap"]
    assert all(heavy_a[c] > heavy_b[c] for c in (0, 1, 2))
    assert all(heavy_a[c] < heavy_b[c] for c in (3, 4, 5))
    # the equal-weight fusion beats either encoder alone on this data
    assert m(1, 1)["mAP"] > max(only_a["mAP"], only_b["mAP"])


def test_fused_source_reads_what_fuse_computes():
    qa, qb, ql, ga, gb, gl = encoders()
    src = FusedSource([ga, gb], (1.0, 0.5))
    assert len(src) == len(ga) and src.dim == 28
    assert torch.equal(src.read(5, 17), fuse([ga, gb], (1.0, 0.5))[5:17])
    streamed = retrieval_metrics(FusedSource([qa, qb]), ql, FusedSource([ga, gb]), gl, chunk=7, block=11)
    ref = reference_metrics(fuse([qa, qb]), ql, fuse([ga, gb]), gl)
    assert streamed["mAP"] == pytest.approx(ref["mAP"], abs=1e-12)


@pytest.mark.parametrize("bad", [(1.0, -1.0), (0.0, 0.0), (float("nan"), 1.0), ()])
def test_bad_weights_are_refused(bad):
    with pytest.raises(ValueError, match="weights|at least one"):
        fusion_scales(bad)


def test_parts_must_have_the_same_rows():
    with pytest.raises(ValueError, match="differ in length"):
        fuse([torch.ones(3, 2), torch.ones(4, 2)])


@pytest.mark.parametrize(
    "spec, path, layer, weight",
    [
        ("runs/a/best.pt", "runs/a/best.pt", None, 1.0),
        ("runs/a/best.pt:fc_block", "runs/a/best.pt", "fc_block", 1.0),
        ("runs/a/best.pt@0.25", "runs/a/best.pt", None, 0.25),
        ("runs/a/best.pt:fc@2", "runs/a/best.pt", "fc", 2.0),
    ],
)
def test_part_specs(spec, path, layer, weight):
    part = parse_part(spec)
    assert (str(part.path), part.layer, part.weight) == (path, layer, weight)


@pytest.mark.parametrize("spec", ["runs/a.pt@heavy", "runs/a.pt@-1"])
def test_bad_part_specs(spec):
    with pytest.raises(ConfigError):
        parse_part(spec)


def test_equal_weights_in_both_modes_rank_alike():
    qa, qb, _, ga, gb, _ = encoders(3)
    a = full_ranking(fuse([qa, qb], (1, 1), "concat"), fuse([ga, gb], (1, 1), "concat"))
    b = full_ranking(fuse([qa, qb], (1, 1), "score"), fuse([ga, gb], (1, 1), "score"))
    assert torch.equal(a, b)
    assert np.array_equal(fusion_scales((4.0, 1.0), "score"), [2.0, 1.0])


class _Part:
    """Stands in for an Encoder: combine only reads names."""

    def __init__(self, name):
        self.label, self.layer, self.weights_id = name, "fc", name


def _entry(x, labels):
    return CachedFeatures(TensorSource(x), np.asarray(labels), path=None, hit=True)


def test_combine_fuses_the_parts_and_refuses_parts_of_other_sketches():
    qa, qb, ql, ga, gb, gl = encoders()
    desc = Descriptor("a+b", "fused", [_Part("a"), _Part("b")], [1.0, 0.5], "score", fused=True)
    got = combine(desc, [_entry(qa, ql), _entry(qb, ql)], [_entry(ga, gl), _entry(gb, gl)])
    assert torch.equal(got.gallery.read(0, len(gl)), fuse([ga, gb], [1.0, 0.5], "score"))
    assert np.array_equal(got.query_labels, ql) and got.all_cached
    single = combine(Descriptor("a", "pretrained", [_Part("a")]), [_entry(qa, ql)], [_entry(ga, gl)])
    assert torch.equal(single.query.read(0, len(ql)), qa)  # one part: its own features, unchanged
    shuffled = gl.flip(0)
    with pytest.raises(ConfigError, match="different gallery sketches"):
        combine(desc, [_entry(qa, ql), _entry(qb, ql)], [_entry(ga, gl), _entry(gb, shuffled)])
