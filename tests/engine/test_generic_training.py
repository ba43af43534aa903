"""The generic methods through the whole trainer: stopped mid-epoch by SIGTERM and resumed,
every one ends bit-identical to an uninterrupted run (encoder, heads, BYOL's target, the
augmentations' generator, optimiser, history); under torchrun (2 gloo processes) each
matches a single-process reference of what DDP computes, SimCLR's negatives are the global
batch's and VICReg's variance and covariance are the global batch's (a reference with
per-process negatives or statistics ends elsewhere)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
import torch

from algorithms import Draws, nt_xent, vicreg_loss
from config import load_config
from engine import build
from engine.cli import train_main
from engine.trainer import TRAIN_DRAWS_SEED, make_optimizer
from tests.common import ROOT
from utils.checkpoint import load_checkpoint
from utils.rng import seed_everything
from utils.sampler import EpochSampler
from utils.schedule import lr_at

DATA = {"data.train_per_class": 4, "data.val_per_class": 2, "data.num_classes": 4, "train.batch_size": 4}
TCN = {"model.params": {"embed_dim": 32, "channels": 4, "windows": [3, 5]}}
# The raster branch on a small ResNet at 32 px (AlexNet's 57 M weights make each save seconds).
CNN = {"model.name": "resnet", "eval.feature": "pool", "data.image_size": 32,
       "model.params": {"widths": [8, 16, 16, 16], "blocks": [1, 1, 1, 1], "stem": "imagenet"}}
HEADS = {
    "simclr": {"proj_hidden_dim": 16, "proj_dim": 8},
    "byol": {"proj_hidden_dim": 16, "proj_dim": 8, "pred_hidden_dim": 16, "momentum": 0.9},
    "vicreg": {"proj_hidden_dim": 16, "proj_dim": 8, "proj_layers": 3},
    "autoencoder": {"decoder_hidden_dim": 16, "decoder_width": 16, "recon_size": 8},
    "denoising": {"decoder_hidden_dim": 16, "decoder_width": 16, "recon_size": 8},
}
NAMES = [f"{b}_{m}" for m in ("simclr", "byol", "vicreg", "autoencoder", "denoising") for b in ("tcn", "cnn")]
# Methods that see each sketch once per step (the others see two views of it).
ONE_VIEW = ("autoencoder", "denoising")
# Methods whose loss reads the gathered global batch under torchrun (not a mean of per-rank losses).
GLOBAL_BATCH = {"simclr": "projector", "vicreg": "expander"}


def settings(name: str) -> dict:
    method = name.split("_", 1)[1]
    heads = dict(HEADS[method])
    if method in ONE_VIEW:  # each branch's decoder takes its own settings
        keep = ("recon_size", "decoder_width") if name.startswith("cnn") else ("decoder_hidden_dim",)
        heads = {k: v for k, v in heads.items() if k in keep}
    return {**DATA, **(CNN if name.startswith("cnn") else TCN), "algorithm.params": heads}


def args_for(name: str, out, epochs: int, *extra: str) -> list[str]:
    args = ["--exp", name, "--epochs", str(epochs), "--out", str(out), "--no-progress", "--device", "cpu",
            "--workers", "0"]
    for key, value in settings(name).items():
        args += ["--set", f"{key}={value}"]
    return args + list(extra)


def sigterm_on_forward(monkeypatch, call: int) -> None:
    """SIGTERM to this process from inside the ``call``-th training forward pass."""
    real_build = build.build_algorithm

    def build_algorithm(cfg):
        algorithm = real_build(cfg)
        real_forward, seen = algorithm.forward, [0]

        def forward(nets, views):
            out = real_forward(nets, views)
            if nets.training:
                seen[0] += 1
                if seen[0] == call:
                    os.kill(os.getpid(), signal.SIGTERM)
            return out

        algorithm.forward = forward
        return algorithm

    monkeypatch.setattr(build, "build_algorithm", build_algorithm)


def assert_same(a: dict, b: dict) -> None:
    for part in ("model",):
        for key, value in a[part].items():
            assert torch.equal(value, b[part][key]), (part, key)
    for part in ("heads", "target"):
        x, y = a["algorithm"][part], b["algorithm"][part]
        assert (x is None) == (y is None), part
        for key, value in (x or {}).items():
            assert torch.equal(value, y[key]), (part, key)
    for index, entry in a["optimizer"]["state"].items():
        for key, value in entry.items():
            other = b["optimizer"]["state"][index][key]
            assert torch.equal(value, other) if torch.is_tensor(value) else value == other, (index, key)
    assert torch.equal(a["rng"]["draws"], b["rng"]["draws"])
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]  # noqa: E731
    assert strip(a["history"]) == strip(b["history"])
    assert (a["best_value"], a["best_epoch"]) == (b["best_value"], b["best_epoch"])


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_sigterm_mid_epoch_then_resume_is_bit_identical(tmp_path, monkeypatch, capsys, name):
    branch = name[:3]
    assert train_main(branch, args_for(name, tmp_path / "straight", 2)) == 0
    straight = load_checkpoint(tmp_path / "straight" / name / "last.pt")
    assert straight["algorithm"]["heads"]  # the heads are in the checkpoint ...
    assert (straight["algorithm"]["target"] is not None) == name.endswith("byol")  # ... and BYOL's target
    # 4 steps per epoch: stop in epoch 2 after its second step
    sigterm_on_forward(monkeypatch, 6)
    assert train_main(branch, args_for(name, tmp_path / "stopped", 2)) == 143
    assert "stopped at epoch 2 step 2" in capsys.readouterr().err
    saved = load_checkpoint(tmp_path / "stopped" / name / "last.pt")
    assert (saved["epoch"], saved["step"]) == (1, 2)
    monkeypatch.undo()
    assert train_main(branch, args_for(name, tmp_path / "stopped", 2, "--resume")) == 0
    assert_same(load_checkpoint(tmp_path / "stopped" / name / "last.pt"), straight)
    # the metric that picks best.pt is the method's own validation loss
    history = straight["history"]
    assert straight["best_metric"] == "val_loss" and straight["best_value"] == min(r["val_loss"] for r in history)


# ---------------------------------------------------------------- torchrun
def embedding_loss(algorithm, z1, z2):
    """The loss of a GLOBAL_BATCH method from its loss function (each tested against a
    naive loop), not through the algorithm's forward."""
    if algorithm.name == "simclr":
        return nt_xent(z1, z2, algorithm.temperature)
    return vicreg_loss(z1, z2, algorithm.sim_coeff, algorithm.std_coeff, algorithm.cov_coeff)


def reference_run(cfg, world: int = 2, local_negatives: bool = False):
    """One process doing what ``world`` DDP processes with per-process batch norm do: each
    rank's rows through the networks with rank 0's buffers kept; augmentations drawn for the
    global batch from the run's generator, each rank keeping its rows; the gradient of the
    mean of the ranks' losses, except SimCLR and VICReg, whose one loss is over the
    gathered global batch (``local_negatives``: the mean of per-rank losses instead)."""
    seed_everything(cfg.train.seed)
    algorithm = build.build_algorithm(cfg)
    model = build.build_model(cfg, build.head_size(cfg, algorithm))
    nets = build.build_networks(cfg, algorithm, model)
    optimizer = make_optimizer(cfg, nets.trainable_parameters())
    gen = torch.Generator().manual_seed(cfg.train.seed + TRAIN_DRAWS_SEED)
    train_set = build.build_dataset(cfg, "train")
    b = cfg.train.batch_size // world
    steps = EpochSampler(len(train_set), cfg.train.batch_size, seed=0, epoch=1).num_steps
    total, done, losses = cfg.train.epochs * steps, 0, []
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
            state = gen.get_state()
            outputs = {}
            for rank in reversed(range(world)):  # rank 0 last: its statistics are kept
                # Fresh buffer tensors (not an in-place copy: batch norm's backward reads the
                # running statistics the earlier rank's forward pass saw).
                for module_name, module in nets.named_modules():
                    for k, v in module._buffers.items():
                        if v is not None:
                            module._buffers[k] = kept[f"{module_name}.{k}" if module_name else k].clone()
                gen.set_state(state)
                idx = shares[rank][step * b:(step + 1) * b]
                x = torch.stack([train_set[i][0] for i in idx])
                y = torch.tensor([train_set[i][1] for i in idx])
                views = algorithm.prepare(x, y, Draws(gen, rank, world))
                if algorithm.name in GLOBAL_BATCH:
                    v1, v2 = views
                    head = nets.heads[GLOBAL_BATCH[algorithm.name]]
                    z = head(algorithm.encode(nets.encoder, torch.cat([v1, v2])))
                    outputs[rank] = (z[:b], z[b:])
                else:
                    outputs[rank] = nets(views)
            if algorithm.name in GLOBAL_BATCH and not local_negatives:
                z1 = torch.cat([outputs[r][0] for r in range(world)])
                z2 = torch.cat([outputs[r][1] for r in range(world)])
                loss = embedding_loss(algorithm, z1, z2)
                loss_sum += loss.item() * 2 * b * world
            elif algorithm.name in GLOBAL_BATCH:
                parts = [embedding_loss(algorithm, *outputs[r]) for r in range(world)]
                loss = sum(parts) / world
                loss_sum += sum(p.item() for p in parts) * 2 * b
            else:
                loss = sum(outputs[r].loss for r in range(world)) / world
                loss_sum += sum(outputs[r].loss.item() * outputs[r].count for r in range(world))
            count += sum(b if algorithm.name in ONE_VIEW else 2 * b for _ in range(world))
            loss.backward()
            optimizer.step()
            algorithm.after_step(nets, done, total)
            done += 1
        losses.append(loss_sum / count)
    return nets, losses


@pytest.mark.slow
@pytest.mark.parametrize("name", ["tcn_simclr", "tcn_byol", "tcn_vicreg", "tcn_autoencoder", "tcn_denoising"])
def test_torchrun_two_processes_match_the_single_process_reference(tmp_path, name):
    args = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
            "train_tcn.py"] + args_for(name, tmp_path, 2)
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
        other = reference_run(cfg, local_negatives=True)[0] if name[4:] in GLOBAL_BATCH else None
    finally:
        torch.set_num_threads(threads)

    def close(reference) -> bool:
        got = {**{f"encoder.{k}": v for k, v in saved["model"].items()},
               **{f"heads.{k}": v for k, v in saved["algorithm"]["heads"].items()},
               **{f"target.{k}": v for k, v in (saved["algorithm"]["target"] or {}).items()}}
        want = reference.state_dict()
        assert set(got) == set(want)
        return all(torch.allclose(got[k], v, rtol=1e-4, atol=1e-5) if v.is_floating_point() else torch.equal(got[k], v)
                   for k, v in want.items())

    assert close(nets)
    for record, loss in zip(records, losses):
        assert record["train_loss"] == pytest.approx(loss, rel=1e-5)
    if other is not None:
        assert not close(other)  # negatives / statistics from one process only train another network


@pytest.mark.parametrize("batch, warned", [(4, True), (8, False)])
def test_vicreg_warns_before_training_on_batches_measured_to_diverge(tmp_path, capsys, batch, warned):
    from engine.trainer import Trainer
    cfg = load_config("tcn_vicreg", {**settings("tcn_vicreg"), "train.batch_size": batch, "train.device": "cpu",
                                     "train.out": str(tmp_path)})
    Trainer(cfg, resume=False, progress=False)
    err = capsys.readouterr().err
    expected = f"warning: vicreg with {batch} sketches a step: with 2 or 4 its covariance penalty made the CNN's SGD diverge"
    assert (expected in err) is warned, err
    # The other methods have no such limit.
    assert build.build_algorithm(load_config("tcn_simclr")).batch_warning(2) is None
