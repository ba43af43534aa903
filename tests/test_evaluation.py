"""The evaluation end to end on tiny trained models: baselines, fusion, probe, cache, outputs."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from engine import features as features_mod
from engine.cli import train_main
from engine.evaluate import eval_main
from engine.features import FeatureCache, load_encoder, random_encoder, state_digest
from utils.feature_store import read_all

TINY = {
    "data.train_per_class": 2,
    "data.val_per_class": 1,
    "data.query_per_class": 2,
    "data.gallery_per_class": 3,
    "data.num_classes": 4,
    "train.batch_size": 4,
}
BASE = ["--no-progress", "--device", "cpu"]


def train(out, exp, branch, *extra):
    args = ["--exp", exp, "--epochs", "1", "--out", str(out), "--no-progress", "--device", "cpu"]
    for key, value in TINY.items():
        args += ["--set", f"{key}={value}"]
    assert train_main(branch, args + list(extra)) == 0
    return out / exp / "best.pt"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    return {
        "tcn": train(out, "tcn_rotation", "tcn"),
        "sup": train(out, "tcn_supervised", "tcn"),
        "cnn": train(out, "cnn_rotation_demo", "cnn", "--set", "data.image_size=32"),
    }


def test_full_table_with_baselines_fusion_probe_and_pictures(runs, tmp_path, capsys):
    out = tmp_path / "res.json"
    argv = ["--ckpt", str(runs["tcn"]), "--random-baseline", "--baseline", str(runs["sup"]),
            "--fuse", f"{runs['cnn']}", f"{runs['tcn']}:fc@0.5", "--probe", "--probe-wd", "0.01", "0.1",
            "--probe-iters", "10", "--topk", "1", "5", "--json", str(out), "--cache-dir", str(tmp_path / "cache")]
    assert eval_main(argv + BASE) == 0
    payload = json.loads(out.read_text())
    rows = payload["results"]
    assert [r["kind"] for r in rows] == ["pretrained", "random", "baseline", "fused", "random"]
    assert rows[2]["model"] == "tcn_supervised (epoch 1)"
    fused = rows[3]
    assert fused["layer"] == "pool+fc" and fused["feature_dim"] == 256 + 4096
    assert [c["weight"] for c in fused["components"]] == [1.0, 0.5]
    assert payload["class_names"] == ["house", "fish", "arrow", "star"][: len(payload["class_names"])]
    for r in rows:
        assert 0.0 <= r["mAP"] <= 1.0 and set(r["class_ap"]) == set(payload["class_names"])
        assert r["num_queries"] == 8 and r["gallery_size"] == 12
        assert 0.0 <= r["probe"]["top1"] <= r["probe"]["top5"] <= 1.0
        assert r["probe"]["num_train"] == 12 and r["probe"]["num_test"] == 8
        assert r["encoder_unchanged"] is True
        assert len(r["pr_curve"]["precision"]) == 21
    printed = capsys.readouterr().out
    assert "| tcn_rotation (epoch 1) | fc | 4096 |" in printed and "top-1" in printed
    md = out.with_suffix(".md").read_text()
    assert "| fused cnn_rotation_demo + tcn_rotation (concat 1:0.5) | pool+fc | 4352 |" in md
    assert "## Average precision per class" in md and "| house |" in md
    for name in payload["pictures"].values():
        path = tmp_path / name
        assert path.stat().st_size < 300_000
        with Image.open(path) as img:
            assert img.width > 100 and img.height > 100
        assert f"]({name})" in md


def test_second_evaluation_reads_the_cache(runs, tmp_path, monkeypatch):
    argv = ["--ckpt", str(runs["tcn"]), "--random-baseline", "--no-pictures", "--json", str(tmp_path / "a.json")]
    assert eval_main(argv + BASE) == 0
    first = json.loads((tmp_path / "a.json").read_text())["results"]
    assert not any(r["features_cached"] for r in first)
    cache = runs["tcn"].parent / "features"
    entries = sorted(p.name for p in cache.glob("*.json"))
    assert len(entries) == 4  # (trained, random) x (query, gallery)

    def boom(*a, **k):
        raise AssertionError("features were recomputed")

    monkeypatch.setattr(features_mod, "extract_features", boom)
    argv[-1] = str(tmp_path / "b.json")
    assert eval_main(argv + BASE) == 0
    second = json.loads((tmp_path / "b.json").read_text())["results"]
    assert all(r["features_cached"] for r in second)
    assert [r["mAP"] for r in second] == [r["mAP"] for r in first]
    # another layer or another seed is another entry, and is extracted
    monkeypatch.undo()
    assert eval_main(["--ckpt", str(runs["tcn"]), "--layer", "branches", "--no-pictures", "--seed", "1",
                      "--random-baseline", "--json", str(tmp_path / "c.json")] + BASE) == 0
    rows = json.loads((tmp_path / "c.json").read_text())["results"]
    assert [r["feature_dim"] for r in rows] == [320, 320] and not any(r["features_cached"] for r in rows)
    assert len(list(cache.glob("*.json"))) == 8


def test_interrupted_or_broken_cache_entries_are_never_loaded(runs, tmp_path, monkeypatch):
    enc = load_encoder(runs["tcn"])
    cache = FeatureCache(tmp_path, progress=False)
    real = features_mod.NpyWriter.write
    calls = {"n": 0}

    def fail_on_second_batch(self, batch):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        real(self, batch)

    monkeypatch.setattr(features_mod.NpyWriter, "write", fail_on_second_batch)
    monkeypatch.setattr(enc.cfg.eval, "batch_size", 5)
    with pytest.raises(KeyboardInterrupt):
        cache.get(enc, "gallery", torch.device("cpu"))
    assert list(tmp_path.iterdir()) == []  # nothing half-written is left behind
    monkeypatch.undo()
    got = cache.get(enc, "gallery", torch.device("cpu"))
    assert not got.hit and cache.lookup(enc, "gallery").hit
    before = read_all(got.source)
    # a truncated feature file is ignored and extracted again, to the same values
    with open(got.path, "r+b") as fh:
        fh.truncate(got.path.stat().st_size - 8)
    assert cache.lookup(enc, "gallery") is None
    again = cache.get(enc, "gallery", torch.device("cpu"))
    assert not again.hit and torch.equal(read_all(again.source), before)
    assert np.array_equal(again.labels, got.labels)
    # an entry without its completion marker does not count
    got.path.with_name(got.path.stem + ".json").unlink()
    assert cache.lookup(enc, "gallery") is None


def test_features_are_read_in_eval_mode_and_the_check_catches_a_changed_encoder(runs, tmp_path):
    enc = load_encoder(runs["tcn"])
    cache = FeatureCache(tmp_path, progress=False)
    a = read_all(cache.get(enc, "query", torch.device("cpu")).source)
    assert enc.unchanged()
    # the same network in train mode updates its batch-norm statistics: the check fails
    model = enc.model(torch.device("cpu")).train()
    model(torch.rand(4, 100, 4), out_feat_keys="fc")
    assert not enc.unchanged()
    rand = random_encoder(enc, 3)
    b = read_all(cache.get(rand, "query", torch.device("cpu")).source)
    assert rand.unchanged() and not torch.equal(a, b)
    assert state_digest({"w": torch.ones(2)}) != state_digest({"w": torch.tensor([1.0, 1.0 + 1e-7])})


def test_fusing_two_copies_of_one_checkpoint_ranks_like_it(runs, tmp_path):
    # (The TCN's features are well spread. After one epoch on 32 px rasters the CNN's pooled
    # features are nearly parallel, cosines within 1e-6 of each other: below float32
    # resolution, where any two equivalent computations may order items differently.)
    assert eval_main(["--ckpt", str(runs["tcn"]), "--fuse", str(runs["tcn"]), f"{runs['tcn']}@1", "--no-pictures",
                      "--topk", "1", "3", "--json", str(tmp_path / "r.json")] + BASE) == 0
    single, fused = json.loads((tmp_path / "r.json").read_text())["results"]
    assert fused["mAP"] == pytest.approx(single["mAP"], abs=1e-12)
    assert (fused["P@1"], fused["P@3"]) == (single["P@1"], single["P@3"])


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--fuse", "RUN"], "--fuse needs at least two parts"),
        (["--ckpt", "RUN", "--layer", "conv9"], "layer 'conv9' is not a feature"),
        (["--ckpt", "RUN", "--fuse", "RUN", "RUN@-2"], "weight must be a finite number"),
        (["--ckpt", "/no/such.pt"], "no such checkpoint"),
        ([], "nothing to evaluate"),
    ],
)
def test_user_errors_are_one_line(runs, capsys, argv, message):
    argv = [a.replace("RUN", str(runs["tcn"])) for a in argv]
    assert eval_main(argv + BASE) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
