"""The evaluation command end to end on tiny trained models: rows, the stages against their
own references, result names and the index, outputs on a full disk, one-line errors."""

import errno
import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

from evaluation import encoders, features, output_files
from evaluation.descriptors import fuse
from evaluation.feature_matrix import read_all
from evaluation.features import FeatureCache
from evaluation.metrics.knn import knn_classify
from evaluation.metrics.linear_probe import run_probe
from evaluation.metrics.retrieval import reference_metrics
from evaluation.run import eval_main

from .conftest import BASE


def load(path):
    return json.loads(path.read_text())


@pytest.mark.slow
def test_full_table_with_baselines_fusion_knn_probe_and_pictures(runs, tmp_path, capsys):
    out = tmp_path / "res.json"
    cache = tmp_path / "cache"
    argv = ["--ckpt", str(runs["tcn"]), "--random-baseline", "--baseline", str(runs["sup"]),
            "--fuse", f"{runs['cnn']}", f"{runs['tcn']}:fc@0.5", "--probe", "--probe-wd", "0.01", "0.1",
            "--probe-iters", "10", "--topk", "1", "5", "--knn-k", "3", "--json", str(out), "--cache-dir", str(cache)]
    assert eval_main(argv + BASE) == 0
    payload = load(out)
    rows = payload["results"]
    assert [r["kind"] for r in rows] == ["pretrained", "random", "baseline", "fused", "random"]
    assert rows[2]["model"] == "tcn_supervised (epoch 1)"
    fused = rows[3]
    assert fused["layer"] == "pool+fc" and fused["feature_dim"] == 256 + 4096
    assert [c["weight"] for c in fused["components"]] == [1.0, 0.5]
    assert payload["class_names"] == ["house", "fish", "arrow", "star"]
    for r in rows:
        assert r["num_queries"] == 8 and r["gallery_size"] == 12
        assert r["probe"]["num_train"] == 12 and r["probe"]["num_test"] == 8

    # Each number of the table, recomputed by an independent path from the cached features:
    # the plain argsort definition of mAP and P@K, the kNN vote on a full sort, the probe.
    tcn = encoders.load_encoder(runs["tcn"])
    cnn = encoders.load_encoder(runs["cnn"], {"data.num_classes": 4, "data.query_per_class": 2,
                                              "data.gallery_per_class": 3})
    store = FeatureCache(cache, progress=False)
    got = {name: [store.lookup(e, s) for s in ("query", "gallery")] for name, e in (("tcn", tcn), ("cnn", cnn))}
    assert all(x is not None and x.hit for pair in got.values() for x in pair)
    (tq, tg), (cq, cg) = got["tcn"], got["cnn"]
    ql, gl = torch.as_tensor(tq.labels), torch.as_tensor(tg.labels)
    for row, (q, g) in ((rows[0], (read_all(tq.source), read_all(tg.source))),
                        (rows[3], (fuse([read_all(cq.source), read_all(tq.source)], [1.0, 0.5]),
                                   fuse([read_all(cg.source), read_all(tg.source)], [1.0, 0.5])))):
        ref = reference_metrics(q, ql, g, gl, "cosine", (1, 5))
        assert row["mAP"] == pytest.approx(ref["mAP"], abs=1e-6)
        assert (row["P@1"], row["P@5"]) == (pytest.approx(ref["P@1"], abs=1e-6), pytest.approx(ref["P@5"], abs=1e-6))
        order = torch.sort(torch.nn.functional.normalize(q, dim=1) @ torch.nn.functional.normalize(g, dim=1).T,
                           dim=1, descending=True, stable=True)
        knn = knn_classify(order.indices[:, :3], order.values[:, :3], gl, ql, k=3)
        assert (row["knn"]["top1"], row["knn"]["top5"]) == (knn["top1"], knn["top5"])
        probe = run_probe(q, ql.numpy(), g, gl.numpy(), wd_grid=(0.01, 0.1), max_iter=10)
        assert row["probe"]["top1"] == pytest.approx(probe["top1"]) and row["probe"]["top5"] == pytest.approx(probe["top5"])

    printed = capsys.readouterr().out
    assert "| tcn_rotation (epoch 1) | fc | 4096 |" in printed and "kNN top-1" in printed and "probe top-1" in printed
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
    cache = tmp_path / "cache"
    argv = ["--ckpt", str(runs["tcn"]), "--random-baseline", "--no-pictures", "--cache-dir", str(cache),
            "--json", str(tmp_path / "a.json")]
    assert eval_main(argv + BASE) == 0
    first = load(tmp_path / "a.json")["results"]
    assert not any(r["features_cached"] for r in first)
    assert len(list(cache.glob("*.json"))) == 4  # (trained, random) x (query, gallery)

    def boom(*a, **k):
        raise AssertionError("features were recomputed")

    monkeypatch.setattr(features, "extract_features", boom)
    argv[-1] = str(tmp_path / "b.json")
    assert eval_main(argv + BASE) == 0
    second = load(tmp_path / "b.json")["results"]
    assert all(r["features_cached"] for r in second)
    assert [(r["mAP"], r["knn"]) for r in second] == [(r["mAP"], r["knn"]) for r in first]
    # another layer or another seed is another entry, and is extracted
    monkeypatch.undo()
    assert eval_main(["--ckpt", str(runs["tcn"]), "--layer", "branches", "--no-pictures", "--seed", "1",
                      "--random-baseline", "--cache-dir", str(cache), "--json", str(tmp_path / "c.json")] + BASE) == 0
    rows = load(tmp_path / "c.json")["results"]
    assert [r["feature_dim"] for r in rows] == [320, 320] and not any(r["features_cached"] for r in rows)
    assert len(list(cache.glob("*.json"))) == 8


def test_fusing_two_copies_of_one_checkpoint_ranks_like_it(runs, tmp_path):
    # (The TCN's features are well spread. After one epoch on 32 px rasters the CNN's pooled
    # features are nearly parallel, cosines within 1e-6 of each other: below float32
    # resolution, where any two equivalent computations may order items differently.)
    assert eval_main(["--ckpt", str(runs["tcn"]), "--fuse", str(runs["tcn"]), f"{runs['tcn']}@1", "--no-pictures",
                      "--topk", "1", "3", "--json", str(tmp_path / "r.json")] + BASE) == 0
    single, fused = load(tmp_path / "r.json")["results"]
    assert fused["mAP"] == pytest.approx(single["mAP"], abs=1e-12)
    assert (fused["P@1"], fused["P@3"]) == (single["P@1"], single["P@3"])
    assert fused["knn"] == single["knn"]


# ---------------------------------------------------------------------------- result names
def results_of(ckpt):
    folder = ckpt.parent / "eval"
    return sorted(p.name for p in folder.glob("*.json") if p.name != "index.json"), folder


def test_evaluations_with_different_settings_leave_separate_results_and_an_index(runs, tmp_path_factory):
    ckpt = runs["sup"]
    cache = ["--cache-dir", str(tmp_path_factory.mktemp("cache")), "--no-pictures"]
    before, folder = results_of(ckpt)
    commands = [
        ["--ckpt", str(ckpt)],
        ["--ckpt", str(ckpt), "--random-baseline"],
        ["--ckpt", str(ckpt), "--layer", "branches"],
        ["--ckpt", str(ckpt), "--topk", "1", "3"],
        ["--ckpt", str(ckpt), "--fuse", str(ckpt), str(runs["tcn"]), "--fuse-mode", "score"],
    ]
    for argv in commands:
        assert eval_main(argv + cache + BASE) == 0
    names, _ = results_of(ckpt)
    new = sorted(set(names) - set(before))
    assert len(new) == len(commands)  # five evaluations, five results: none replaced another
    assert {n.split("_")[1] for n in new} == {"fc", "branches"}
    assert any("_random_" in n for n in new) and any("fused-score" in n for n in new)
    assert all(re.fullmatch(r"best_(fc|branches)(_[a-z0-9+-]+)*_[0-9a-f]{8}\.json", n) for n in new), new
    assert all(f"Result `{n[:-5]}`" in (folder / n).with_suffix(".md").read_text() for n in new)
    # the same evaluation again replaces its own result and nothing else
    stamp = {n: (folder / n).read_bytes() for n in names}
    assert eval_main(commands[1] + cache + BASE) == 0
    assert results_of(ckpt)[0] == names
    changed = [n for n in names if (folder / n).read_bytes() != stamp[n]]
    assert len(changed) == 1 and "_random_" in changed[0]
    # the index lists each result once, with its rows and command
    index = load(folder / "index.json")["results"]
    assert sorted(e["name"] + ".json" for e in index) == names
    entry = next(e for e in index if e["name"] + ".json" == changed[0])
    assert entry["rows"] == ["tcn_supervised (epoch 1)", "random init (tcn, seed 0)"]
    assert "--random-baseline" in entry["command"] and entry["checkpoint_sha256"] == encoders.file_sha256(ckpt)
    assert all(f"[{e['name']}]" in (folder / "index.md").read_text() for e in index)


def test_a_name_holding_another_evaluation_is_refused(runs, tmp_path, capsys):
    ckpt = runs["sup"]
    argv = ["--ckpt", str(ckpt), "--no-pictures", "--name", "mine", "--cache-dir", str(tmp_path)]
    assert eval_main(argv + BASE) == 0
    path = ckpt.parent / "eval" / "mine.json"
    kept = path.read_bytes()
    assert eval_main(argv + BASE) == 0  # the same evaluation: replaced by itself
    capsys.readouterr()
    assert eval_main(argv + ["--topk", "2"] + BASE) == 2
    err = capsys.readouterr().err.strip()
    assert "mine.json holds the results of another evaluation" in err and len(err.splitlines()) == 1
    assert load(path)["identity"] == json.loads(kept)["identity"] and load(path)["topk"] != [2]


def test_small_splits_warn_and_p_at_k_above_the_gallery_is_marked(runs, tmp_path, capsys):
    out = tmp_path / "r.json"
    assert eval_main(["--ckpt", str(runs["tcn"]), "--topk", "1", "5", "50", "--no-pictures", "--json", str(out)]
                     + BASE) == 0
    printed = capsys.readouterr().out
    payload = load(out)
    assert payload["topk_above_gallery"] == [50] and payload["gallery_size"] == 12
    assert "| P@1 | P@5 | P@50* |" in printed
    assert "* K = 50 is above the gallery size (12): precision taken at the gallery size." in printed
    assert [w.split(" (")[0] for w in payload["warnings"]] == ["only 8 queries", "only 12 gallery sketches"]
    assert "warning: only 8 queries" in printed
    md = out.with_suffix(".md").read_text()
    assert "P@50*" in md and "Warning: only 12 gallery sketches" in md


# ---------------------------------------------------------------------------- full disk
@pytest.fixture
def full_disk(monkeypatch):
    """``fill(match)``: from now on, writing a file whose name contains ``match`` fails with
    ENOSPC after its first bytes went into the temporary file."""

    def fill(match):
        real_atomic, real_init = output_files.atomic_write, output_files.LockedTemporary.__init__

        def atomic_write(path, write):
            def partial(fh):
                if match in str(path):
                    fh.write(b"partial")
                    raise OSError(errno.ENOSPC, "No space left on device")
                write(fh)
            real_atomic(path, partial)

        class Full:
            def __init__(self, fh):
                self.fh = fh

            def write(self, data):
                self.fh.write(bytes(data)[:10])
                raise OSError(errno.ENOSPC, "No space left on device")

            def __getattr__(self, name):
                return getattr(self.fh, name)

        def init(self, path):
            real_init(self, path)
            if match in str(path):
                self.fh = Full(self.fh)

        monkeypatch.setattr(output_files, "atomic_write", atomic_write)
        monkeypatch.setattr(output_files.LockedTemporary, "__init__", init)

    return fill


#: The order in which an evaluation writes its files (the cache before all of them).
WRITES = ["nospace_grid.png", "nospace_class_ap.png", "nospace_pr.png", "nospace.json", "nospace.md", "index.json"]


@pytest.mark.parametrize("target", ["-gallery-fc-", "nospace_grid.png", "nospace.md", "index.json"])
def test_a_full_disk_is_one_line_and_earlier_files_stay_intact(runs, tmp_path, full_disk, monkeypatch, capsys,
                                                               target):
    ckpt = runs["tcn"]
    cache = tmp_path / "cache"
    folder = ckpt.parent / "eval"
    for old in folder.glob("nospace*"):
        old.unlink()
    # an earlier evaluation of the same checkpoint, complete
    assert eval_main(["--ckpt", str(ckpt), "--name", "earlier", "--cache-dir", str(cache)] + BASE) == 0
    files = {p: p.read_bytes() for p in list(folder.iterdir()) + list(cache.iterdir())}
    full_disk(target)
    capsys.readouterr()
    argv = ["--ckpt", str(ckpt), "--random-baseline", "--name", "nospace", "--cache-dir", str(cache)]
    assert eval_main(argv + BASE) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("error: could not write ") and "No space left on device" in err
    assert target in err.split(" (")[0] and "the files written before it are intact" in err
    # everything written before is unchanged, nothing half-written or temporary is left
    assert {p: p.read_bytes() for p in files} == files
    assert [p.name for d in (folder, cache) for p in d.iterdir() if p.name.endswith(".tmp")] == []
    done = WRITES.index(target) if target in WRITES else 0
    assert sorted(p.name for p in folder.glob("nospace*")) == sorted(WRITES[:done][:5])
    if target == "-gallery-fc-":  # with room on the disk again, the cache fills and the command completes
        monkeypatch.undo()
        assert eval_main(argv + BASE) == 0
        assert sorted(p.name for p in folder.glob("nospace*")) == sorted(WRITES[:5])
        assert not [p for d in (folder, cache) for p in d.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--fuse", "RUN"], "--fuse needs at least two parts"),
        (["--ckpt", "RUN", "--layer", "conv9"], "layer 'conv9' is not a feature"),
        (["--ckpt", "RUN", "--fuse", "RUN", "RUN@-2"], "weight must be a finite number"),
        (["--ckpt", "/no/such.pt"], "no such checkpoint"),
        (["--ckpt", "RUN", "--name", "a/b"], "--name 'a/b': use letters"),
        (["--ckpt", "RUN", "--knn-temperature", "0"], "--knn-temperature > 0"),
        (["--ckpt", "RUN", "--name", "a", "--json", "b.json"], "not both"),
        ([], "nothing to evaluate"),
    ],
)
def test_user_errors_are_one_line(runs, capsys, argv, message):
    argv = [a.replace("RUN", str(runs["tcn"])) for a in argv]
    assert eval_main(argv + BASE) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_random_baseline_features_differ_and_do_not_touch_the_checkpoint(runs, tmp_path):
    out = tmp_path / "r.json"
    before = encoders.file_sha256(runs["tcn"])
    assert eval_main(["--ckpt", str(runs["tcn"]), "--random-baseline", "--seed", "5", "--no-pictures", "--json",
                      str(out), "--cache-dir", str(tmp_path)] + BASE) == 0
    trained, rand = load(out)["results"]
    assert rand["model"] == "random init (tcn, seed 5)"
    q = sorted(tmp_path.glob("*-query-fc-*.labels.npy"))
    assert len(q) == 2 and np.array_equal(np.load(q[0]), np.load(q[1]))
    feats = sorted(p for p in tmp_path.glob("*-query-fc-*.npy") if not p.name.endswith(".labels.npy"))
    assert not np.allclose(np.load(feats[0]), np.load(feats[1]))
    assert encoders.file_sha256(runs["tcn"]) == before
