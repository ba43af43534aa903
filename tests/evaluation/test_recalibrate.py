"""Batch-norm recalibration: the statistics against hand-computed ones, everything else
unchanged, and the command's output checkpoint read by evaluation like any other."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from evaluation import encoders
from evaluation.recalibrate import batch_norm_layers, recalibrate_batch_norm, recalibrate_main
from utils.checkpoint import load_checkpoint


def test_statistics_are_the_cumulative_average_over_the_batches():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2), nn.Dropout(0.5), nn.Linear(2, 1), nn.BatchNorm1d(1))
    net[1].running_mean.fill_(7.0)  # stale statistics, as a masked training run leaves them
    net[1].num_batches_tracked.fill_(100)
    net.train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    batches = [torch.randn(4, 3) * (i + 1) for i in range(3)]
    assert recalibrate_batch_norm(net, iter(batches)) == 3

    h = [net[0](x) for x in batches]  # what the first batch-norm layer saw
    assert torch.allclose(net[1].running_mean, torch.stack([b.mean(0) for b in h]).mean(0), atol=1e-6)
    assert torch.allclose(net[1].running_var, torch.stack([b.var(0, unbiased=True) for b in h]).mean(0), atol=1e-5)
    assert net[1].num_batches_tracked.item() == 3
    # The second layer saw the first one's output normalised with each batch's own statistics
    # and no dropout (evaluation mode everywhere else).
    h2 = [net[3](nn.functional.batch_norm(b, None, None, net[1].weight, net[1].bias, training=True)) for b in h]
    assert torch.allclose(net[4].running_mean, torch.stack([b.mean(0) for b in h2]).mean(0), atol=1e-6)
    # Weights untouched, momentum and training flags restored.
    after = net.state_dict()
    for k, v in before.items():
        if "running" not in k and "num_batches" not in k:
            assert torch.equal(after[k], v), k
    assert net.training and all(m.training for m in net.modules())
    assert [m.momentum for m in batch_norm_layers(net)] == [0.1, 0.1]


def test_a_network_without_batch_norm_or_without_batches_is_refused():
    with pytest.raises(ValueError, match="no batch-norm layer"):
        recalibrate_batch_norm(nn.Linear(2, 2), [torch.zeros(2, 2)])
    with pytest.raises(ValueError, match="no batch to gather"):
        recalibrate_batch_norm(nn.BatchNorm1d(2), [])


def test_the_command_writes_a_checkpoint_evaluation_reads(runs, tmp_path, capsys):
    src = runs["cnn"]
    out = tmp_path / "recal" / "best.pt"
    assert recalibrate_main(["--ckpt", str(src), "--out", str(out), "--batch-size", "4", "--no-progress"]) == 0
    assert "batch-norm layers from 8 'train' sketches (2 batches)" in capsys.readouterr().out
    old, new = load_checkpoint(src), load_checkpoint(out)
    assert new["recalibrated"]["from"] == str(src) and new["recalibrated"]["sketches"] == 8
    changed = {k for k, v in old["model"].items() if not torch.equal(v, new["model"][k])}
    assert changed and all("running" in k or "num_batches" in k for k in changed)
    assert {k: v for k, v in new.items() if k not in ("model", "recalibrated")}.keys() == \
        {k for k in old if k != "model"}
    # Evaluation loads it as the same model; features differ only through the statistics.
    a, b = encoders.load_encoder(src), encoders.load_encoder(out)
    assert a.cfg == b.cfg and a.layer == b.layer

    # The same network recalibrated by hand on the same sketches gives the same statistics.
    from engine import build
    from torch.utils.data import DataLoader, Subset
    from data import collate_samples
    net = a.model(torch.device("cpu"))
    loader = DataLoader(Subset(build.build_dataset(a.cfg, "train"), range(8)), batch_size=4, collate_fn=collate_samples)
    recalibrate_batch_norm(net, (x for x, _ in loader))
    for k, v in net.state_dict().items():
        assert torch.allclose(v.float(), new["model"][k].float()), k


@pytest.mark.parametrize("argv, message", [
    (["--out", "SAME"], "--out must differ from --ckpt"),
    (["--batch-size", "1"], "--batch-size must be at least 2"),
    (["--max-sketches", "2", "--batch-size", "4"], "--max-sketches must be at least --batch-size"),
])
def test_bad_requests_are_one_line_and_write_nothing(runs, tmp_path, capsys, argv, message):
    src = runs["tcn"]
    out = tmp_path / "x.pt"
    argv = [str(src) if a == "SAME" else a for a in argv]
    args = ["--ckpt", str(src), "--no-progress"] + (argv if "--out" in argv else ["--out", str(out)] + argv)
    assert recalibrate_main(args) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_a_dual_checkpoint_is_refused_in_one_line(runs, tmp_path, capsys):
    from utils.checkpoint import save_checkpoint
    state = load_checkpoint(runs["tcn"])
    fake = tmp_path / "dual.pt"
    save_checkpoint({**state, "config": {**state["config"], "branch": "dual"}}, fake)
    assert recalibrate_main(["--ckpt", str(fake), "--out", str(tmp_path / "out.pt"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "a dual checkpoint; recalibration takes single-branch ones (cnn, tcn)" in err
    assert not (tmp_path / "out.pt").exists()
