"""The shared trainer end to end on tiny synthetic data: every experiment learns, resume
continues where it stopped, and user mistakes are one-line errors before training."""

import json

import pytest
import torch

from algorithms import Draws
from config import available_experiments, load_config
from engine import build
from engine.cli import train_main
from engine.trainer import Trainer, make_optimizer
from evaluation.run import eval_main
from tests.common import TINY, tiny_args
from utils.checkpoint import load_checkpoint


def algorithm_name(experiment: str) -> str:
    return load_config(experiment).algorithm.name


@pytest.mark.parametrize("name", sorted(available_experiments()))
def test_a_few_steps_on_one_fixed_batch_of_two_lower_the_loss(name):
    # Every experiment, through the algorithm's own step: views (or one fixed draw of
    # augmentations) made once, the networks container (encoder + heads + target), its
    # optimiser, the post-step update (BYOL's EMA target).
    torch.manual_seed(0)
    # The generic methods' CNN configs at 64 px and 3 steps: the paper's tasks cover 224 px
    # here, and each step of theirs moves AlexNet's 57 M weights plus the heads (and BYOL's
    # target copy), seconds on 2 cores.
    generic_cnn = name.startswith("cnn_") and not build.build_algorithm(load_config(name)).uses_logits
    # The dual (CNN + TCN) configs likewise: AlexNet-BN at 64 px beside the TCN.
    small = {"data.image_size": 64} if generic_cnn or name.startswith("dual_") else {}
    steps = 3 if small else 6
    # VICReg's variance and covariance need more than two rows: a 2048-d covariance of 2
    # (or 4) rows has rank 1 (3), its penalty starts near 76 (21) and the CNN's SGD at lr
    # 0.01 diverges; with 8 rows the loss first rises for two steps as the covariance
    # penalty grows, then descends (measured; docs/TRAINING.md), so it gets 6 steps.
    batch = 8 if algorithm_name(name) == "vicreg" else 2
    steps = 6 if batch == 8 else steps
    cfg = load_config(name, {**TINY, "train.batch_size": batch, "train.device": "cpu", **small})
    algorithm = build.build_algorithm(cfg)
    model = build.build_model(cfg, build.head_size(cfg, algorithm))
    nets = build.build_networks(cfg, algorithm, model)
    dataset = build.build_dataset(cfg, "train")
    # a loader's batch (a paired dataset's: SketchPair(rasters, strokes))
    x, y = torch.utils.data.default_collate([dataset[i] for i in range(batch)])
    opt = make_optimizer(cfg, nets.trainable_parameters())
    nets.train()
    views = algorithm.prepare(x, y, Draws(torch.Generator().manual_seed(0)))
    losses = []
    for step in range(steps):
        loss = nets(views).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        algorithm.after_step(nets, step, steps)
        losses.append(loss.item())
    final = nets(views).loss.item()
    assert final < losses[0], f"{name}: loss went {losses[0]:.4f} -> {final:.4f}"


def test_resume_continues_at_epoch_two_with_optimizer_state(tmp_path):
    # One epoch, then --epochs 2 --resume ...
    assert train_main("cnn", ["--exp", "cnn_rotation", "--epochs", "1"] + tiny_args(tmp_path / "a")) == 0
    first = load_checkpoint(tmp_path / "a" / "cnn_rotation" / "last.pt")
    assert first["epoch"] == 1
    momentum = [s["momentum_buffer"] for s in first["optimizer"]["state"].values()]
    assert momentum and all(m is not None for m in momentum)

    cfg = load_config("cnn_rotation", {**TINY, "train.epochs": 2, "train.out": str(tmp_path / "a"), "train.device": "cpu"})
    resumed = Trainer(cfg, resume=True, progress=False)
    assert resumed.start_epoch == 2
    restored = [s["momentum_buffer"] for s in resumed.optimizer.state_dict()["state"].values()]
    assert all(torch.equal(a, b) for a, b in zip(momentum, restored))

    assert train_main("cnn", ["--exp", "cnn_rotation", "--epochs", "2", "--resume"] + tiny_args(tmp_path / "a")) == 0
    second = load_checkpoint(tmp_path / "a" / "cnn_rotation" / "last.pt")
    assert second["epoch"] == 2
    assert [h["epoch"] for h in second["history"]] == [1, 2]
    lines = (tmp_path / "a" / "cnn_rotation" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]

    # ... ends with exactly the weights of two epochs straight (optimizer state, LR table and
    # data order were all restored; a fresh optimizer would differ through momentum).
    assert train_main("cnn", ["--exp", "cnn_rotation", "--epochs", "2"] + tiny_args(tmp_path / "b")) == 0
    straight = load_checkpoint(tmp_path / "b" / "cnn_rotation" / "last.pt")
    for key, value in straight["model"].items():
        assert torch.equal(value, second["model"][key]), key


def test_run_folder_holds_config_checkpoints_and_logs(tmp_path):
    assert train_main("tcn", ["--exp", "tcn_deform", "--epochs", "2"] + tiny_args(tmp_path)) == 0
    run = tmp_path / "tcn_deform"
    saved = json.loads((run / "config.json").read_text())
    assert saved["model"]["name"] == "tcn" and saved["train"]["epochs"] == 2
    best = load_checkpoint(run / "best.pt")
    last = load_checkpoint(run / "last.pt")
    assert best["best_value"] == max(h["val_acc"] for h in last["history"]) and best["best_metric"] == "val_acc"
    assert {"model", "optimizer", "epoch", "rng", "config"} <= set(last)
    assert list((run / "tensorboard").iterdir())


def test_eval_prints_pretrained_and_random_rows(tmp_path, capsys):
    assert train_main("tcn", ["--exp", "tcn_rotation", "--epochs", "1"] + tiny_args(tmp_path)) == 0
    ckpt = tmp_path / "tcn_rotation" / "best.pt"
    out_json = tmp_path / "res.json"
    assert eval_main(["--ckpt", str(ckpt), "--random-baseline", "--no-progress", "--device", "cpu",
                      "--topk", "1", "3", "--json", str(out_json)]) == 0
    rows = json.loads(out_json.read_text())["results"]
    assert [r["model"].split(" ")[0] for r in rows] == ["tcn_rotation", "random"]
    for r in rows:
        assert 0.0 <= r["mAP"] <= 1.0 and r["layer"] == "fc" and r["feature_dim"] == 4096
        assert r["num_queries"] == 8 and r["gallery_size"] == 12
    assert "| tcn_rotation (epoch 1) | fc | 4096 |" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--exp", "tcn_deform"], "is a TCN experiment; run it with train_tcn.py"),
        (["--exp", "nope"], "unknown experiment 'nope'"),
        (["--exp", "cnn_rotation", "--set", "model.num_classes=2"],
         "model.num_classes is 2 but the 'rotation' task has 4 outputs"),
        (["--exp", "cnn_rotation", "--set", "model.name='vgg'"], "model.name 'vgg' is unknown"),
        (["--exp", "cnn_rotation", "--data", "/no/such/dir"], "data path /no/such/dir does not exist"),
        (["--exp", "cnn_rotation", "--resume"], "no checkpoint to resume from"),
        (["--exp", "cnn_rotation", "--set", "train.epochz=1"], "unknown key 'epochz'"),
    ],
)
def test_user_errors_are_one_line_before_training(tmp_path, capsys, argv, message):
    assert train_main("cnn", argv + ["--out", str(tmp_path), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "cnn_rotation" / "last.pt").exists()


def test_cuda_requested_without_cuda_is_an_error(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA; the error path cannot be reached")
    assert train_main("cnn", ["--exp", "cnn_rotation", "--device", "cuda", "--out", str(tmp_path)]) == 2
    assert "no usable CUDA device" in capsys.readouterr().err


def test_train_threads_sets_the_process_threads_and_the_demo_fixes_two(tmp_path):
    # The quick start's numbers must not depend on the machine's core count (README).
    assert load_config("cnn_rotation_demo").train.threads == 2
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        cfg = load_config("tcn_rotation", {**TINY, "train.device": "cpu", "train.out": str(tmp_path),
                                           "train.threads": 1})
        Trainer(cfg, progress=False)
        assert torch.get_num_threads() == 1
        cfg = load_config("tcn_rotation", {**TINY, "train.device": "cpu", "train.out": str(tmp_path / "b")})
        Trainer(cfg, progress=False)  # None leaves the process's threads alone
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
