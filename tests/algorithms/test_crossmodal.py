"""Cross-modal pretraining (issue 18): the dual model, the two cross-modal algorithms, their
runs through the trainer (SIGTERM mid-epoch and resume bit-identical; 2 gloo processes vs a
single-process reference) and the evaluation of one branch, or both fused, of a dual
checkpoint."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import models
from algorithms import (ALGORITHMS, CrossModalContrastive, CrossModalPretext, Draws, Networks, build_algorithm,
                        info_nce, info_nce_top1, rotate_raster, rotate_strokes)
from config import ConfigError, load_config
from engine import build
from engine.cli import train_main
from engine.trainer import TRAIN_DRAWS_SEED, make_optimizer
from evaluation import encoders
from evaluation.run import eval_main
from tests.engine.test_generic_training import assert_same, sigterm_on_forward
from utils.checkpoint import load_checkpoint, save_checkpoint
from utils.rng import seed_everything
from utils.sampler import EpochSampler
from utils.schedule import lr_at
from tests.common import ROOT

NAMES = ["dual_crossmodal", "dual_crossmodal_rotation"]
RESNET = {"widths": [8, 16, 16, 16], "blocks": [1, 1, 1, 1], "stem": "imagenet"}
TCN = {"embed_dim": 32, "channels": 4, "windows": [3, 5]}
# Small branches (a 32 px ResNet, a narrow TCN) so that every save and step is quick.
SMALL = {"data.train_per_class": 4, "data.val_per_class": 2, "data.num_classes": 4, "train.batch_size": 4,
         "data.image_size": 32, "eval.feature": "raster.pool",
         "model.params": {"raster": "resnet", "raster_params": RESNET, "stroke": "tcn", "stroke_params": TCN}}
HEADS = {"proj_hidden_dim": 16, "proj_dim": 8}


def settings(name: str) -> dict:
    return {**SMALL, **{f"algorithm.params.{k}": v for k, v in HEADS.items()}}


def args_for(name: str, out, epochs: int, *extra: str) -> list[str]:
    args = ["--exp", name, "--epochs", str(epochs), "--out", str(out), "--no-progress", "--device", "cpu",
            "--workers", "0"]
    for key, value in settings(name).items():
        args += ["--set", f"{key}={value}"]
    return args + list(extra)


def pair_batch(n: int = 3, size: int = 32, points: int = 12, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    raster = torch.rand(n, 1, size, size, generator=g)
    strokes = torch.zeros(n, 20, 4)
    strokes[:, :points, :2] = torch.rand(n, points, 2, generator=g)
    strokes[:, :points, 2] = 1
    strokes[:, points - 1, 2:] = torch.tensor([0.0, 1.0])
    return raster, strokes


# ---------------------------------------------------------------- the model
def test_dual_model_features_are_its_branches_features():
    torch.manual_seed(0)
    dual = models.build_model("dual", 3, raster="resnet", raster_params=RESNET, stroke="tcn", stroke_params=TCN)
    assert dual.modality == "paired" and dual.default_feature == "raster.pool"
    assert dual.feature_names == tuple(f"raster.{n}" for n in dual.raster.feature_names) + tuple(
        f"stroke.{n}" for n in dual.stroke.feature_names)
    # the raster entries of the state dict are the plain raster model's, prefix removed
    plain = models.build_model("resnet", 3, **RESNET)
    plain.load_state_dict({k[len("raster."):]: v for k, v in dual.state_dict().items() if k.startswith("raster.")})
    dual.eval(), plain.eval()
    raster, strokes = pair_batch()
    h_r, h_s = dual((raster, strokes), ["raster.pool", "stroke.fc"])
    assert torch.equal(h_r, plain(raster, "pool")) and torch.equal(h_s, dual.stroke(strokes, "fc"))
    logits = dual((raster, strokes))
    assert [t.shape for t in logits] == [(3, 3), (3, 3)]
    with pytest.raises(ValueError, match="unknown feature 'fc'"):
        dual((raster, strokes), "fc")
    with pytest.raises(ValueError, match="raster must name a raster model"):
        models.build_model("dual", 3, raster="tcn")


def test_paired_config_checks(tmp_path, capsys):
    assert train_main("cnn", ["--exp", "dual_crossmodal", "--out", str(tmp_path)]) == 2
    assert "is a DUAL experiment; run it with train_dual.py" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="DUAL experiment but data.modality is 'raster'"):
        load_config("dual_crossmodal", {"data.modality": "raster"})
    cfg = load_config("dual_crossmodal", {"model.params": {"raster": "alexnet"}, "data.image_size": 32})
    with pytest.raises(ConfigError, match="raster branch 'alexnet' needs rasters of at least"):
        build.build_model(cfg, 1)
    with pytest.raises(ConfigError, match="modality must be one of \\['raster', 'stroke'\\]"):
        build.build_algorithm(load_config("dual_crossmodal", {"algorithm.name": "rotation", "algorithm.params": {}}))
    with pytest.raises(ConfigError, match="modality must be one of \\['paired'\\]"):
        build.build_algorithm(load_config("cnn_rotation", {"algorithm.name": "crossmodal_contrastive"}))
    cfg = load_config("dual_crossmodal", {**SMALL, "algorithm.params.stroke_feature": "pool_x"})
    alg = build.build_algorithm(cfg)
    with pytest.raises(ConfigError, match="stroke_feature 'pool_x' is not a layer of the stroke model 'tcn'"):
        build.build_networks(cfg, alg, build.build_model(cfg, 1))


# ---------------------------------------------------------------- the contrastive loss
class Fixed(nn.Module):
    """An "encoder" that returns given features of each branch, whatever the input."""

    def __init__(self, h_r: torch.Tensor, h_s: torch.Tensor) -> None:
        super().__init__()
        self.h = {"raster.f": h_r, "stroke.f": h_s}

    def forward(self, x, keys):
        return [self.h[k] for k in keys]


def contrastive_nets(h_r, h_s, temperature):
    alg = build_algorithm("crossmodal_contrastive", "paired", temperature=temperature)
    alg.features = ("raster.f", "stroke.f")
    heads = nn.ModuleDict({"raster_projector": nn.Identity(), "stroke_projector": nn.Identity()})
    return alg, Networks(alg, Fixed(h_r, h_s), heads)


def test_contrastive_loss_on_a_hand_computed_two_by_two_case():
    # raster embeddings (1, 0), (0, 1); stroke embeddings (1, 0), (3, 4) (norm 5: cos 0.6 / 0.8)
    h_r, h_s = torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[1.0, 0.0], [3.0, 4.0]])
    t = 0.5
    alg, nets = contrastive_nets(h_r, h_s, t)
    out = nets((torch.zeros(2, 1, 4, 4), torch.zeros(2, 5, 4)))
    # cosines: s(r1, s1) = 1, s(r1, s2) = 0.6, s(r2, s1) = 0, s(r2, s2) = 0.8; each anchor's
    # loss is log(1 + exp(-(s_pos - s_neg) / t))
    r_to_s = [math.log1p(math.exp(-(1 - 0.6) / t)), math.log1p(math.exp(-(0.8 - 0) / t))]
    s_to_r = [math.log1p(math.exp(-(1 - 0) / t)), math.log1p(math.exp(-(0.8 - 0.6) / t))]
    assert out.loss.item() == pytest.approx((sum(r_to_s) + sum(s_to_r)) / 4, rel=1e-6)
    assert out.count == 2 and out.metrics["top1"] == 1.0  # every anchor's pair is its nearest
    # the other way round: a stroke row that is closer to the other raster lowers top1
    _, nets = contrastive_nets(h_r, torch.tensor([[0.0, 1.0], [3.0, 4.0]]), t)
    assert nets((None, None)).metrics["top1"] == 0.25  # only s2's nearest raster is its own


def test_contrastive_loss_and_top1_match_a_naive_loop_on_random_embeddings():
    g = torch.Generator().manual_seed(1)
    h_r, h_s = torch.randn(7, 5, generator=g, dtype=torch.float64), torch.randn(7, 5, generator=g, dtype=torch.float64)
    t = 0.3
    _, nets = contrastive_nets(h_r, h_s, t)
    out = nets((None, None))
    cos = lambda u, v: float(u @ v / (u.norm() * v.norm()))  # noqa: E731
    total, hits = 0.0, 0
    for anchors, others in ((h_r, h_s), (h_s, h_r)):
        for i in range(7):
            sims = [cos(anchors[i], others[j]) for j in range(7)]
            total += -sims[i] / t + math.log(sum(math.exp(s / t) for s in sims))
            hits += max(range(7), key=lambda j: sims[j]) == i
    assert out.loss.item() == pytest.approx(total / 14, rel=1e-5)
    assert out.metrics["top1"] == pytest.approx(hits / 14)
    assert info_nce_top1(h_r, h_s) == pytest.approx(hits / 14)
    # positives are the rows of one sketch: shuffling one side changes the loss
    _, shuffled = contrastive_nets(h_r, h_s[torch.tensor([1, 0, 2, 3, 4, 5, 6])], t)
    assert shuffled((None, None)).loss.item() != pytest.approx(out.loss.item(), rel=1e-4)


def test_contrastive_augments_each_side_only_when_asked():
    raster, strokes = pair_batch()
    plain = CrossModalContrastive("paired")
    assert not plain.randomized
    r, s = plain.prepare((raster, strokes), None, None)
    assert torch.equal(r, raster) and torch.equal(s, strokes)
    only_strokes = CrossModalContrastive("paired", stroke_augment={})
    r, s = only_strokes.prepare((raster, strokes), None, Draws(torch.Generator().manual_seed(0)))
    assert torch.equal(r, raster) and not torch.equal(s, strokes)
    with pytest.raises(ValueError, match="prepare needs random draws"):
        only_strokes.prepare((raster, strokes), None, None)
    with pytest.raises(ValueError, match="raster_augment: "):
        CrossModalContrastive("paired", raster_augment={"nope": 1})


def test_pretext_rotates_both_forms_alike_and_adds_the_weighted_cross_term():
    raster, strokes = pair_batch(n=2)
    alg = CrossModalPretext("paired", task="rotation", cross_weight=0.5, temperature=0.2)
    rv, sv, rt, st = alg.prepare((raster, strokes), None)
    assert torch.equal(rt, st) and rt.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    for k in range(4):  # row i of both views: the same sketch under the same turn
        assert torch.equal(rv[2 * k:2 * k + 2], rotate_raster(raster, k))
        assert torch.equal(sv[2 * k:2 * k + 2], rotate_strokes(strokes, k))
    cfg = load_config("dual_crossmodal_rotation", {**SMALL, "algorithm.params": {
        "cross_weight": 0.5, "temperature": 0.2, **HEADS}})
    torch.manual_seed(0)
    alg = build.build_algorithm(cfg)
    nets = build.build_networks(cfg, alg, build.build_model(cfg, build.head_size(cfg, alg))).eval()
    out = nets(alg.prepare((raster, strokes), None))
    logits_r, logits_s, h_r, h_s = nets.encoder((rv, sv), ["raster.classifier", "stroke.classifier",
                                                           "raster.pool", "stroke.fc"])
    z_r, z_s = nets.heads["raster_projector"](h_r), nets.heads["stroke_projector"](h_s)
    want = F.cross_entropy(logits_r, rt) + F.cross_entropy(logits_s, st) + 0.5 * info_nce(z_r, z_s, 0.2)
    assert out.loss.item() == pytest.approx(want.item(), rel=1e-5)
    assert out.count == 8 and set(out.metrics) == set(alg.metric_names)
    # weight 0: the two paper tasks in one run, no projectors
    none = CrossModalPretext("paired", cross_weight=0)
    cfg0 = load_config("dual_crossmodal_rotation", {**SMALL, "algorithm.params": {"cross_weight": 0}})
    nets0 = build.build_networks(cfg0, none, build.build_model(cfg0, 4))
    assert len(nets0.heads) == 0
    with pytest.raises(ValueError, match="task must be one of"):
        CrossModalPretext("paired", task="jigsaw")
    deform = CrossModalPretext("paired", task="deformation")
    assert deform.num_outputs(10) == 2


def test_pretext_with_deformation_is_one_config_away():
    cfg = load_config("dual_crossmodal_rotation", {**SMALL, "model.num_classes": 2, "algorithm.params": {
        "task": "deformation", "task_params": {"module": "released"}, **HEADS}})
    torch.manual_seed(0)
    alg = build.build_algorithm(cfg)
    nets = build.build_networks(cfg, alg, build.build_model(cfg, build.head_size(cfg, alg))).train()
    raster, strokes = pair_batch(n=3)
    rv, sv, rt, st = views = alg.prepare((raster, strokes), None)
    assert rv.shape[0] == sv.shape[0] == 6 and torch.equal(rt, st) and rt.tolist() == [0] * 3 + [1] * 3
    out = nets(views)
    assert torch.isfinite(out.loss) and out.count == 6
    with pytest.raises(ConfigError, match="model.num_classes is 4 but the 'crossmodal_pretext' task has 2 outputs"):
        build.head_size(load_config("dual_crossmodal_rotation", {"algorithm.params.task": "deformation"}))


def test_algorithm_table_holds_the_cross_modal_methods():
    assert ALGORITHMS["crossmodal_contrastive"] is CrossModalContrastive
    assert ALGORITHMS["crossmodal_pretext"] is CrossModalPretext


# ---------------------------------------------------------------- through the trainer
@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_sigterm_mid_epoch_then_resume_is_bit_identical(tmp_path, monkeypatch, capsys, name):
    assert train_main("dual", args_for(name, tmp_path / "straight", 2)) == 0
    straight = load_checkpoint(tmp_path / "straight" / name / "last.pt")
    assert {k.split(".")[0] for k in straight["model"]} == {"raster", "stroke"}  # both branches ...
    assert {k.split(".")[0] for k in straight["algorithm"]["heads"]} == {"raster_projector", "stroke_projector"}
    # 4 steps per epoch: stop in epoch 2 after its second step
    sigterm_on_forward(monkeypatch, 6)
    assert train_main("dual", args_for(name, tmp_path / "stopped", 2)) == 143
    assert "stopped at epoch 2 step 2" in capsys.readouterr().err
    saved = load_checkpoint(tmp_path / "stopped" / name / "last.pt")
    assert (saved["epoch"], saved["step"]) == (1, 2)
    monkeypatch.undo()
    assert train_main("dual", args_for(name, tmp_path / "stopped", 2, "--resume")) == 0
    assert_same(load_checkpoint(tmp_path / "stopped" / name / "last.pt"), straight)


def reference_run(cfg, world: int = 2, local_negatives: bool = False):
    """One process doing what ``world`` DDP processes with per-process batch norm do (see
    tests/engine/test_generic_training.py): each rank's rows through the networks with rank 0's
    buffers kept, then one InfoNCE over the projections of all ranks (``local_negatives``:
    the mean of per-rank InfoNCE instead)."""
    seed_everything(cfg.train.seed)
    algorithm = build.build_algorithm(cfg)
    model = build.build_model(cfg, build.head_size(cfg, algorithm))
    nets = build.build_networks(cfg, algorithm, model)
    optimizer = make_optimizer(cfg, nets.trainable_parameters())
    gen = torch.Generator().manual_seed(cfg.train.seed + TRAIN_DRAWS_SEED)
    train_set = build.build_dataset(cfg, "train")
    b = cfg.train.batch_size // world
    steps = EpochSampler(len(train_set), cfg.train.batch_size, seed=0, epoch=1).num_steps
    losses = []
    for epoch in range(1, cfg.train.epochs + 1):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(cfg.optim.lr_schedule, epoch)
        nets.train()
        shares = [list(EpochSampler(len(train_set), cfg.train.batch_size, seed=cfg.train.seed, epoch=epoch,
                                    rank=r, world_size=world)) for r in range(world)]
        loss_sum, count = 0.0, 0
        for step in range(steps):
            optimizer.zero_grad()
            kept = {k: v.clone() for k, v in nets.named_buffers()}
            z = {}
            for rank in reversed(range(world)):  # rank 0 last: its statistics are kept
                for module_name, module in nets.named_modules():
                    for k, v in module._buffers.items():
                        if v is not None:
                            module._buffers[k] = kept[f"{module_name}.{k}" if module_name else k].clone()
                idx = shares[rank][step * b:(step + 1) * b]
                pair, _ = torch.utils.data.default_collate([train_set[i] for i in idx])
                r, s = algorithm.prepare(pair, None, Draws(gen, rank, world))
                h_r, h_s = nets.encoder((r, s), list(algorithm.features))
                z[rank] = (nets.heads["raster_projector"](h_r).float(), nets.heads["stroke_projector"](h_s).float())
            if local_negatives:
                parts = [info_nce(*z[r], algorithm.temperature) for r in range(world)]
                loss = sum(parts) / world
                loss_sum += sum(p.item() for p in parts) * b
            else:
                loss = info_nce(torch.cat([z[r][0] for r in range(world)]), torch.cat([z[r][1] for r in range(world)]),
                                algorithm.temperature)
                loss_sum += loss.item() * b * world
            count += b * world
            loss.backward()
            optimizer.step()
        losses.append(loss_sum / count)
    return nets, losses


@pytest.mark.slow
def test_torchrun_two_processes_match_the_single_process_reference(tmp_path):
    name = "dual_crossmodal"
    args = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
            "train_dual.py"] + args_for(name, tmp_path, 2)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    saved = load_checkpoint(tmp_path / name / "last.pt")
    assert saved["world_size"] == 2
    records = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]

    cfg = load_config(name, {**settings(name), "train.epochs": 2, "train.device": "cpu"})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        nets, losses = reference_run(cfg)
        other = reference_run(cfg, local_negatives=True)[0]
    finally:
        torch.set_num_threads(threads)

    def close(reference) -> bool:
        got = {**{f"encoder.{k}": v for k, v in saved["model"].items()},
               **{f"heads.{k}": v for k, v in saved["algorithm"]["heads"].items()}}
        want = reference.state_dict()
        assert set(got) == set(want)
        return all(torch.allclose(got[k], v, rtol=1e-4, atol=1e-5) if v.is_floating_point() else torch.equal(got[k], v)
                   for k, v in want.items())

    assert close(nets)
    for record, loss in zip(records, losses):
        assert record["train_loss"] == pytest.approx(loss, rel=1e-5)
    assert not close(other)  # negatives from one process only would train other networks


# ---------------------------------------------------------------- evaluation
def plain_checkpoint(dual_state: dict, branch: str, path: Path) -> Path:
    """The branch's weights in an ordinary single-branch checkpoint, its config written
    from the single-branch experiment (not derived from the dual config)."""
    exp, model, params = (("cnn_rotation", "resnet", RESNET) if branch == "raster" else ("tcn_rotation", "tcn", TCN))
    data = dual_state["config"]["data"]
    cfg = load_config(exp, {"model.name": model, "model.params": params, "data.image_size": data["image_size"],
                            **{f"data.{k}": data[k] for k in ("num_classes", "query_per_class", "gallery_per_class")},
                            "eval.feature": None})
    prefix = f"{branch}."
    state = {**dual_state, "config": cfg.to_dict(),
             "model": {k[len(prefix):]: v for k, v in dual_state["model"].items() if k.startswith(prefix)}}
    save_checkpoint(state, path)
    return path


@pytest.mark.slow
def test_eval_reads_either_branch_or_both_fused_from_one_checkpoint(tmp_path):
    name = "dual_crossmodal_rotation"
    assert train_main("dual", args_for(name, tmp_path, 1)) == 0
    ckpt = tmp_path / name / "best.pt"
    state = load_checkpoint(ckpt)
    plain = {b: plain_checkpoint(state, b, tmp_path / f"plain_{b}.pt") for b in ("raster", "stroke")}
    common = ["--no-progress", "--device", "cpu", "--topk", "1", "3", "--no-pictures", "--knn-k", "0"]

    def rows(*argv: str) -> list[dict]:
        out = tmp_path / f"r{len(list(tmp_path.glob('r*.json')))}.json"
        assert eval_main([*argv, *common, "--json", str(out)]) == 0
        return json.loads(out.read_text())["results"]

    raster = rows("--ckpt", str(ckpt), "--layer", "raster.pool")
    stroke = rows("--ckpt", str(ckpt), "--layer", "stroke.fc")
    default = rows("--ckpt", str(ckpt))  # eval.feature: raster.pool
    fused = rows("--fuse", f"{ckpt}:raster.pool", f"{ckpt}:stroke.fc")
    plain_raster = rows("--ckpt", str(plain["raster"]), "--layer", "pool")
    plain_stroke = rows("--ckpt", str(plain["stroke"]), "--layer", "fc")
    plain_fused = rows("--fuse", f"{plain['raster']}:pool", f"{plain['stroke']}:fc")
    queries, gallery = 4 * 10, 4 * 50  # synthetic defaults: 10 queries and 50 gallery sketches per class
    for r in raster + stroke + fused:
        assert (r["num_queries"], r["gallery_size"]) == (queries, gallery)
    assert (raster[0]["feature_dim"], stroke[0]["feature_dim"], fused[0]["feature_dim"]) == (16, 32, 48)
    assert raster[0]["model"].startswith(f"{name} [raster]") and stroke[0]["model"].startswith(f"{name} [stroke]")
    assert fused[0]["model"].startswith(f"fused {name} [raster] + {name} [stroke]")
    # a branch alone is exactly the same weights in a plain single-branch encoder
    for mine, theirs in ((raster, plain_raster), (stroke, plain_stroke), (fused, plain_fused), (default, plain_raster)):
        assert mine[0]["mAP"] == theirs[0]["mAP"] and mine[0]["P@3"] == theirs[0]["P@3"]
    assert raster[0]["mAP"] != stroke[0]["mAP"]
    # the encoder of a branch is that branch's model
    enc = encoders.load_encoder(ckpt, layer="stroke.fc")
    assert (enc.branch, enc.cfg.model.name, enc.cfg.data.modality, enc.layer) == ("stroke", "tcn", "stroke", "fc")
    with pytest.raises(ConfigError, match="names no branch of this dual checkpoint"):
        encoders.load_encoder(ckpt, layer="fc")
