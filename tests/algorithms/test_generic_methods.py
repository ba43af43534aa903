"""The generic self-supervised methods' pieces against hand-computed answers and naive
references: NT-Xent and InfoNCE, BYOL's loss, EMA update and momentum schedule, a target that
gets no gradient, VICReg's three terms and expander, the autoencoders' losses, the denoising autoencoder's masks; and the trainer's one step against a plain
reference step for the paper's tasks (the same weights, bit for bit, in one process)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

import algorithms
from algorithms import (
    BYOLAlgorithm,
    Draws,
    VICRegAlgorithm,
    cosine_momentum,
    ema_update,
    info_nce,
    normalized_mse,
    nt_xent,
    nt_xent_top1,
    vicreg_loss,
    vicreg_terms,
)
from algorithms.autoencoder import pen_states, stroke_reconstruction_loss
from algorithms.denoising import mask_raster_cells, mask_stroke_points
from algorithms.heads import mlp_head
from config import ConfigError, load_config
from engine import build
from engine.trainer import Trainer

TINY_TCN = {"model.params": {"embed_dim": 32, "channels": 4, "windows": [3, 5]}}


# ---------------------------------------------------------------- NT-Xent / InfoNCE
def test_nt_xent_on_a_hand_computed_two_by_two_case():
    # Rows a=(1,0), b=(0,1) and their second views c=(3,4)/5=(0.6,0.8), d=(0,2)/2=(0,1).
    # Cosines: ab 0, ac 0.6, ad 0, bc 0.8, bd 1, cd 0.8. t = 0.5.
    z1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    z2 = torch.tensor([[3.0, 4.0], [0.0, 2.0]])
    t = 0.5
    e = lambda s: math.exp(s / t)  # noqa: E731
    anchors = [
        -math.log(e(0.6) / (e(0) + e(0.6) + e(0))),  # a: positive c; others b, d
        -math.log(e(1.0) / (e(0) + e(0.8) + e(1.0))),  # b: positive d; others a, c
        -math.log(e(0.6) / (e(0.6) + e(0.8) + e(0.8))),  # c: positive a; others b, d
        -math.log(e(1.0) / (e(0) + e(1.0) + e(0.8))),  # d: positive b; others a, c
    ]
    assert nt_xent(z1, z2, t).item() == pytest.approx(sum(anchors) / 4, rel=1e-6)
    # Nearest other row: a -> c (right), b -> d (right), c -> b or d at 0.8 (b first: wrong), d -> b (right).
    assert nt_xent_top1(z1, z2) == 0.75


def test_nt_xent_matches_a_naive_loop_on_random_embeddings():
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(5, 7, generator=g), torch.randn(5, 7, generator=g)
    z = [v / v.norm() for v in torch.cat([z1, z2]).double()]
    n, t, total = 5, 0.3, 0.0
    for i in range(2 * n):
        positive = (i + n) % (2 * n)
        denominator = sum(math.exp(float(z[i] @ z[k]) / t) for k in range(2 * n) if k != i)
        total += -math.log(math.exp(float(z[i] @ z[positive]) / t) / denominator)
    assert nt_xent(z1, z2, t).item() == pytest.approx(total / (2 * n), rel=1e-5)
    # Invariant to the order of the samples (what gathering ranks' rows in rank order relies on).
    perm = torch.randperm(5, generator=g)
    assert nt_xent(z1[perm], z2[perm], t).item() == pytest.approx(nt_xent(z1, z2, t).item(), rel=1e-6)


def test_info_nce_on_a_hand_computed_case_and_a_naive_loop():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    b = torch.tensor([[3.0, 4.0], [0.0, 2.0]])  # (0.6, 0.8), (0, 1)
    t = 0.5
    e = lambda s: math.exp(s / t)  # noqa: E731
    a_to_b = (-math.log(e(0.6) / (e(0.6) + e(0.0))) - math.log(e(1.0) / (e(0.8) + e(1.0)))) / 2
    b_to_a = (-math.log(e(0.6) / (e(0.6) + e(0.8))) - math.log(e(1.0) / (e(0.0) + e(1.0)))) / 2
    assert info_nce(a, b, t, symmetric=False).item() == pytest.approx(a_to_b, rel=1e-6)
    assert info_nce(a, b, t).item() == pytest.approx((a_to_b + b_to_a) / 2, rel=1e-6)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(4, 3, generator=g).double(), torch.randn(4, 3, generator=g).double()
    xn, yn = x / x.norm(dim=1, keepdim=True), y / y.norm(dim=1, keepdim=True)
    loop = 0.0
    for i in range(4):
        loop -= math.log(math.exp(float(xn[i] @ yn[i]) / 0.2) / sum(math.exp(float(xn[i] @ yn[j]) / 0.2) for j in range(4)))
        loop -= math.log(math.exp(float(yn[i] @ xn[i]) / 0.2) / sum(math.exp(float(yn[i] @ xn[j]) / 0.2) for j in range(4)))
    assert info_nce(x.float(), y.float(), 0.2).item() == pytest.approx(loop / 8, rel=1e-5)


def test_contrastive_losses_refuse_bad_input():
    with pytest.raises(ValueError, match="same shape"):
        nt_xent(torch.zeros(2, 3), torch.zeros(3, 3), 0.5)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        info_nce(torch.ones(2, 3), torch.ones(2, 3), 0.0)


# ---------------------------------------------------------------- VICReg
def test_vicreg_terms_on_a_hand_computed_two_by_two_case():
    # z1 rows (1, 2), (3, 4): centred (-1, -1), (1, 1); unbiased variances 2, 2 (std above 1:
    # no hinge); covariance [[2, 2], [2, 2]]: off-diagonal squares 4 + 4, / D = 4.
    # z2 rows (1, 2), (1, 2.5): centred (0, -0.25), (0, 0.25); variances 0 and 0.125; hinges
    # 1 - sqrt(1e-4) and 1 - sqrt(0.1251); covariance diag(0, 0.125): no off-diagonal.
    # Invariance: squared differences 0, 0, 4, 2.25 -> mean 1.5625.
    z1 = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    z2 = torch.tensor([[1.0, 2.0], [1.0, 2.5]])
    inv, var, cov = vicreg_terms(z1, z2)
    want_var = (0.0 + ((1 - math.sqrt(1e-4)) + (1 - math.sqrt(0.125 + 1e-4))) / 2) / 2
    assert inv.item() == pytest.approx(1.5625, rel=1e-6)
    assert var.item() == pytest.approx(want_var, rel=1e-6)
    assert cov.item() == pytest.approx(4.0, rel=1e-6)
    assert vicreg_loss(z1, z2).item() == pytest.approx(25 * 1.5625 + 25 * want_var + 4.0, rel=1e-6)
    assert vicreg_loss(z1, z2, 1.0, 2.0, 3.0).item() == pytest.approx(1.5625 + 2 * want_var + 12.0, rel=1e-6)


def test_vicreg_terms_match_a_naive_loop_on_random_embeddings():
    g = torch.Generator().manual_seed(3)
    z1, z2 = torch.randn(6, 5, generator=g), 0.4 * torch.randn(6, 5, generator=g)
    a, b = z1.double().tolist(), z2.double().tolist()
    n, d = 6, 5
    inv = sum((a[i][j] - b[i][j]) ** 2 for i in range(n) for j in range(d)) / (n * d)
    var = cov = 0.0
    for z in (a, b):
        means = [sum(z[i][j] for i in range(n)) / n for j in range(d)]
        c = [[sum((z[i][j] - means[j]) * (z[i][k] - means[k]) for i in range(n)) / (n - 1) for k in range(d)]
             for j in range(d)]
        var += sum(max(0.0, 1 - math.sqrt(c[j][j] + 1e-4)) for j in range(d)) / d / 2
        cov += sum(c[j][k] ** 2 for j in range(d) for k in range(d) if j != k) / d
    got = vicreg_terms(z1, z2)
    assert [t.dtype for t in got] == [torch.float32] * 3
    assert [t.item() for t in got] == pytest.approx([inv, var, cov], rel=1e-5)
    assert var > 0 and cov > 0  # both penalties are active in this case


def test_vicreg_loss_is_zero_for_identical_decorrelated_unit_variance_views():
    # Centred orthogonal columns with unbiased variance 1: nothing to pull, hinge or decorrelate.
    c = math.sqrt(3) / 2
    z = c * torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])
    inv, var, cov = vicreg_terms(z, z.clone())
    assert (inv.item(), var.item(), cov.item()) == (0.0, 0.0, 0.0)
    # Collapse is what the variance term punishes: every row the same gives 1 - sqrt(eps).
    same = torch.ones(4, 3)
    assert vicreg_terms(same, same)[1].item() == pytest.approx(1 - math.sqrt(1e-4), rel=1e-6)


def test_vicreg_refuses_bad_input_and_bad_settings():
    with pytest.raises(ValueError, match="vicreg: .*at least 2 rows, got 1"):
        vicreg_terms(torch.zeros(1, 3), torch.zeros(1, 3))
    with pytest.raises(ValueError, match="same shape"):
        vicreg_terms(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="vicreg: proj_layers must be at least 2"):
        algorithms.build_algorithm("vicreg", "stroke", proj_layers=1)
    with pytest.raises(ValueError, match="vicreg: std_coeff must be a positive float"):
        algorithms.build_algorithm("vicreg", "raster", std_coeff=0)


def test_mlp_head_of_two_layers_is_the_projector_it_always_was_and_three_is_vicregs_expander():
    # Two layers: the same modules, built from the same random numbers, as before the layer count.
    torch.manual_seed(0)
    got = mlp_head(5, 7, 3)
    torch.manual_seed(0)
    want = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.BatchNorm1d(7), torch.nn.ReLU(), torch.nn.Linear(7, 3))
    assert list(got.state_dict()) == list(want.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(got.state_dict().values(), want.state_dict().values()))
    expander = mlp_head(5, 7, 3, layers=3)
    assert [type(m).__name__ for m in expander] == ["Linear", "BatchNorm1d", "ReLU"] * 2 + ["Linear"]
    assert [m.weight.shape for m in expander if isinstance(m, torch.nn.Linear)] == [(7, 5), (7, 7), (3, 7)]
    with pytest.raises(ValueError, match="layers must be an int >= 2"):
        mlp_head(5, 7, 3, layers=1)


def test_vicreg_step_reports_its_three_terms_and_trains_expander_and_encoder():
    cfg = load_config("tcn_vicreg", {**TINY_TCN, "data.num_classes": 2, "data.train_per_class": 3})
    algorithm = VICRegAlgorithm("stroke", proj_hidden_dim=16, proj_dim=8)
    torch.manual_seed(0)
    encoder = build.build_model(cfg, algorithms.PLACEHOLDER_OUTPUTS)
    train_set = build.build_dataset(cfg, "train")
    x = torch.stack([train_set[i][0] for i in range(6)])
    nets = algorithm.build_networks(encoder, "fc", x[:2])
    assert list(nets.heads) == ["expander"] and nets.target is None
    views = algorithm.prepare(x, None, Draws(torch.Generator().manual_seed(0)))
    nets.train()
    out = nets(views)
    assert out.count == 12 and set(out.metrics) == {"inv", "var", "cov"}
    z = nets.heads["expander"](algorithm.encode(nets.encoder, torch.cat(views))).float()
    inv, var, cov = (t.item() for t in vicreg_terms(z[:6], z[6:]))
    assert out.metrics == pytest.approx({"inv": inv, "var": var, "cov": cov}, rel=1e-5)
    assert out.loss.item() == pytest.approx(25 * inv + 25 * var + cov, rel=1e-5)
    out.loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in nets.heads.parameters() if p.dim() > 1)
    weights = {n: p for n, p in encoder.named_parameters() if p.dim() > 1}
    assert weights["classifier.weight"].grad is None  # the placeholder classifier is not on the path
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for n, p in weights.items() if n != "classifier.weight")


# ---------------------------------------------------------------- BYOL
def test_byol_loss_of_identical_normalised_vectors_is_zero():
    v = F.normalize(torch.randn(6, 8, generator=torch.Generator().manual_seed(2)), dim=1)
    assert normalized_mse(v, v.clone()).item() == pytest.approx(0.0, abs=1e-6)
    assert normalized_mse(3 * v, v).item() == pytest.approx(0.0, abs=1e-6)  # only directions count
    assert normalized_mse(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 5.0]])).item() == pytest.approx(2.0)
    assert normalized_mse(torch.tensor([[1.0, 0.0]]), torch.tensor([[-2.0, 0.0]])).item() == pytest.approx(4.0)


def test_ema_update_matches_its_formula_and_the_momentum_schedule():
    g = torch.Generator().manual_seed(3)
    target = [torch.randn(4, 3, generator=g), torch.randn(5, generator=g)]
    online = [torch.randn(4, 3, generator=g), torch.randn(5, generator=g)]
    expected = [0.99 * t + 0.01 * o for t, o in zip(target, online)]
    ema_update(target, online, 0.99)
    for got, want in zip(target, expected):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)
    assert cosine_momentum(0.996, 0, 100) == pytest.approx(0.996)
    assert cosine_momentum(0.996, 50, 100) == pytest.approx(0.998)  # half way: (base + 1) / 2
    assert cosine_momentum(0.996, 100, 100) == pytest.approx(1.0)
    assert cosine_momentum(0.9, 25, 100) == pytest.approx(1 - 0.1 * (math.cos(math.pi / 4) + 1) / 2)


def byol_networks(momentum=0.9):
    cfg = load_config("tcn_byol", {**TINY_TCN, "algorithm.params": {
        "proj_hidden_dim": 16, "proj_dim": 8, "pred_hidden_dim": 16, "momentum": momentum}})
    torch.manual_seed(0)
    algorithm = build.build_algorithm(cfg)
    model = build.build_model(cfg, build.head_size(cfg, algorithm))
    return cfg, algorithm, build.build_networks(cfg, algorithm, model)


def stroke_batch(n=4, seed=0):
    cfg = load_config("tcn_rotation", {"data.num_classes": 4, "data.train_per_class": 2})
    data = build.build_dataset(cfg, "train")
    x = torch.stack([data[i][0] for i in range(n)])
    return x, torch.tensor([data[i][1] for i in range(n)])


def test_byol_target_gets_no_gradient_and_moves_only_by_its_ema_update():
    cfg, algorithm, nets = byol_networks()
    assert all(not p.requires_grad for p in nets.target.parameters())
    trainable = {id(p) for p in nets.trainable_parameters()}
    assert not trainable & {id(p) for p in nets.target.parameters()}  # the optimiser never sees it
    # the encoder's classifier is a frozen placeholder: BYOL does not read logits
    assert not any(id(p) in trainable for p in nets.encoder.classifier.parameters())
    x, y = stroke_batch()
    nets.train()
    views = algorithm.prepare(x, y, Draws(torch.Generator().manual_seed(0)))
    before = copy.deepcopy(nets.target.state_dict())
    out = nets(views)
    out.loss.backward()
    assert all(p.grad is None for p in nets.target.parameters())
    assert all(p.grad is not None for p in nets.heads.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in nets.encoder.parameters())
    for p in nets.trainable_parameters():  # a plain SGD step on the online network
        p.data.add_(p.grad, alpha=-0.1)
    online, target = BYOLAlgorithm.online_and_target(nets)
    # (the target's BN statistics moved in its forward pass; its weights did not)
    params = dict(nets.target.named_parameters())
    assert all(torch.equal(params[k], before[k]) for k in params)
    expected = [0.9 * t.detach().clone() + 0.1 * o.detach() for t, o in zip(target, online)]
    algorithm.after_step(nets, 0, 10)  # momentum 0.9 at step 0
    for got, want in zip(target, expected):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)
    assert out.metrics["cos"] == pytest.approx(1 - out.loss.item() / 4)


# ---------------------------------------------------------------- autoencoder
def test_stroke_reconstruction_loss_by_hand():
    # One sketch of 3 rows: two points of one stroke, then padding.
    x = torch.tensor([[[0.2, 0.4, 1.0, 0.0], [0.6, 0.8, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0]]])
    assert pen_states(x).tolist() == [[0, 1, 2]]
    coords = torch.tensor([[[0.2, 0.5], [0.6, 0.8], [0.9, 0.9]]])  # error 0.01 on row 0, padding ignored
    logits = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 0.0, 2.0], [0.0, 0.0, 2.0]]])  # row 1 wrong
    loss, acc = stroke_reconstruction_loss(coords, logits, x, pen_weight=0.5)
    ce_right = -math.log(math.exp(2) / (math.exp(2) + 2))
    ce_wrong = -math.log(1 / (math.exp(2) + 2))
    expected = (0.01 + 0.0) / 2 + 0.5 * (2 * ce_right + ce_wrong) / 3
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert acc.item() == pytest.approx(2 / 3)


def test_raster_autoencoder_target_is_the_ink_coverage():
    algorithm = algorithms.build_algorithm("autoencoder", "raster", recon_size=8)
    x = torch.zeros(1, 1, 16, 16)
    x[0, 0, :2, :2] = 1.0  # one full 2 x 2 cell
    x[0, 0, 15, 15] = 1.0  # a quarter of the last cell
    inputs, target = algorithm.prepare(x, None)
    assert inputs is x and target.shape == (1, 1, 8, 8)
    assert target[0, 0, 0, 0] == 1.0 and target[0, 0, 7, 7] == 0.25 and target.sum() == 1.25
    with pytest.raises(ValueError, match="recon_size must be 4 \\* 2\\^k"):
        algorithms.build_algorithm("autoencoder", "raster", recon_size=24)


# ---------------------------------------------------------------- denoising autoencoder
def test_raster_cells_are_blanked_whole_and_tile_the_image():
    # 7 px in 3 cells per side: rows 0-2 in cell 0, 3-4 in cell 1, 5-6 in cell 2 (floor(i * 3 / 7)).
    x = torch.rand(2, 3, 7, 7) + 0.5
    keep = torch.tensor([[[True, False, True], [True, True, True], [False, True, True]],
                         [[True, True, True], [True, True, True], [True, True, True]]])
    out = mask_raster_cells(x, keep)
    bounds = [(0, 3), (3, 5), (5, 7)]
    expected = x.clone()
    for (i, j) in [(0, 1), (2, 0)]:
        (r0, r1), (c0, c1) = bounds[i], bounds[j]
        expected[0, :, r0:r1, c0:c1] = 0
    assert torch.equal(out, expected)
    assert (out[0] == 0).sum().item() == 3 * (3 * 2 + 2 * 3)  # two cells of 3 x 2 and 2 x 3, every channel


def test_stroke_masking_zeroes_coordinates_of_masked_rows_only():
    x = torch.tensor([[[0.2, 0.4, 1.0, 0.0], [0.6, 0.8, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0]]])
    out = mask_stroke_points(x, torch.tensor([[False, True, False]]))
    assert torch.equal(out, torch.tensor([[[0.2, 0.4, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0]]]))
    assert x[0, 1, 0] == 0.6  # the input is left alone


def test_denoising_masks_drawn_points_at_the_rate_and_splits_like_the_other_draws():
    algorithm = algorithms.build_algorithm("denoising", "stroke", mask_ratio=0.3)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(64, 100, 4)
    x[..., 2] = 1.0
    x[..., 3] = 0.0
    x[:, 60:] = 0.0  # 40 rows of padding per sketch
    corrupted, target, masked = algorithm.prepare(x, None, Draws(gen))
    assert torch.equal(target, x)
    assert not masked[:, 60:].any() and torch.equal(corrupted[:, 60:], x[:, 60:])
    assert torch.equal(corrupted[..., 2:], x[..., 2:])  # pen columns kept
    assert (corrupted[..., :2][masked] == 0).all() and torch.equal(corrupted[~masked], x[~masked])
    assert masked.sum().item() / (64 * 60) == pytest.approx(0.3, abs=0.02)  # 3,840 draws
    # Two processes holding rows 0, 2, 4, ... and 1, 3, 5, ... mask them as one process does.
    for rank in (0, 1):
        part = algorithm.prepare(x[rank::2], None, Draws(torch.Generator().manual_seed(0), rank, 2))
        assert torch.equal(part[2], masked[rank::2]) and torch.equal(part[0], corrupted[rank::2])


def test_denoising_raster_input_is_masked_and_target_is_the_clean_coverage():
    algorithm = algorithms.build_algorithm("denoising", "raster", mask_grid=4, recon_size=8)
    x = torch.rand(16, 3, 32, 32)
    corrupted, target = algorithm.prepare(x, None, Draws(torch.Generator().manual_seed(1)))
    assert torch.equal(target, F.adaptive_avg_pool2d(x[:, :1], 8))
    kept = corrupted.reshape(16, 3, 4, 8, 4, 8).ne(0).all(dim=(1, 3, 5))  # whole 8 x 8 cells kept ...
    blank = corrupted.reshape(16, 3, 4, 8, 4, 8).eq(0).all(dim=(1, 3, 5))  # ... or blanked
    assert torch.equal(kept, ~blank) and 0 < blank.float().mean().item() < 1
    assert torch.equal(corrupted, x * (~blank).repeat_interleave(8, 1).repeat_interleave(8, 2)[:, None])


def test_denoising_loss_is_the_autoencoders_on_the_clean_target_and_reports_the_masked_error():
    torch.manual_seed(0)
    cfg = load_config("tcn_denoising", {**TINY_TCN, "algorithm.params": {"decoder_hidden_dim": 16, "mask_ratio": 0.5}})
    algorithm = build.build_algorithm(cfg)
    nets = build.build_networks(cfg, algorithm, build.build_model(cfg, build.head_size(cfg, algorithm))).eval()
    x = torch.rand(4, 100, 4)
    x[..., 2], x[..., 3] = 1.0, 0.0
    x[:, 50:] = 0.0
    views = algorithm.prepare(x, None, Draws(torch.Generator().manual_seed(2)))
    out = nets(views)
    coords, pen_logits = nets.heads["decoder"](nets.encoder(views[0], out_feat_keys="fc").flatten(1))
    loss, pen_acc = stroke_reconstruction_loss(coords, pen_logits, x)
    error = ((coords - x[..., :2]) ** 2).sum(-1)
    assert out.loss.item() == pytest.approx(loss.item(), rel=1e-6)
    assert out.metrics["pen_acc"] == pytest.approx(pen_acc.item())
    assert out.metrics["masked_err"] == pytest.approx(error[views[2]].mean().item(), rel=1e-5)
    assert out.metrics["masked_err"] != pytest.approx(error[x[..., 2] > 0].mean().item(), rel=1e-3)


@pytest.mark.parametrize("params, message", [
    ({"mask_ratio": 0}, "mask_ratio must be a number in \\(0, 1\\), got 0"),
    ({"mask_ratio": 1.0}, "mask_ratio must be a number in \\(0, 1\\), got 1.0"),
    ({"mask_ratio": True}, "mask_ratio must be a number in \\(0, 1\\), got True"),
    ({"mask_ratio": "0.5"}, "mask_ratio must be a number"),
    ({"mask_grid": 0}, "denoising: mask_grid must be a positive int, got 0"),
])
def test_denoising_refuses_bad_settings(params, message):
    with pytest.raises(ValueError, match=message):
        algorithms.build_algorithm("denoising", "raster", **params)


def test_denoising_needs_draws_and_defaults_per_modality():
    assert algorithms.build_algorithm("denoising", "raster").mask_ratio == 0.5
    assert algorithms.build_algorithm("denoising", "stroke").mask_ratio == 0.15
    with pytest.raises(ValueError, match="denoising: prepare needs random draws"):
        algorithms.build_algorithm("denoising", "stroke").prepare(torch.zeros(1, 100, 4), None)


# ---------------------------------------------------------------- configs
def test_generic_configs_are_checked_like_every_config():
    for name in ("cnn_simclr", "tcn_simclr", "cnn_byol", "tcn_byol", "cnn_vicreg", "tcn_vicreg", "cnn_autoencoder",
                 "tcn_autoencoder", "cnn_denoising", "tcn_denoising"):
        cfg = load_config(name)
        algorithm = build.build_algorithm(cfg)
        assert not algorithm.uses_logits and build.head_size(cfg, algorithm) == algorithms.PLACEHOLDER_OUTPUTS
        assert (cfg.train.best_metric, cfg.train.best_mode) == ("val_loss", "min")
        assert cfg.model.name == ("alexnet" if name.startswith("cnn") else "tcn")
    with pytest.raises(ConfigError, match="train.best_metric 'val_acc' is not reported by the 'simclr' algorithm "
                                          "\\(it reports val_loss, val_top1\\)"):
        build.build_algorithm(load_config("tcn_simclr", {"train.best_metric": "val_acc"}))
    with pytest.raises(ConfigError, match="algorithm: simclr: unknown parameter 'temp'"):
        build.build_algorithm(load_config("tcn_simclr", {"algorithm.params": {"temp": 0.1}}))
    with pytest.raises(ConfigError, match="algorithm: byol: stroke augmentation: unknown augmentation setting 'crop'"):
        build.build_algorithm(load_config("tcn_byol", {"algorithm.params": {"augment": {"crop": 1}}}))
    with pytest.raises(ConfigError, match="train.best_mode must be one of max, min"):
        load_config("tcn_byol", {"train.best_mode": "lowest"})
    with pytest.raises(ConfigError, match="train.views 'per_sample' .* pretext tasks only"):
        build.build_algorithm(load_config("tcn_autoencoder", {"train.views": "per_sample"}))


# ---------------------------------------------------------------- the paper's step
PAPER = ["cnn_rotation", "cnn_deform", "cnn_supervised", "tcn_rotation", "tcn_deform", "tcn_supervised"]


@pytest.mark.parametrize("name", PAPER)
def test_trainer_step_equals_a_plain_reference_step_bit_for_bit(tmp_path, name):
    """The paper's tasks through Trainer.train_step (container, prepare, forward, update)
    give exactly the weights of forward -> cross-entropy -> backward -> SGD/Adam step written
    out here, from the same initial weights, for two steps."""
    over = {"data.num_classes": 4, "data.train_per_class": 3, "data.val_per_class": 1, "train.batch_size": 4,
            "train.device": "cpu", "train.out": str(tmp_path)}
    if name.startswith("cnn"):
        over["data.image_size"] = 64
    cfg = load_config(name, over)
    trainer = Trainer(cfg, progress=False)
    model = copy.deepcopy(trainer.model)
    o = cfg.optim
    lr = o.lr_schedule[0][1]
    if o.name == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=o.momentum, nesterov=o.nesterov,
                              weight_decay=o.weight_decay)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=lr, betas=tuple(o.betas), weight_decay=o.weight_decay)
    loader, steps = trainer.train_loader(1)
    assert steps == trainer.steps_per_epoch == 3  # 12 sketches in batches of 4
    trainer.networks.train()
    model.train()
    for _, batch in zip(range(2), loader):  # the second step uses momentum / Adam state
        out, stopped = trainer.train_step(batch)
        x, y = batch
        inputs, targets = trainer.algorithm.views(x, y)
        loss = F.cross_entropy(model(inputs), targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
        assert not stopped and out.loss.item() == loss.item() and out.count == len(targets)
    for (key, got), want in zip(trainer.model.state_dict().items(), model.state_dict().values()):
        assert torch.equal(got, want), key
    assert trainer.steps_done == 2 and not trainer.networks.heads and trainer.networks.target is None
