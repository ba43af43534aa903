"""download.sh end to end against a local HTTP server laid out like Google's bucket and
serving the real shared sample: files, checksums, resuming a partial download, the store it
prepares, one training step on it and retrieval on its query/gallery splits."""

import functools
import hashlib
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from data.store import StoreSketches, read_meta
from engine.cli import train_main
from evaluation.run import eval_main
from tests.common import QUICKDRAW, ROOT, needs_quickdraw

CLASSES = ["apple", "The Eiffel Tower", "coffee cup"]
PER_CLASS = "train=10,val=2,query=2,gallery=4"

pytestmark = [
    needs_quickdraw,
    pytest.mark.skipif(shutil.which("curl") is None or shutil.which("bash") is None, reason="needs bash and curl"),
]


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Static files with single-range ``Range: bytes=N-`` support (as Cloud Storage has).
    ``ranges=False`` ignores Range headers, like a plain static server."""

    ranges = True
    log: list = []

    def send_head(self):
        path = self.translate_path(self.path)
        if not os.path.isfile(path):
            return super().send_head()  # 404
        size = os.path.getsize(path)
        want = self.headers.get("Range") if self.ranges else None
        self.log.append((self.command, self.path, want))
        start = 0
        if want:
            start = int(re.fullmatch(r"bytes=(\d+)-", want.strip()).group(1))
            if start >= size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return None
        f = open(path, "rb")
        f.seek(start)
        self.send_response(206 if want else 200)
        if want:
            self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Content-Length", str(size - start))
        self.end_headers()
        return f

    def log_message(self, *args):
        pass


@pytest.fixture
def bucket(tmp_path):
    """A server on 127.0.0.1 whose /quickdraw_dataset/full/simplified/ holds links to the
    sample's simplified files. Yields (base URL, handler class)."""
    served = tmp_path / "bucket" / "quickdraw_dataset" / "full" / "simplified"
    served.mkdir(parents=True)
    for f in (QUICKDRAW / "simplified").glob("*.ndjson"):
        os.symlink(f, served / f.name)
    handler = type("Handler", (_Handler,), {"log": [], "ranges": True})
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(handler, directory=str(tmp_path / "bucket"))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/quickdraw_dataset/full/simplified", handler
    finally:
        server.shutdown()
        server.server_close()


def _run(base_url, *args):
    env = dict(os.environ, QUICKDRAW_BASE_URL=base_url, PYTHON=sys.executable)
    return subprocess.run(["bash", str(ROOT / "download.sh"), *args], env=env, capture_output=True, text=True,
                          timeout=120)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_download_resume_checksums_prepare_train_and_evaluate(tmp_path, bucket):
    base_url, handler = bucket
    root = tmp_path / "qd"
    dl = root / "simplified"
    dl.mkdir(parents=True)
    apple = (QUICKDRAW / "simplified" / "apple.ndjson").read_bytes()
    (dl / "apple.ndjson.part").write_bytes(apple[:1000])  # a download cut off earlier
    out = _run(base_url, "--dir", str(root), "--classes", ",".join(CLASSES), "--", "--per-class", PER_CLASS,
               "--no-progress")
    assert out.returncode == 0, out.stderr
    assert "apple: resuming at byte 1000" in out.stdout

    # Files: complete, byte for byte, under Google's names; no .part left.
    assert sorted(p.name for p in dl.iterdir()) == sorted([f"{c}.ndjson" for c in CLASSES] + ["SHA256SUMS"])
    for c in CLASSES:
        assert (dl / f"{c}.ndjson").read_bytes() == (QUICKDRAW / "simplified" / f"{c}.ndjson").read_bytes()
    # The resume asked only for the missing bytes; the space was sent as %20.
    assert ("GET", "/quickdraw_dataset/full/simplified/apple.ndjson", "bytes=1000-") in handler.log
    assert any(p.endswith("/The%20Eiffel%20Tower.ndjson") for _, p, _ in handler.log)
    # Checksums in sha256sum format.
    lines = (dl / "SHA256SUMS").read_text().splitlines()
    assert sorted(lines) == sorted(f"{_sha(dl / f'{c}.ndjson')}  {c}.ndjson" for c in CLASSES)

    # The prepared store.
    store = root / "store"
    meta = read_meta(store)
    assert meta["class_names"] == ["apple", "coffee cup", "The Eiffel Tower"]
    assert meta["per_class_asked"] == {"train": 10, "val": 2, "query": 2, "gallery": 4}
    assert [meta["splits"][s]["sketches"] for s in ("train", "val", "query", "gallery")] == [28, 6, 6, 11]
    assert "'The Eiffel Tower': 15 -> 8/2/2/3" in out.stdout  # the short class, reported

    # A second run downloads nothing and rebuilds the same store.
    before = {p: p.read_bytes() for p in store.rglob("*") if p.is_file()}
    handler.log.clear()
    again = _run(base_url, "--dir", str(root), "--classes", ",".join(CLASSES), "--", "--per-class", PER_CLASS,
                 "--no-progress")
    assert again.returncode == 0, again.stderr
    assert handler.log == [] and again.stdout.count("already downloaded") == 3
    assert {p: p.read_bytes() for p in store.rglob("*") if p.is_file()} == before

    # One training step on the real sketches, then retrieval on the real query/gallery splits.
    exp = tmp_path / "exp"
    assert train_main("cnn", ["--exp", "cnn_rotation", "--data", str(store), "--epochs", "1", "--max-steps", "1",
                              "--batch-size", "2", "--set", "data.image_size=64", "--out", str(exp),
                              "--no-progress", "--device", "cpu"]) == 0
    ckpt = exp / "cnn_rotation" / "last.pt"
    assert ckpt.is_file()
    result = tmp_path / "retrieval.json"
    assert eval_main(["--ckpt", str(ckpt), "--data", str(store), "--device", "cpu", "--no-progress",
                      "--topk", "1", "5", "--json", str(result)]) == 0
    row = json.loads(result.read_text())["results"][0]
    assert row["gallery_size"] == len(StoreSketches(store, "gallery")) == 11
    assert 0.0 <= row["mAP"] <= 1.0


def test_server_without_ranges_and_complete_part_files(tmp_path, bucket):
    base_url, handler = bucket
    handler.ranges = False
    dl = tmp_path / "simplified"
    dl.mkdir(parents=True)
    eiffel = (QUICKDRAW / "simplified" / "The Eiffel Tower.ndjson").read_bytes()
    (dl / "apple.ndjson.part").write_bytes(b"x" * 500)  # cannot be resumed here: start over
    (dl / "The Eiffel Tower.ndjson.part").write_bytes(eiffel)  # finished, not yet renamed
    out = _run(base_url, "--dir", str(tmp_path), "--classes", "apple,The Eiffel Tower", "--no-prepare")
    assert out.returncode == 0, out.stderr
    assert "cannot resume; downloading the whole file" in out.stderr
    assert "The Eiffel Tower: complete in" in out.stdout
    for c in ("apple", "The Eiffel Tower"):
        assert (dl / f"{c}.ndjson").read_bytes() == (QUICKDRAW / "simplified" / f"{c}.ndjson").read_bytes()
    assert not list(dl.glob("*.part")) and not (tmp_path / "store").exists()


def test_bad_class_names_and_missing_files_are_one_line_errors(tmp_path, bucket):
    base_url, _ = bucket
    out = _run(base_url, "--dir", str(tmp_path), "--classes", "apple,doggo")
    assert out.returncode == 2 and out.stderr.strip() == (
        "download.sh: error: unknown category 'doggo' (names as in data/categories.txt, e.g. 'The Eiffel Tower')"
    )
    assert not (tmp_path / "simplified").exists() or not any((tmp_path / "simplified").iterdir())
    # zigzag is a category, but the sample has no simplified zigzag: the server says 404.
    out = _run(base_url, "--dir", str(tmp_path), "--classes", "apple,zigzag")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1].startswith("download.sh: error: downloading 'zigzag' from ")
    assert (tmp_path / "simplified" / "apple.ndjson").is_file()  # what was fetched stays
    assert not (tmp_path / "store").exists()


def test_verify_downloads_a_damaged_file_again(tmp_path, bucket):
    base_url, handler = bucket
    assert _run(base_url, "--dir", str(tmp_path), "--classes", "apple", "--no-prepare").returncode == 0
    f = tmp_path / "simplified" / "apple.ndjson"
    good = f.read_bytes()
    f.write_bytes(good[:-2] + b"]\n")  # same size, different bytes
    handler.log.clear()
    out = _run(base_url, "--dir", str(tmp_path), "--classes", "apple", "--no-prepare")
    assert "already downloaded" in out.stdout and handler.log == []  # trusted without --verify
    out = _run(base_url, "--dir", str(tmp_path), "--classes", "apple", "--no-prepare", "--verify")
    assert out.returncode == 0 and "checksum differs from SHA256SUMS" in out.stderr
    assert f.read_bytes() == good
    assert (tmp_path / "simplified" / "SHA256SUMS").read_text() == f"{_sha(f)}  apple.ndjson\n"
