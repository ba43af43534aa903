"""The packed sketch store: prepared Quick, Draw! splits as memory-mapped arrays.

Layout of a store folder (written by :mod:`data.prepare`, read by :class:`StoreSketches`)::

    STORE/
      meta.json              format version, class names, seed, counts, sha256 of the
                             arrays per split and of all of them (written last)
      report.json            what prepare skipped and why, short classes, duplicates
      train/ val/ query/ gallery/
        points.npy           uint8 (P, 3): x, y, end_of_stroke (1 on each stroke's last point)
        offsets.npy          int64 (N + 1,): sketch i is points[offsets[i]:offsets[i + 1]]
        labels.npy           int16 (N,): class index into meta["class_names"]
        key_ids.npy          bytes |S<w> (N,): the drawing's key_id, UTF-8, fixed width

Coordinates are the integers 0..255 of Google's simplified drawings, so one byte each:
3 bytes per point, about a third of the ``.ndjson`` size of the same sketches (measured on
the sample: 174 kB of arrays per 1,000 sketches against 512 kB of ndjson). Within a
split, sketches are ordered by class (the order of ``class_names``) and then by their
split hash (see :mod:`data.prepare`); training shuffles anyway.

Opening a split reads ``meta.json`` and the ``.npy`` headers only: the arrays are opened
with ``np.load(mmap_mode="r")``, so a 3.8-million-sketch split opens in well under a
second and every DataLoader worker shares the same page cache instead of a copy. A
:class:`StoreSketches` pickles without its arrays (its path and class names only) and
reopens them lazily in the worker. ``meta["content_sha256"]`` changes whenever the
store's content does: a cache of features computed from a store can key on it.

Store folders are written by :class:`StoreWriter` under a temporary sibling name
(``.NAME.partial``) and renamed into place only when complete, ``meta.json`` last; a
killed run leaves no half-written store behind, and the next run starts over.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np

from utils.atomic import fsync_dir

from .sketch import Sketch

STORE_FORMAT = "quickdraw-sketch-store"
STORE_VERSION = 1
STORE_SPLITS = ("train", "val", "query", "gallery")
"""Split folders of a store; the same names as the trainer's and the evaluation's splits."""

POINT_COLUMNS = ("x", "y", "end_of_stroke")
_NPY_HEADER = 128  # bytes; numpy's v1.0 header for every array written here (checked)


class StoreError(ValueError):
    """A store that cannot be opened or written. The message is one line naming the path."""


# ----------------------------------------------------------------------------- reading


def read_meta(path: str | Path) -> dict:
    """The ``meta.json`` of a store folder, checked to be a store this code can read."""
    path = Path(path)
    if not path.exists():
        raise StoreError(f"data path {path} does not exist")
    meta_path = path / "meta.json"
    if not meta_path.is_file():
        raise StoreError(
            f"{path} is not a prepared sketch store (no meta.json); build one with "
            "python -m data.prepare --src DIR --out " + str(path)
        )
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise StoreError(f"{meta_path}: unreadable ({err})") from None
    if not isinstance(meta, dict) or meta.get("format") != STORE_FORMAT:
        raise StoreError(f"{meta_path}: not a {STORE_FORMAT} meta file")
    if meta.get("version") != STORE_VERSION:
        raise StoreError(
            f"{meta_path}: store version {meta.get('version')} but this code reads version {STORE_VERSION}; "
            "prepare the store again"
        )
    return meta


def is_store(path: str | Path) -> bool:
    """True when ``path`` holds a readable store's ``meta.json``."""
    try:
        read_meta(path)
    except StoreError:
        return False
    return True


def split_strokes(points: np.ndarray) -> tuple[np.ndarray, ...]:
    """(n, 3) stored rows ``[x, y, end_of_stroke]`` -> float32 (n_i, 2) strokes."""
    ends = np.flatnonzero(points[:, 2]) + 1
    xy = points[:, :2].astype(np.float32)
    return tuple(p for p in np.split(xy, ends) if len(p))


class StoreSketches:
    """One split of a prepared store, as a sketch source (like ``SyntheticSketches``).

    ``store[i]`` is a :class:`Sketch` (label an int, key_id a str); ``labels`` (int64),
    ``num_classes`` and ``class_names`` come from the store without decoding any sketch.

    Args:
        path: the store folder.
        split: one of :data:`STORE_SPLITS`.

    Raises:
        StoreError: not a store, an unknown split, or a split whose files are missing or
            do not agree with ``meta.json``.
    """

    def __init__(self, path: str | Path, split: str) -> None:
        self.path = Path(path)
        meta = read_meta(self.path)
        if split not in STORE_SPLITS:
            raise StoreError(f"unknown split '{split}' (one of {', '.join(STORE_SPLITS)})")
        info = meta.get("splits", {}).get(split)
        if info is None:
            raise StoreError(f"store {self.path} has no split '{split}'")
        self.split = split
        self.class_names: tuple[str, ...] = tuple(meta["class_names"])
        self.num_classes = len(self.class_names)
        self._count = int(info["sketches"])
        self._points = int(info["points"])
        self._arrays: dict[str, np.ndarray] | None = None
        self._labels: np.ndarray | None = None
        self._open()  # check now, in the main process, that the files exist and agree

    # Arrays are opened lazily so that pickling (DataLoader workers) stays cheap.
    def _open(self) -> dict[str, np.ndarray]:
        if self._arrays is None:
            folder = self.path / self.split
            arrays = {}
            for name in ("points", "offsets", "labels", "key_ids"):
                f = folder / f"{name}.npy"
                try:
                    arrays[name] = np.load(f, mmap_mode="r")
                except (OSError, ValueError) as err:
                    raise StoreError(f"{f}: cannot open ({err})") from None
            n = self._count
            expect = {"points": (self._points, 3), "offsets": (n + 1,), "labels": (n,), "key_ids": (n,)}
            for name, shape in expect.items():
                if arrays[name].shape != shape:
                    raise StoreError(
                        f"{folder / name}.npy: shape {arrays[name].shape}, meta.json says {shape}; "
                        "the store is damaged, prepare it again"
                    )
            self._arrays = arrays
        return self._arrays

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_arrays"] = None  # reopened (memory-mapped) in the worker, never copied
        state["_labels"] = None
        return state

    def __len__(self) -> int:
        return self._count

    @property
    def labels(self) -> np.ndarray:
        """int64 (N,) labels of the split, read without decoding any sketch."""
        if self._labels is None:
            self._labels = np.asarray(self._open()["labels"], dtype=np.int64)
        return self._labels

    def key_id(self, i: int) -> str:
        return bytes(self._open()["key_ids"][i]).decode("utf-8")

    def __getitem__(self, i: int) -> Sketch:
        n = self._count
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for {n} sketches")
        i = int(i) % n
        a = self._open()
        start, stop = int(a["offsets"][i]), int(a["offsets"][i + 1])
        strokes = split_strokes(np.asarray(a["points"][start:stop]))
        return Sketch(strokes, label=int(a["labels"][i]), key_id=self.key_id(i))

    def __repr__(self) -> str:
        return f"StoreSketches({str(self.path)!r}, split={self.split!r}, sketches={self._count}, classes={self.num_classes})"


# ----------------------------------------------------------------------------- writing


class _NpyStream:
    """Append rows to a ``.npy`` file whose length is only known at the end.

    A 128-byte placeholder header is written first and replaced by the real header (same
    length: numpy pads its v1.0 header to a multiple of 64 bytes) when the file is closed.
    """

    def __init__(self, path: Path, dtype: np.dtype, row_shape: tuple[int, ...]) -> None:
        self.path = path
        self.dtype = np.dtype(dtype)
        self.row_shape = row_shape
        self.rows = 0
        self.sha256 = hashlib.sha256()  # of the data bytes (the header excluded)
        self._f = open(path, "wb")
        self._f.write(b"\0" * _NPY_HEADER)

    def append(self, rows: np.ndarray) -> None:
        rows = np.ascontiguousarray(rows, dtype=self.dtype)
        if rows.shape[1:] != self.row_shape:
            raise ValueError(f"{self.path}: rows of shape {rows.shape[1:]}, expected {self.row_shape}")
        data = rows.tobytes()
        self._f.write(data)
        self.sha256.update(data)
        self.rows += len(rows)

    def close(self) -> None:
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False,
                  "shape": (self.rows, *self.row_shape)}
        self._f.seek(0)
        np.lib.format.write_array_header_1_0(self._f, header)
        if self._f.tell() != _NPY_HEADER:
            raise RuntimeError(f"{self.path}: npy header is {self._f.tell()} bytes, expected {_NPY_HEADER}")
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()

    def abort(self) -> None:
        self._f.close()


class StoreWriter:
    """Writes a store folder atomically: everything goes to ``.NAME.partial`` next to it,
    which replaces ``NAME`` only in :meth:`commit` (``meta.json`` written last).

    Use as a context manager: leaving the block with an exception (or a Ctrl-C) deletes the
    partial folder and leaves an existing store at ``out`` untouched. A run killed outright
    leaves the partial folder, which the next writer deletes before starting.

    Args:
        out: the store folder to (re)create. If it exists it must be a store (or empty):
            any other folder is refused rather than replaced.
        num_classes: sets the label dtype (int16 up to 32767 classes, else int32).
    """

    def __init__(self, out: str | Path, num_classes: int) -> None:
        self.out = Path(out)
        if self.out.exists() and not (self.out.is_dir() and (is_store(self.out) or not any(self.out.iterdir()))):
            raise StoreError(
                f"{self.out} exists and is not a sketch store; refusing to replace it (choose another --out)"
            )
        self.partial = self.out.parent / f".{self.out.name}.partial"
        self.old = self.out.parent / f".{self.out.name}.old"
        self.label_dtype = np.dtype(np.int16 if num_classes <= np.iinfo(np.int16).max else np.int32)
        self._streams: dict[str, _NpyStream] = {}
        self._lengths: dict[str, list[np.ndarray]] = {}
        self._labels: dict[str, list[np.ndarray]] = {}
        self._keys: dict[str, list[np.ndarray]] = {}
        self.committed = False

    def __enter__(self) -> "StoreWriter":
        if self.partial.exists():  # left by a killed run
            shutil.rmtree(self.partial)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.partial.mkdir()
        for split in STORE_SPLITS:
            (self.partial / split).mkdir()
            self._streams[split] = _NpyStream(self.partial / split / "points.npy", np.uint8, (3,))
            self._lengths[split], self._labels[split], self._keys[split] = [], [], []
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self.committed:
            for s in self._streams.values():
                s.abort()
            shutil.rmtree(self.partial, ignore_errors=True)

    def append(self, split: str, points: np.ndarray, lengths: np.ndarray, label: int, key_ids: list[str]) -> None:
        """Add sketches of one class to a split.

        Args:
            points: uint8-valued (P, 3) rows ``[x, y, end_of_stroke]`` of all the sketches.
            lengths: (n,) points per sketch, summing to P.
            label: their class index.
            key_ids: their n key_ids.
        """
        lengths = np.asarray(lengths, dtype=np.int64)
        if int(lengths.sum()) != len(points) or len(key_ids) != len(lengths):
            raise ValueError(f"split {split}: {len(points)} points, lengths sum to {int(lengths.sum())}, "
                             f"{len(key_ids)} key_ids for {len(lengths)} sketches")
        if len(lengths) == 0:
            return
        self._streams[split].append(points)
        self._lengths[split].append(lengths)
        self._labels[split].append(np.full(len(lengths), label, dtype=self.label_dtype))
        self._keys[split].append(np.array([k.encode("utf-8") for k in key_ids], dtype=np.bytes_))

    def commit(self, meta: dict, extra_files: dict[str, str] | None = None) -> dict:
        """Finish every array, write ``extra_files`` (name -> text) and ``meta.json``, then
        move the store into place. Returns the meta written (with per-split counts added)."""
        meta = dict(meta, format=STORE_FORMAT, version=STORE_VERSION, splits={})
        whole = hashlib.sha256()
        for split in STORE_SPLITS:
            folder = self.partial / split
            stream = self._streams[split]
            stream.close()
            lengths = np.concatenate(self._lengths[split]) if self._lengths[split] else np.zeros(0, np.int64)
            offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
            np.cumsum(lengths, out=offsets[1:])
            labels = np.concatenate(self._labels[split]) if self._labels[split] else np.zeros(0, self.label_dtype)
            keys = np.concatenate(self._keys[split]) if self._keys[split] else np.zeros(0, dtype="S1")
            digest = stream.sha256
            for name, arr in (("offsets", offsets), ("labels", labels), ("key_ids", keys)):
                with open(folder / f"{name}.npy", "wb") as f:
                    np.save(f, arr)
                    f.flush()
                    os.fsync(f.fileno())
                digest.update(f"{name}:{arr.dtype.str}:{arr.shape}".encode())
                digest.update(arr.tobytes())
            whole.update(digest.digest())
            meta["splits"][split] = {
                "sketches": int(len(lengths)),
                "points": int(stream.rows),
                "key_id_width": int(keys.dtype.itemsize),
                "per_class": np.bincount(labels.astype(np.int64), minlength=len(meta["class_names"])).tolist(),
                "sha256": digest.hexdigest(),
            }
        meta["content_sha256"] = whole.hexdigest()
        for name, text in (extra_files or {}).items():
            (self.partial / name).write_text(text, encoding="utf-8")
        tmp_meta = self.partial / "meta.json.tmp"
        tmp_meta.write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
        tmp_meta.replace(self.partial / "meta.json")
        fsync_dir(self.partial)
        # Swap into place. A crash between the two renames leaves no store at ``out`` (and
        # the complete new one at .partial, deleted and rebuilt by the next run): never a
        # half-written one.
        if self.old.exists():
            shutil.rmtree(self.old)
        if self.out.exists():
            os.replace(self.out, self.old)
        os.replace(self.partial, self.out)
        self.committed = True
        fsync_dir(self.out.parent)
        shutil.rmtree(self.old, ignore_errors=True)
        return meta
