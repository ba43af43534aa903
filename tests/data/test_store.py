"""Prepare and the packed store on the real shared sample: deterministic hash splits that do
not depend on file order, de-duplication, short classes, bad input in a whole run, atomic
writes, cheap opening and pickling, and the engine reading a store."""

import hashlib
import json
import os
import pickle
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from config import ConfigError, load_config
from data.datasets import RasterDataset, StrokeDataset
from data.formats import read_sketches
from data.prepare import DEFAULT_PER_CLASS, PrepareError, prepare, split_counts
from data.prepare import main as prepare_main
from data.store import STORE_SPLITS, StoreError, StoreSketches, StoreWriter, read_meta
from engine import build
from tests.common import QUICKDRAW, needs_quickdraw

pytestmark = needs_quickdraw

CLASSES = ["apple", "dog", "The Eiffel Tower", "face"]
SMALL = {"train": 10, "val": 3, "query": 2, "gallery": 5}


def _prepare(out, sources=(QUICKDRAW,), classes=CLASSES, per_class=SMALL, seed=0, workers=1):
    return prepare(list(sources), out, per_class=dict(per_class), seed=seed, classes=classes,
                   workers=workers, progress=False, log=lambda _: None)


def _split_keys(store) -> dict[str, list[str]]:
    out = {}
    for split in STORE_SPLITS:
        keys = np.load(Path(store) / split / "key_ids.npy")
        out[split] = [k.decode() for k in keys]
    return out


def _files(store) -> dict[str, bytes]:
    return {str(p.relative_to(store)): p.read_bytes() for p in sorted(Path(store).rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    out = tmp_path_factory.mktemp("qd") / "store"
    _prepare(out)
    return out


# ----------------------------------------------------------------------------- contents


def test_store_holds_the_parsed_sketches_with_labels(store):
    meta = read_meta(store)
    assert meta["class_names"] == ["apple", "dog", "face", "The Eiffel Tower"]  # Google's order
    # The copy kept for a key_id: simplified ndjson, else .bin, else raw, else npz.
    expected: dict[str, object] = {}
    for kind in ("sketchrnn_npz", "raw", "binary", "simplified"):
        for name in CLASSES:
            for f in (QUICKDRAW / kind).glob(f"{name}.*"):
                for s in read_sketches(f):
                    expected[s.key_id] = s
    seen = set()
    for split in STORE_SPLITS:
        src = StoreSketches(store, split)
        assert len(src) == meta["splits"][split]["sketches"] > 0
        assert src.labels.dtype == np.int64 and src.num_classes == 4
        assert src.class_names == tuple(meta["class_names"])
        assert list(src.labels) == sorted(src.labels)  # class-major order
        for i in range(len(src)):
            s = src[i]
            assert isinstance(s.key_id, str) and isinstance(s.label, int) and s.label == src.labels[i]
            ref = expected[s.key_id]
            assert len(s.strokes) == len(ref.strokes)
            for a, b in zip(s.strokes, ref.strokes):
                np.testing.assert_array_equal(a, b)
            assert s.key_id not in seen  # no sketch in two splits
            seen.add(s.key_id)
        assert src[-1].key_id == src[len(src) - 1].key_id
        with pytest.raises(IndexError):
            src[len(src)]
    report = json.loads((store / "report.json").read_text())
    assert report["classes"]["dog"]["indexed"] == 39  # bin 39 records; ndjson ones are duplicates
    assert report["classes"]["dog"]["duplicates"] > 0
    # face: 2500 sketch-rnn sketches + its ndjson drawings, so every split is full.
    per_class = {s: meta["splits"][s]["per_class"][2] for s in STORE_SPLITS}
    assert per_class == SMALL


def _hash(seed, key):
    return int.from_bytes(hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=8).digest(), "big")


def test_split_assignment_is_the_documented_hash_rule(store):
    keys = _split_keys(store)
    meta = read_meta(store)
    report = json.loads((store / "report.json").read_text())
    for label, name in enumerate(meta["class_names"]):
        ids = set()
        for f in report["classes"][name]["files"]:
            ids.update(s.key_id for s in read_sketches(f))
        ranked = sorted(ids, key=lambda k: (_hash(0, k), k))
        counts = split_counts(len(ranked), SMALL)
        start = 0
        labels = {s: np.load(store / s / "labels.npy") for s in STORE_SPLITS}
        for split in ("query", "gallery", "val", "train"):
            want = ranked[start : start + counts[split]]
            start += counts[split]
            got = [k for k, lab in zip(keys[split], labels[split]) if lab == label]
            assert got == want, (name, split)


def test_split_does_not_depend_on_file_order_and_repeats_exactly(tmp_path, store):
    # The same files reached another way: other folder names, listed in reverse, and the
    # apple drawings in reversed line order.
    a, b = tmp_path / "zzz_first", tmp_path / "aaa_second"
    a.mkdir()
    b.mkdir()
    for name in CLASSES:
        for kind, folder in (("simplified", a), ("raw", b), ("binary", a), ("sketchrnn_npz", a)):
            for f in (QUICKDRAW / kind).glob(f"{name}.*"):
                if not (kind == "simplified" and name == "apple"):
                    os.symlink(f, folder / f.name)
    lines = (QUICKDRAW / "simplified" / "apple.ndjson").read_text().splitlines(keepends=True)
    (a / "apple.ndjson").write_text("".join(reversed(lines)))
    other = tmp_path / "other"
    _prepare(other, sources=[b, a], classes=list(reversed(CLASSES)))
    assert _split_keys(other) == _split_keys(store)
    for split in STORE_SPLITS:
        for name in ("points", "offsets", "labels"):
            assert (other / split / f"{name}.npy").read_bytes() == (store / split / f"{name}.npy").read_bytes()
    assert read_meta(other)["content_sha256"] == read_meta(store)["content_sha256"]
    # Repeating the run (here with two worker processes) gives the same bytes, report.json
    # included (no times, no host names).
    again = tmp_path / "again"
    _prepare(again, workers=2)
    assert _files(again) == _files(store)
    # Another seed is another assignment.
    seeded = tmp_path / "seeded"
    _prepare(seeded, seed=1)
    assert _split_keys(seeded)["train"] != _split_keys(store)["train"]
    assert read_meta(seeded)["content_sha256"] != read_meta(store)["content_sha256"]


def test_short_class_is_split_in_proportion_and_reported(store):
    assert split_counts(20, SMALL) == SMALL
    assert split_counts(100, SMALL) == SMALL
    assert split_counts(15, DEFAULT_PER_CLASS) == {"train": 12, "val": 2, "query": 0, "gallery": 1}
    assert split_counts(10, SMALL) == {"train": 5, "val": 2, "query": 1, "gallery": 2}
    assert split_counts(0, SMALL) == {s: 0 for s in STORE_SPLITS}
    for n in range(40):
        assert sum(split_counts(n, SMALL).values()) == min(n, 20)
    report = json.loads((store / "report.json").read_text())
    eiffel = report["short_classes"]["The Eiffel Tower"]
    assert eiffel["asked"] == 20 and eiffel["usable"] < 20
    assert eiffel["split"] == split_counts(eiffel["usable"], SMALL)
    meta = read_meta(store)
    assert [meta["splits"][s]["per_class"][3] for s in STORE_SPLITS] == [eiffel["split"][s] for s in STORE_SPLITS]
    assert "apple" not in report["short_classes"]



def test_in_order_fill_keeps_evaluation_splits_whole_and_shortens_train(tmp_path, store):
    # Hand-computed: 20 asked (query 2, gallery 5, val 3, train 10).
    assert split_counts(15, SMALL, "in-order") == {"train": 5, "val": 3, "query": 2, "gallery": 5}
    assert split_counts(8, SMALL, "in-order") == {"train": 0, "val": 1, "query": 2, "gallery": 5}
    assert split_counts(1, SMALL, "in-order") == {"train": 0, "val": 0, "query": 1, "gallery": 0}
    assert split_counts(30, SMALL, "in-order") == SMALL
    with pytest.raises(PrepareError, match="fill"):
        split_counts(5, SMALL, "greedy")
    out = tmp_path / "in_order"
    prepare([QUICKDRAW], out, per_class={"train": 40, "val": 1, "query": 3, "gallery": 7}, classes=CLASSES,
            progress=False, log=lambda _: None, fill="in-order")
    meta = read_meta(out)
    assert meta["fill"] == "in-order"
    report = json.loads((out / "report.json").read_text())
    for label, name in enumerate(meta["class_names"]):
        usable = report["classes"][name]["usable"]
        got = {s: meta["splits"][s]["per_class"][label] for s in STORE_SPLITS}
        assert got["query"] == 3 and got["gallery"] == 7 and got["val"] == 1, name
        assert got["train"] == min(40, usable - 11), name
    # The evaluation splits are the same sketches whatever the fill: they take the lowest
    # ranks first in both modes, and here no class is short of its 11 evaluation sketches.
    prop = tmp_path / "prop"
    prepare([QUICKDRAW], prop, per_class={"train": 40, "val": 1, "query": 3, "gallery": 7}, classes=CLASSES,
            progress=False, log=lambda _: None)
    short = json.loads((prop / "report.json").read_text())["short_classes"]
    assert short, "the sample should have a class short of 51 sketches"
    assert _split_keys(out)["query"] != _split_keys(prop)["query"]  # proportional shrinks query
    with pytest.raises(PrepareError, match="--fill"):
        prepare([QUICKDRAW], tmp_path / "bad", per_class=SMALL, classes=CLASSES, progress=False,
                log=lambda _: None, fill="greedy")
    assert not (tmp_path / "bad").exists()

# ----------------------------------------------------------------------------- bad input


def _bad_source(tmp_path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    lines = (QUICKDRAW / "simplified" / "apple.ndjson").read_text().splitlines()[:12]
    bad = [
        '{"word": "apple", "key_id": "91", "drawing": [[[0, 1], [0, 1]]',  # malformed JSON
        json.dumps({"word": "apple", "key_id": "92", "drawing": []}),
        json.dumps({"word": "apple", "key_id": "93", "drawing": [[[0, 1, 2], [0, 1]]]}),
        json.dumps({"word": "apple", "key_id": "94", "drawing": [[[0, 300], [0, 1]]]}),
    ]
    (src / "apple.ndjson").write_text("\n".join(lines[:3] + bad[:2] + lines[3:8] + bad[2:] + lines[8:]) + "\n")
    data = (QUICKDRAW / "binary" / "dog.bin").read_bytes()
    (src / "dog.bin").write_bytes(data[: len(data) - 10])  # cut inside the last record
    return src


def test_bad_records_are_skipped_reported_and_good_ones_kept(tmp_path, capsys):
    src = _bad_source(tmp_path)
    out = tmp_path / "store"
    assert prepare_main(["--src", str(src), "--out", str(out), "--per-class",
                         "train=30,val=5,query=5,gallery=10", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "skipped 5 bad record(s)" in printed
    report = json.loads((out / "report.json").read_text())["bad_records"]
    assert report["by_reason"] == {
        "malformed JSON": 1, "empty drawing": 1, "stroke lengths differ": 1,
        "coordinate outside 0..255": 1, "truncated record": 1,
    }
    where = {(Path(p["path"]).name, p["where"], p["kind"]) for p in report["listed"]}
    assert where == {
        ("apple.ndjson", "line 4", "malformed JSON"), ("apple.ndjson", "line 5", "empty drawing"),
        ("apple.ndjson", "line 11", "stroke lengths differ"), ("apple.ndjson", "line 12", "coordinate outside 0..255"),
        ("dog.bin", "record 39 at byte 6158", "truncated record"),
    }
    meta = read_meta(out)
    totals = np.sum([meta["splits"][s]["per_class"] for s in STORE_SPLITS], axis=0)
    assert totals.tolist() == [12, 38]  # every good apple line and the 38 whole dog records


def test_corrupt_npz_stops_prepare_and_keeps_the_old_store(tmp_path, capsys):
    src = _bad_source(tmp_path)
    out = tmp_path / "store"
    assert prepare_main(["--src", str(src), "--out", str(out), "--no-progress"]) == 0
    before = _files(out)
    (src / "pig.npz").write_bytes((QUICKDRAW / "sketchrnn_npz" / "pig.npz").read_bytes()[:5000])
    capsys.readouterr()
    assert prepare_main(["--src", str(src), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "pig.npz" in err and "corrupt .npz" in err
    assert _files(out) == before  # nothing already written is lost
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src", "store"]  # no partial left


def test_prepare_option_errors_are_one_line(tmp_path, capsys):
    cases = [
        (["--src", str(tmp_path / "none"), "--out", str(tmp_path / "s")], "no such file or folder"),
        (["--src", str(QUICKDRAW / "binary"), "--out", str(tmp_path / "s"), "--classes", "cat"], "class 'cat'"),
        (["--src", str(QUICKDRAW / "binary"), "--out", str(tmp_path / "s"), "--per-class", "train=x"], "not an integer"),
        (["--src", str(QUICKDRAW / "binary"), "--out", str(tmp_path / "s"), "--per-class", "test=3"], "SPLIT=N"),
        (["--src", str(QUICKDRAW / "binary"), "--out", str(QUICKDRAW)], "not a sketch store"),
    ]
    for argv, message in cases:
        assert prepare_main(argv + ["--no-progress"]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err, err
    assert not (tmp_path / "s").exists()


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err and "\n" not in err and "Traceback" not in err, err
    return err


def test_unreadable_file_is_one_line_naming_it(tmp_path, capsys, monkeypatch):
    # Tests run as root, where chmod 000 does not stop reads: the readers' open() refuses instead.
    import builtins

    import data.formats as formats

    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(QUICKDRAW / "simplified" / "apple.ndjson", src)
    locked = src / "banana.ndjson"
    shutil.copy(QUICKDRAW / "simplified" / "banana.ndjson", locked)

    def guarded_open(path, *args, **kwargs):
        if Path(path) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return builtins.open(path, *args, **kwargs)

    monkeypatch.setattr(formats, "open", guarded_open, raising=False)
    out = tmp_path / "store"
    assert prepare_main(["--src", str(src), "--out", str(out), "--no-progress"]) == 2
    err = _one_line(capsys)
    assert str(locked) in err and "cannot read (Permission denied)" in err
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_an_os_error_anywhere_in_the_cli_is_one_line_naming_the_file(tmp_path, capsys, monkeypatch):
    from data.formats import NdjsonSource

    def refused(self, report):
        raise PermissionError(13, "Permission denied", str(self.path))

    monkeypatch.setattr(NdjsonSource, "index", refused)
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(QUICKDRAW / "simplified" / "apple.ndjson", src)
    assert prepare_main(["--src", str(src), "--out", str(tmp_path / "store"), "--no-progress"]) == 2
    err = _one_line(capsys)
    assert str(src / "apple.ndjson") in err and "Permission denied" in err and "not changed" in err


def test_gzip_file_named_ndjson_is_refused_by_name(tmp_path, capsys):
    import gzip

    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(QUICKDRAW / "simplified" / "apple.ndjson", src)
    packed = src / "banana.ndjson"
    packed.write_bytes(gzip.compress((QUICKDRAW / "simplified" / "banana.ndjson").read_bytes()))
    out = tmp_path / "store"
    assert prepare_main(["--src", str(src), "--out", str(out), "--no-progress"]) == 2
    err = _one_line(capsys)
    assert str(packed) in err and "compressed (gzip); gunzip it first" in err
    assert not out.exists()


def test_a_class_without_any_sketch_refuses_the_store_unless_allowed(tmp_path, capsys):
    src = tmp_path / "src"
    (src / "raw").mkdir(parents=True)
    shutil.copy(QUICKDRAW / "simplified" / "apple.ndjson", src)
    (src / "raw" / "apple.ndjson").write_bytes(b"")  # an empty copy beside a good file: warned, not fatal
    (src / "cat.ndjson").write_bytes(b"")  # the class's only file is empty
    (src / "dog.ndjson").write_text("not json\n{\"key_id\": \"1\"}\n")  # nothing usable in it
    out = tmp_path / "store"
    args = ["--src", str(src), "--out", str(out), "--no-progress", "--per-class", "train=5,val=1,query=1,gallery=1"]
    assert prepare_main(args) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert "\n" not in err and "2 class(es) have no usable sketch ('cat', 'dog'" in err, err
    assert "the store was not written (--allow-empty-classes writes it anyway)" in err
    assert f"warning: {src / 'cat.ndjson'} gives no sketch (empty file)" in captured.out
    assert f"warning: {src / 'raw' / 'apple.ndjson'} gives no sketch (empty file)" in captured.out
    assert not out.exists()
    assert prepare_main(args + ["--allow-empty-classes"]) == 0
    printed = capsys.readouterr().out
    assert "warning: 2 class(es) with no sketch at all (--allow-empty-classes): cat, dog" in printed
    meta = read_meta(out)
    assert meta["class_names"] == ["apple", "cat", "dog"]
    assert [sum(meta["splits"][s]["per_class"][i] for s in STORE_SPLITS) for i in range(3)] == [8, 0, 0]
    report = json.loads((out / "report.json").read_text())
    assert report["empty_classes"] == ["cat", "dog"]
    assert {Path(f["path"]).name for f in report["files_without_sketches"]} == {"apple.ndjson", "cat.ndjson"}


def test_tiny_splits_are_warned_about(tmp_path, capsys):
    from data.prepare import TINY_SPLIT

    # The defaults (11,100 a class) on a small sample: most classes get no query at all.
    assert prepare_main(["--src", str(QUICKDRAW / "simplified"), "--out", str(tmp_path / "a"), "--no-progress",
                         "--classes", "apple,arm,banana,monkey"]) == 0
    printed = capsys.readouterr().out
    meta = read_meta(tmp_path / "a")
    query = meta["splits"]["query"]
    assert query["sketches"] < TINY_SPLIT == 100
    missing = sum(1 for n in query["per_class"] if n == 0)
    assert missing > 0
    assert (f"warning: split 'query' holds {query['sketches']} sketch(es) in all, none for {missing} of 4 classes "
            f"(asked 100 a class; under {TINY_SPLIT} in all, figures on it are noise)") in printed
    assert "split 'train'" not in printed  # 280 train sketches, every class has some
    # Splits asked for no sketch are not warned about; large enough ones are not either.
    assert prepare_main(["--src", str(QUICKDRAW / "simplified"), "--out", str(tmp_path / "b"), "--no-progress",
                         "--classes", "apple,banana,monkey", "--per-class", "train=100,val=0,query=0,gallery=0"]) == 0
    assert "warning" not in capsys.readouterr().out


def test_not_a_store_suggests_preparing_into_a_new_folder(tmp_path):
    with pytest.raises(StoreError) as info:
        read_meta(QUICKDRAW / "simplified")  # the folder of downloaded files, given as --data
    message = str(info.value)
    assert f"--src {QUICKDRAW / 'simplified'} --out {QUICKDRAW / 'simplified_store'}" in message
    assert "new folder" in message and "\n" not in message
    with pytest.raises(StoreError, match=r"--src DIR --out .*empty_store"):
        (tmp_path / "empty").mkdir()
        read_meta(tmp_path / "empty")


# ----------------------------------------------------------------------------- atomic writes


def test_interrupted_prepare_leaves_old_store_or_none_and_rerun_is_identical(tmp_path, store, monkeypatch):
    reference = _files(store)
    out = tmp_path / "store"
    real_append = StoreWriter.append
    calls = {"n": 0}

    def dying_append(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt  # Ctrl-C in the middle of writing
        return real_append(self, *args, **kwargs)

    monkeypatch.setattr(StoreWriter, "append", dying_append)
    with pytest.raises(KeyboardInterrupt):
        _prepare(out)
    assert list(tmp_path.iterdir()) == []  # no store, no partial folder
    monkeypatch.setattr(StoreWriter, "append", real_append)
    _prepare(out)
    assert _files(out) == reference

    # Over an existing store: an interrupted run leaves the old one intact.
    old = _files(out)
    calls["n"] = 0
    monkeypatch.setattr(StoreWriter, "append", dying_append)
    with pytest.raises(KeyboardInterrupt):
        _prepare(out, seed=5)
    assert _files(out) == old and sorted(p.name for p in tmp_path.iterdir()) == ["store"]
    monkeypatch.setattr(StoreWriter, "append", real_append)

    # A run killed outright (SIGKILL) leaves its partial folder; the next run removes it.
    partial = tmp_path / ".store.partial"
    (partial / "train").mkdir(parents=True)
    (partial / "train" / "points.npy").write_bytes(b"half a store")
    shutil.rmtree(out)
    _prepare(out)
    assert _files(out) == reference and not partial.exists()


def test_writer_refuses_to_replace_a_folder_that_is_not_a_store(tmp_path):
    (tmp_path / "mine.txt").write_text("precious")
    with pytest.raises(StoreError, match="not a sketch store"):
        StoreWriter(tmp_path, num_classes=3)
    assert (tmp_path / "mine.txt").read_text() == "precious"


# ----------------------------------------------------------------------------- reading


def test_store_source_pickles_cheaply_and_works_in_workers(store):
    src = StoreSketches(store, "train")
    assert all(isinstance(a, np.memmap) for a in src._open().values())
    blob = pickle.dumps(src)
    assert len(blob) < 2000  # no arrays inside, whatever the store's size
    clone = pickle.loads(blob)
    assert clone._arrays is None and clone[3] == src[3]
    ds = RasterDataset(src, image_size=32)
    one = next(iter(torch.utils.data.DataLoader(ds, batch_size=8, num_workers=0)))
    two = next(iter(torch.utils.data.DataLoader(ds, batch_size=8, num_workers=2)))
    assert torch.equal(one[0], two[0]) and torch.equal(one[1], two[1])
    x, y = StrokeDataset(StoreSketches(store, "query"))[0]
    assert x.shape == (100, 4) and 0 <= y < 4


def test_a_3_8_million_sketch_split_opens_without_reading_its_arrays(tmp_path, monkeypatch):
    # What makes opening a full-size split cheap on any machine: every per-sketch array is
    # memory-mapped, not read (checked on the np.load calls, not with a clock).
    from data import store as store_module

    n, per = 3_829_500, 45
    root = tmp_path / "big"
    (root / "train").mkdir(parents=True)
    fmt = np.lib.format
    fmt.open_memmap(root / "train" / "points.npy", "w+", np.uint8, (n * per, 3)).flush()  # sparse
    offsets = fmt.open_memmap(root / "train" / "offsets.npy", "w+", np.int64, (n + 1,))
    offsets[:] = np.arange(n + 1, dtype=np.int64) * per
    offsets.flush()
    fmt.open_memmap(root / "train" / "labels.npy", "w+", np.int16, (n,)).flush()
    fmt.open_memmap(root / "train" / "key_ids.npy", "w+", "S16", (n,)).flush()
    meta = {"format": "quickdraw-sketch-store", "version": 1, "class_names": ["a"], "num_classes": 1,
            "splits": {"train": {"sketches": n, "points": n * per}}}
    (root / "meta.json").write_text(json.dumps(meta))
    loads = {}
    real_load = np.load

    def load(file, *args, **kwargs):
        loads[Path(getattr(file, "name", file)).name] = kwargs.get("mmap_mode")
        return real_load(file, *args, **kwargs)

    monkeypatch.setattr(store_module.np, "load", load)
    try:
        src = StoreSketches(root, "train")
        last = src[n - 1]
        assert len(src) == n and sum(len(s) for s in last.strokes) == per
        assert loads and all(mode == "r" for mode in loads.values()), loads
        assert {"points.npy", "offsets.npy"} <= set(loads)
        assert len(pickle.dumps(src)) < 2000
        assert src.labels.shape == (n,) and src.labels.dtype == np.int64
    finally:
        del offsets
        shutil.rmtree(root)  # half a gigabyte of (sparse) file


def test_store_errors_are_one_line(tmp_path, store):
    with pytest.raises(StoreError, match="does not exist"):
        StoreSketches(tmp_path / "nope", "train")
    with pytest.raises(StoreError, match="not a prepared sketch store"):
        StoreSketches(tmp_path, "train")
    with pytest.raises(StoreError, match="unknown split"):
        StoreSketches(store, "test")
    broken = tmp_path / "broken"
    shutil.copytree(store, broken)
    np.save(broken / "val" / "labels.npy", np.zeros(1, np.int16))
    with pytest.raises(StoreError, match="damaged"):
        StoreSketches(broken, "val")


# ----------------------------------------------------------------------------- engine


def test_engine_reads_the_store(tmp_path, store):
    cfg = load_config("cnn_rotation", {"data.source": "store", "data.path": str(store), "data.image_size": 64})
    assert build.num_data_classes(cfg) == 4
    ds = build.build_dataset(cfg, "gallery")
    assert len(ds) == read_meta(store)["splits"]["gallery"]["sketches"] and ds[0][0].shape == (1, 64, 64)
    sup = load_config("tcn_supervised", {"data.source": "store", "data.path": str(store)})
    assert build.head_size(sup) == 4  # the supervised head is sized from the store
    assert build.build_dataset(sup, "train")[0][0].shape == (100, 4)
    # A tiny store whose val split is empty: a clear error, not a crash.
    tiny = tmp_path / "tiny"
    _prepare(tiny, classes=["apple"], per_class={"train": 3, "val": 0, "query": 1, "gallery": 1})
    cfg = load_config("cnn_rotation", {"data.source": "store", "data.path": str(tiny)})
    with pytest.raises(ConfigError, match=r"split 'val' of store .*tiny is empty"):
        build.build_source(cfg, "val")
    cfg = load_config("cnn_rotation", {"data.source": "store", "data.path": str(tmp_path)})
    with pytest.raises(ConfigError, match="not a prepared sketch store"):
        build.num_data_classes(cfg)


def test_prepare_killed_with_sigkill_then_rerun_gives_the_same_store(tmp_path):
    import signal
    import subprocess
    import sys

    classes = sorted(f.stem for f in (QUICKDRAW / "raw").glob("*.ndjson"))[:100]
    args = ["--src", str(QUICKDRAW / "raw"), "--classes", ",".join(classes), "--no-progress"]
    out = tmp_path / "store"
    partial = tmp_path / ".store.partial"
    proc = subprocess.Popen([sys.executable, "-m", "data.prepare", *args, "--out", str(out)],
                            cwd=Path(__file__).resolve().parents[2], stdout=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while not partial.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.005)
        assert partial.exists(), "prepare never started writing"
        time.sleep(0.05)  # let it get into the classes (a run takes over a second here)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists() and partial.exists()  # a partial folder, never a half store at out
    assert prepare_main(args + ["--out", str(out)]) == 0
    reference = tmp_path / "reference"
    assert prepare_main(args + ["--out", str(reference)]) == 0
    assert _files(out) == _files(reference) and not partial.exists()


def test_feature_cache_key_changes_when_a_store_is_reprepared_at_the_same_path(tmp_path):
    # Evaluation caches features keyed by the data they came from; a store re-prepared in
    # place (other seed, so other sketches per split) must not reuse the old features.
    from evaluation.features import data_digest

    out = tmp_path / "store"
    over = {"data.source": "store", "data.path": str(out)}
    _prepare(out, classes=["apple"], per_class={"train": 3, "val": 1, "query": 2, "gallery": 3})
    first = data_digest(load_config("tcn_rotation", over))
    assert data_digest(load_config("tcn_rotation", over)) == first  # stable for the same store
    _prepare(out, classes=["apple"], per_class={"train": 3, "val": 1, "query": 2, "gallery": 3}, seed=7)
    assert data_digest(load_config("tcn_rotation", over)) != first
