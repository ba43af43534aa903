"""The features command on real Quick, Draw! files: features and key_ids for every sketch,
the same features the evaluation computes for the same sketches, rankings, bad input."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from data.formats import read_sketches
from data.store import StoreSketches
from evaluation.encoders import load_encoder
from evaluation.extract import extract_main, sketch_features
from evaluation.feature_matrix import read_all
from evaluation.features import FeatureCache
from tests.common import QUICKDRAW, needs_quickdraw

pytestmark = needs_quickdraw

RAW = [QUICKDRAW / "raw" / "apple.ndjson", QUICKDRAW / "raw" / "The Eiffel Tower.ndjson"]
BASE = ["--device", "cpu", "--no-progress"]


@pytest.fixture(scope="module")
def store(quickdraw_store):
    """A store prepared from the two raw files alone: its gallery sketches are sketches of them."""
    return quickdraw_store({"train": 4, "val": 2, "query": 3, "gallery": 6}, classes=["apple", "The Eiffel Tower"],
                           formats="raw", seed=0, workers=1)


def test_features_of_raw_files_with_key_ids_and_their_ranking(runs, store, tmp_path, capsys):
    out = tmp_path / "mine"
    cache = tmp_path / "cache"
    argv = ["--ckpt", str(runs["tcn"]), *map(str, RAW), "--out", str(out), "--rank", "--topk", "3",
            "--data", str(store), "--cache-dir", str(cache)]
    assert extract_main(argv + BASE) == 0
    assert "no bad records" in capsys.readouterr().out
    sketches = [s for f in RAW for s in read_sketches(f)]  # read independently, in file order
    feats = np.load(out.with_name("mine.npy"))
    key_ids = out.with_name("mine.key_ids.txt").read_text().splitlines()
    assert feats.shape == (len(sketches), 4096) and feats.dtype == np.float32
    assert key_ids == [s.key_id for s in sketches] and len(set(key_ids)) == len(key_ids)
    meta = json.loads(out.with_name("mine.json").read_text())
    assert [f["sketches"] for f in meta["files"]] == [sum(1 for _ in read_sketches(f)) for f in RAW]
    assert meta["layer"] == "fc" and meta["skipped"]["skipped"] == 0

    # The evaluation's gallery features of the same sketches (same encoder, same data) match
    # the command's row for row, and each such sketch retrieves itself first.
    enc = load_encoder(runs["tcn"], {"data.source": "store", "data.path": str(store)})
    gallery = FeatureCache(cache, progress=False).lookup(enc, "gallery")
    assert gallery is not None  # --rank filled the evaluation's cache
    g_keys = [StoreSketches(store, "gallery").key_id(i) for i in range(len(gallery.labels))]
    rows = {k: i for i, k in enumerate(key_ids)}
    assert set(g_keys) <= set(rows)
    g = read_all(gallery.source)
    mine = torch.from_numpy(feats[[rows[k] for k in g_keys]])
    assert torch.allclose(mine, g, rtol=1e-4, atol=1e-5)
    ranking = json.loads(out.with_name("mine_ranking.json").read_text())["sketches"]
    for j, k in enumerate(g_keys):
        first = ranking[rows[k]]["retrieved"][0]
        assert first["gallery_index"] == j and first["key_id"] == k and first["similarity"] == pytest.approx(1, abs=1e-5)
    assert {r["class"] for r in ranking} == {"apple", "The Eiffel Tower"}  # files named after the classes
    with Image.open(out.with_name("mine_grid.png")) as img:
        assert img.width > 200 and img.height > 100


def test_every_format_and_the_python_function(runs, tmp_path):
    files = [QUICKDRAW / "binary" / "dog.bin", QUICKDRAW / "sketchrnn_npz" / "pig.npz",
             QUICKDRAW / "simplified" / "cat.ndjson", QUICKDRAW / "raw" / "apple.ndjson"]
    assert extract_main(["--ckpt", str(runs["cnn"]), *map(str, files), "--out", str(tmp_path / "f"),
                         "--max-per-file", "4", "--layer", "layer3"] + BASE) == 0
    feats = np.load(tmp_path / "f.npy")
    key_ids = (tmp_path / "f.key_ids.txt").read_text().splitlines()
    assert len(key_ids) == len(feats) == 16 and all(k.startswith("npz:pig:") for k in key_ids[4:8])
    sf = sketch_features(runs["cnn"], files, layer="layer3", max_per_file=4)
    assert sf.key_ids == key_ids and np.allclose(sf.features, feats, rtol=1e-5, atol=1e-6)
    assert [f["first_row"] for f in sf.files] == [0, 4, 8, 12]
    # a folder stands for the sketch files in it
    one = tmp_path / "one"
    one.mkdir()
    (one / "cat.ndjson").write_bytes(files[2].read_bytes())
    (one / "notes.txt").write_text("not a sketch file")
    assert sketch_features(runs["cnn"], [one], layer="layer3", max_per_file=4).key_ids == key_ids[8:12]


def test_bad_input_is_one_line_or_a_counted_skip(runs, tmp_path, capsys):
    ckpt = str(runs["tcn"])
    lines = RAW[0].read_bytes().splitlines(keepends=True)
    mixed = tmp_path / "apple.ndjson"
    mixed.write_bytes(lines[0] + b"{not json\n" + lines[1] + b'{"key_id": "1", "drawing": []}\n')
    assert extract_main(["--ckpt", ckpt, str(mixed), "--out", str(tmp_path / "m")] + BASE) == 0
    assert "skipped 2 bad record(s)" in capsys.readouterr().out
    assert len((tmp_path / "m.key_ids.txt").read_text().splitlines()) == 2
    for argv, message in [
        ([str(tmp_path / "m.json")], "unknown format"),
        ([str(tmp_path / "missing.ndjson")], "no such file"),
        ([str(tmp_path / "empty")], "no sketch files in this folder"),
    ]:
        (tmp_path / "empty").mkdir(exist_ok=True)
        assert extract_main(["--ckpt", ckpt, *argv, "--out", str(tmp_path / "x")] + BASE) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and argv[0] in err and len(err.splitlines()) == 1
    assert not list(tmp_path.glob("x*"))
