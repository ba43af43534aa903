"""The features stage: extract once, read back; never load an interrupted, truncated or
changed entry; clean what killed extractions left; encoders are read in eval mode."""

import fcntl
import json
import os
import time

import numpy as np
import pytest
import torch

from evaluation import features as features_mod
from evaluation.encoders import load_encoder, random_encoder, state_digest
from evaluation.feature_matrix import NpyReader, file_crc32, read_all
from evaluation.features import FeatureCache
from evaluation.metrics.retrieval import retrieval_metrics
from evaluation.output_files import STALE_AFTER_S
from evaluation.run import eval_main

from .conftest import BASE

CPU = torch.device("cpu")


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
        cache.get(enc, "gallery", CPU)
    assert list(tmp_path.iterdir()) == []  # nothing half-written is left behind
    monkeypatch.undo()
    got = cache.get(enc, "gallery", CPU)
    assert not got.hit and cache.lookup(enc, "gallery").hit
    before = read_all(got.source)
    # a truncated feature file is ignored and extracted again, to the same values
    with open(got.path, "r+b") as fh:
        fh.truncate(got.path.stat().st_size - 8)
    assert cache.lookup(enc, "gallery") is None
    again = cache.get(enc, "gallery", CPU)
    assert not again.hit and torch.equal(read_all(again.source), before)
    assert np.array_equal(again.labels, got.labels)
    # an entry without its completion marker does not count
    got.path.with_name(got.path.stem + ".json").unlink()
    assert cache.lookup(enc, "gallery") is None


def test_the_recorded_checksum_is_the_files(runs, tmp_path):
    enc = load_encoder(runs["tcn"])
    got = FeatureCache(tmp_path, progress=False).get(enc, "query", CPU)
    meta = json.loads(got.path.with_name(got.path.stem + ".json").read_text())
    assert meta["crc32"] == file_crc32(got.path)
    assert meta["labels_crc32"] == file_crc32(got.path.with_name(got.path.stem + ".labels.npy"))


def test_an_entry_changed_in_place_at_the_same_size_is_extracted_again(runs, tmp_path, capsys):
    cache = tmp_path / "cache"
    argv = ["--ckpt", str(runs["tcn"]), "--no-pictures", "--cache-dir", str(cache), "--topk", "1", "5"] + BASE
    assert eval_main(argv + ["--json", str(tmp_path / "fresh.json")]) == 0
    fresh = json.loads((tmp_path / "fresh.json").read_text())["results"][0]
    gallery = next(p for p in cache.glob("*-gallery-fc-*.npy") if not p.name.endswith(".labels.npy"))
    original = gallery.read_bytes()
    # overwrite the features of six gallery sketches with those of the first, in place
    reader = NpyReader(gallery)
    row = reader.dim * 4
    with open(gallery, "r+b") as fh:
        fh.seek(reader.offset)
        first = fh.read(row)
        for i in range(1, 7):
            fh.seek(reader.offset + i * row)
            fh.write(first)
    assert gallery.stat().st_size == len(original) and gallery.read_bytes() != original
    # used silently, the changed features would give other numbers
    labels = np.load(gallery.with_name(gallery.stem + ".labels.npy"))
    query = next(p for p in cache.glob("*-query-fc-*.npy") if not p.name.endswith(".labels.npy"))
    used = retrieval_metrics(NpyReader(query), np.load(query.with_name(query.stem + ".labels.npy")),
                             NpyReader(gallery), labels, topk=(1, 5))
    assert used["mAP"] != pytest.approx(fresh["mAP"], abs=1e-6)
    capsys.readouterr()
    assert eval_main(argv + ["--json", str(tmp_path / "again.json")]) == 0
    printed = capsys.readouterr().out
    assert printed.count("does not match its checksum; extracting it again") == 1 and gallery.name in printed
    again = json.loads((tmp_path / "again.json").read_text())["results"][0]
    assert not again["features_cached"]
    assert (again["mAP"], again["P@1"], again["P@5"], again["knn"]) == (fresh["mAP"], fresh["P@1"], fresh["P@5"],
                                                                        fresh["knn"])
    assert gallery.read_bytes() == original


def test_stale_temporaries_are_removed_and_a_live_writers_are_not(runs, tmp_path, capsys):
    enc = load_encoder(runs["tcn"])
    old = time.time() - 2 * STALE_AFTER_S
    stale = [tmp_path / ".x-gallery-fc-0.npy.1a2b3c4d.tmp", tmp_path / ".x.labels.npy.abcd1234.tmp",
             tmp_path / ".x.json.ffff0000.tmp", tmp_path / "x-query-fc-0.npy.tmp"]  # the last: older writers
    for p in stale:
        p.write_bytes(b"\0" * 1000)
        os.utime(p, (old, old))
    live, fresh, other = tmp_path / ".y.npy.00000000.tmp", tmp_path / ".z.npy.11111111.tmp", tmp_path / ".notes.tmp"
    for p in (live, fresh, other):
        p.write_bytes(b"\0" * 10)
    for p in (live, other):
        os.utime(p, (old, old))
    with open(live, "rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # a writer that is still at work
        FeatureCache(tmp_path, progress=False).lookup(enc, "query")
    assert not any(p.exists() for p in stale)
    assert live.exists() and fresh.exists() and other.exists()  # locked, too recent, not ours
    out = capsys.readouterr().out
    assert f"removed 4 temporary file(s) (0.0 MB) that interrupted extractions left in {tmp_path}" in out


def test_features_are_read_in_eval_mode_and_the_check_catches_a_changed_encoder(runs, tmp_path):
    enc = load_encoder(runs["tcn"])
    cache = FeatureCache(tmp_path, progress=False)
    a = read_all(cache.get(enc, "query", CPU).source)
    assert enc.unchanged()
    # the same network in train mode updates its batch-norm statistics: the check fails
    model = enc.model(CPU).train()
    model(torch.rand(4, 100, 4), out_feat_keys="fc")
    assert not enc.unchanged()
    rand = random_encoder(enc, 3)
    b = read_all(cache.get(rand, "query", CPU).source)
    assert rand.unchanged() and not torch.equal(a, b)
    assert state_digest({"w": torch.ones(2)}) != state_digest({"w": torch.tensor([1.0, 1.0 + 1e-7])})


def test_extracted_features_are_the_models_output_in_dataset_order(runs, tmp_path):
    enc = load_encoder(runs["cnn"])
    got = FeatureCache(tmp_path, progress=False).get(enc, "gallery", CPU)
    from engine import build

    ds = build.build_dataset(enc.cfg, "gallery")
    model = enc.model(CPU)
    with torch.no_grad():
        expect = torch.cat([model(ds[i][0].unsqueeze(0), out_feat_keys=enc.layer).flatten(1) for i in range(len(ds))])
    assert torch.allclose(read_all(got.source), expect, atol=1e-5, rtol=1e-4)
    assert got.labels.tolist() == [ds[i][1] for i in range(len(ds))]
