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
        stroke_tensors_T100_centred/   the split's stroke tensors, prepared once on first
                             use (:meth:`StoreSketches.stroke_tensors`; not part of the content
                             hashes: a cache, rebuilt when it does not match)
        rasters_S224_w3_centred/       the split's rasters as uint8 ink levels, drawn once,
                             only where asked for (``data.raster_cache``;
                             :meth:`StoreSketches.raster_levels`): 50 kB a 224 px sketch

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

import contextlib
import hashlib
import json
import os
import shutil
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

try:
    import fcntl
except ImportError:  # not POSIX: caches are built without a lock
    fcntl = None

from .render import RENDER_RULE, render_packed
from .sketch import BOX, Sketch, fit_packed, ragged_index
from .strokes import STROKE_RULE, PackedStrokeTensors, packed_stroke_rows

STORE_FORMAT = "quickdraw-sketch-store"
STORE_VERSION = 1
STORE_SPLITS = ("train", "val", "query", "gallery")
"""Split folders of a store; the same names as the trainer's and the evaluation's splits."""

POINT_COLUMNS = ("x", "y", "end_of_stroke")
_NPY_HEADER = 128  # bytes; numpy's v1.0 header for every array written here (checked)


class StoreError(ValueError):
    """A store that cannot be opened or written. The message is one line naming the path."""


def _sync_folder(folder: Path) -> None:
    # The folder's own entries (a rename into it) reach the disk; best effort where a
    # folder cannot be opened. (Leaf packages import no other project package, so the
    # store does not borrow utils.atomic's file writer: it swaps whole folders instead.)
    try:
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def _publish_folder(partial: Path, out: Path) -> None:
    """Move the complete folder ``partial`` to ``out``, replacing what is there.

    A crash between the two renames leaves nothing at ``out`` (and the complete new folder
    at ``partial``, which the next writer deletes and rebuilds): never a half-written one.
    """
    _sync_folder(partial)
    old = out.parent / f".{out.name}.old"
    if old.exists():
        shutil.rmtree(old)
    if out.exists():
        os.replace(out, old)
    os.replace(partial, out)
    _sync_folder(out.parent)
    shutil.rmtree(old, ignore_errors=True)


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


@contextlib.contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock named after ``folder`` (a hidden file beside it), so that
    processes building the same cache at once (the ranks of a torchrun) build it once."""
    with open(folder.parent / f".{folder.name}.lock", "a") as f:
        if fcntl is not None:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        yield


# ----------------------------------------------------------------------------- reading


def read_meta(path: str | Path) -> dict:
    """The ``meta.json`` of a store folder, checked to be a store this code can read."""
    path = Path(path)
    if not path.exists():
        raise StoreError(f"data path {path} does not exist")
    meta_path = path / "meta.json"
    if not meta_path.is_file():
        # Suggest a new folder: prepare refuses to write over a folder that is not a store
        # (such as the one holding the downloaded files).
        holds_files = path.is_dir() and any(next(path.glob(f"*{suffix}"), None) for suffix in (".ndjson", ".bin", ".npz"))
        raise StoreError(
            f"{path} is not a prepared sketch store (no meta.json); build one in a new folder, e.g. "
            f"python -m data.prepare --src {path if holds_files else 'DIR'} --out {path.parent / (path.name + '_store')}"
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

    # ------------------------------------------------------------------ whole batches
    def packed(self, indices: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Sketches ``indices`` in the packed form of :mod:`data.sketch`, with array operations.

        Returns:
            ``(xy float32 (P, 2), stroke_end bool (P,), offsets int64 (B + 1,), labels int64 (B,))``:
            the points and strokes of ``self[i]`` for each i, in order.
        """
        a = self._open()
        idx = np.asarray(indices, dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= self._count):
            raise IndexError(f"index out of range for {self._count} sketches")
        all_offsets = np.asarray(a["offsets"])  # plain views of the maps: np.memmap's indexing is slower
        starts = all_offsets[idx]
        lengths = all_offsets[idx + 1] - starts
        points = np.asarray(a["points"])[ragged_index(starts, lengths)]
        offsets = np.zeros(len(idx) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        return points[:, :2].astype(np.float32), points[:, 2] != 0, offsets, self.labels[idx]

    def _stroke_rows(self, max_len: int, center: bool, box: float, progress: bool
                     ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The split's packed stroke rows (:func:`data.strokes.packed_stroke_rows`), chunk by
        chunk: ``(rows, rows per sketch)``."""
        a = self._open()
        chunk = STROKE_CHUNK
        bounds = range(0, self._count, chunk)
        if progress and self._count > chunk:
            from tqdm import tqdm  # only for large splits

            bounds = tqdm(bounds, desc=f"stroke tensors ({self.split})", unit="chunk")
        for lo in bounds:
            hi = min(lo + chunk, self._count)
            first, last = int(a["offsets"][lo]), int(a["offsets"][hi])
            points = np.asarray(a["points"][first:last])
            offsets = np.asarray(a["offsets"][lo : hi + 1]) - first
            fitted = fit_packed(points[:, :2], offsets, box=box, center=center)
            rows, row_offsets = packed_stroke_rows(fitted, points[:, 2] != 0, offsets, max_len, box)
            yield rows, np.diff(row_offsets)

    def stroke_tensors(self, max_len: int = 100, center: bool = True, box: float = BOX, progress: bool = True,
                       log: Callable[[str], None] = _stderr) -> PackedStrokeTensors:
        """The split's stroke tensors, prepared once and cached beside the store.

        The cache is ``<store>/<split>/stroke_tensors_T<max_len>_<centred|topleft>/``:
        ``rows.npy`` float32 (R + 1, 4) (every real row, then a zero row), ``offsets.npy``
        int64 (N + 1,) and ``meta.json`` (the encoding rule, its settings and the split's
        sha256), opened memory-mapped. It is built on first use (a store prepared before this existed works
        as it is), and again when it no longer matches the split, the settings or the rule:
        written to a temporary folder and renamed into place, under a lock so that processes
        starting together build it once. About 60 us a sketch on one core (the >100-point
        simplification is most of it) and 774 bytes a sketch on disk: see bench/RESULTS.md.
        Where the store cannot be written (read-only), the tensors are built in memory for
        this process and a line says so.
        """
        folder = self.path / self.split / f"stroke_tensors_T{int(max_len)}_{'centred' if center else 'topleft'}"
        expect = {"format": STROKE_CACHE_FORMAT, "rule": STROKE_RULE, "max_len": int(max_len), "center": bool(center),
                  "box": float(box), "split_sha256": read_meta(self.path)["splits"][self.split].get("sha256"),
                  "sketches": self._count}
        table = _open_stroke_cache(folder, expect)
        if table is not None:
            return table
        try:
            with _folder_lock(folder):
                table = _open_stroke_cache(folder, expect)  # another process may have built it meanwhile
                if table is None:
                    if self._count > STROKE_CHUNK:
                        log(f"[data] preparing the stroke tensors of split '{self.split}' once ({self._count:,} "
                            f"sketches), cached in {folder}")
                    self._write_stroke_cache(folder, expect, progress)
                    table = _open_stroke_cache(folder, expect)
        except OSError as err:
            log(f"[data] cannot write {folder} ({err.strerror or err}); the stroke tensors of split "
                f"'{self.split}' are built in memory for this run")
        if table is not None:
            return table
        parts = list(self._stroke_rows(max_len, center, box, progress))
        offsets = np.zeros(self._count + 1, dtype=np.int64)
        np.cumsum(np.concatenate([n for _, n in parts] or [np.zeros(0, np.int64)]), out=offsets[1:])
        rows = np.concatenate([r for r, _ in parts] or [np.zeros((0, 4), np.float32)])
        return PackedStrokeTensors.from_rows(rows, offsets, max_len)

    def _write_stroke_cache(self, folder: Path, expect: dict, progress: bool) -> None:
        partial = folder.parent / f".{folder.name}.partial"
        shutil.rmtree(partial, ignore_errors=True)  # left by a killed run
        partial.mkdir()
        try:
            stream = _NpyStream(partial / "rows.npy", np.float32, (4,))
            counts = []
            try:
                for rows, n in self._stroke_rows(expect["max_len"], expect["center"], expect["box"], progress):
                    stream.append(rows)
                    counts.append(n)
                stream.append(np.zeros((1, 4), np.float32))  # the zero row that padding gathers
            finally:
                stream.close()
            offsets = np.zeros(self._count + 1, dtype=np.int64)
            np.cumsum(np.concatenate(counts or [np.zeros(0, np.int64)]), out=offsets[1:])
            with open(partial / "offsets.npy", "wb") as f:
                np.save(f, offsets)
                f.flush()
                os.fsync(f.fileno())
            (partial / "meta.json").write_text(json.dumps(dict(expect, rows=int(offsets[-1]))) + "\n", encoding="utf-8")
            _publish_folder(partial, folder)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise


    def raster_levels(self, size: int = 224, line_width: float = 3.0, center: bool = True, box: float = BOX,
                      progress: bool = True, log: Callable[[str], None] = _stderr,
                      automatic: bool = False) -> "CachedRasters | None":
        """The split's rasters as uint8 ink levels (:func:`data.render.render_packed`), drawn
        once and cached beside the store; None (and a line saying why) where they cannot be.

        The cache is ``<store>/<split>/rasters_S<size>_w<line_width>_<centred|topleft>/``:
        ``levels.npy`` uint8 (N, S, S), opened memory-mapped, and ``meta.json`` (the
        renderer's rule, the settings and the split's sha256). Built on first use and again
        when it no longer matches, written to a temporary folder and renamed into place under
        a lock, like :meth:`stroke_tensors`. Unlike them it is large (S * S bytes a sketch:
        50 kB at 224 px, 192 GB for the paper's 3.8 M sketches), so it is only built when
        asked for, and not at all (None) when the disk has less free space than it needs
        plus :data:`RASTER_FREE_MARGIN`, or the store cannot be written: the dataset then
        draws on the fly, as without a cache. ``automatic``: asked for by default rather than
        by the user, so a cache larger than :data:`RASTER_AUTO_BYTES` is not built either
        (a line says so, and how to build it anyway).
        """
        size, line_width = int(size), float(line_width)
        folder = self.path / self.split / f"rasters_S{size}_w{line_width:g}_{'centred' if center else 'topleft'}"
        expect = {"format": RASTER_CACHE_FORMAT, "rule": RENDER_RULE, "size": size, "line_width": line_width,
                  "center": bool(center), "box": float(box),
                  "split_sha256": read_meta(self.path)["splits"][self.split].get("sha256"), "sketches": self._count}
        table = _open_raster_cache(folder, expect)
        if table is not None:
            return table
        need = self._count * size * size
        if automatic and need > RASTER_AUTO_BYTES:
            log(f"[data] no raster cache for split '{self.split}': it would take {need / 1e9:.2f} GB, more than "
                f"the {RASTER_AUTO_BYTES / 1e9:g} GB built by default; drawing on the fly "
                "(--set data.raster_cache=True builds it anyway)")
            return None
        try:
            free = shutil.disk_usage(folder.parent).free
        except OSError:
            free = None
        if free is not None and need + RASTER_FREE_MARGIN > free:
            log(f"[data] no raster cache for split '{self.split}': it needs {need / 1e9:.2f} GB and "
                f"{folder.parent} has {free / 1e9:.2f} GB free (less a {RASTER_FREE_MARGIN / 1e9:g} GB margin); "
                "drawing on the fly")
            return None
        try:
            with _folder_lock(folder):
                table = _open_raster_cache(folder, expect)  # another process may have built it meanwhile
                if table is None:
                    log(f"[data] drawing the {size} px rasters of split '{self.split}' once ({self._count:,} sketches, "
                        f"{need / 1e9:.2f} GB), cached in {folder}")
                    self._write_raster_cache(folder, expect, progress)
                    table = _open_raster_cache(folder, expect)
        except OSError as err:
            log(f"[data] cannot write {folder} ({err.strerror or err}); split '{self.split}' is drawn on the fly")
            return None
        return table

    def _write_raster_cache(self, folder: Path, expect: dict, progress: bool) -> None:
        a = self._open()
        partial = folder.parent / f".{folder.name}.partial"
        shutil.rmtree(partial, ignore_errors=True)  # left by a killed run
        partial.mkdir()
        try:
            size = expect["size"]
            stream = _NpyStream(partial / "levels.npy", np.uint8, (size, size), digest=False)
            try:
                bounds = range(0, self._count, RASTER_CHUNK)
                if progress and self._count > RASTER_CHUNK:
                    from tqdm import tqdm  # only for large splits

                    bounds = tqdm(bounds, desc=f"rasters ({self.split})", unit="chunk")
                for lo in bounds:
                    hi = min(lo + RASTER_CHUNK, self._count)
                    first, last = int(a["offsets"][lo]), int(a["offsets"][hi])
                    points = np.asarray(a["points"][first:last])
                    offsets = np.asarray(a["offsets"][lo : hi + 1]) - first
                    # The datasets' batched path: float32 points, fitted, drawn (bit for bit)
                    fitted = fit_packed(points[:, :2].astype(np.float32), offsets, box=expect["box"],
                                        center=expect["center"])
                    stream.append(render_packed(fitted, points[:, 2] != 0, offsets, size=size,
                                                line_width=expect["line_width"], box=expect["box"]))
            finally:
                stream.close()
            (partial / "meta.json").write_text(json.dumps(expect) + "\n", encoding="utf-8")
            _publish_folder(partial, folder)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise


STROKE_CACHE_FORMAT = "packed-stroke-tensors"
STROKE_CHUNK = 1 << 16
"""Sketches encoded at a time when stroke tensors are prepared (bounds the memory used)."""


def _open_stroke_cache(folder: Path, expect: dict) -> PackedStrokeTensors | None:
    """The cached stroke tensors in ``folder`` if they are complete and made as ``expect``
    says (same rule, settings and split content), else None."""
    try:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        if not isinstance(meta, dict) or any(meta.get(k) != v for k, v in expect.items()):
            return None
        rows = np.load(folder / "rows.npy", mmap_mode="r")
        offsets = np.load(folder / "offsets.npy", mmap_mode="r")
    except (OSError, ValueError):
        return None
    count = meta.get("rows")
    if rows.shape != (count + 1, 4) or offsets.shape != (expect["sketches"] + 1,) or offsets[-1] != count:
        return None
    return _CachedStrokeTensors(folder, rows, offsets, expect["max_len"])


def _load_stroke_cache(folder: Path, max_len: int) -> PackedStrokeTensors:
    rows, offsets = (np.load(folder / f"{name}.npy", mmap_mode="r") for name in ("rows", "offsets"))
    return _CachedStrokeTensors(folder, rows, offsets, max_len)


class _CachedStrokeTensors(PackedStrokeTensors):
    """Stroke tensors memory-mapped from a cache folder: pickled as the folder's name (a
    DataLoader worker maps the same files and shares their pages), never as the arrays."""

    def __init__(self, folder: Path, *args) -> None:
        super().__init__(*args)
        self.folder = folder

    def __reduce__(self):
        return _load_stroke_cache, (self.folder, self.max_len)


# ----------------------------------------------------------------------------- writing


RASTER_CACHE_FORMAT = "raster-ink-levels"
RASTER_CHUNK = 1 << 12
"""Sketches drawn at a time when the raster cache is built (200 MB of 224 px levels)."""
RASTER_FREE_MARGIN = 1 << 30
"""Bytes of free disk a raster cache leaves untouched: without them it is not built."""
RASTER_AUTO_BYTES = 2_000_000_000
"""The largest raster cache built by default (``data.raster_cache`` unset): 2 GB, about 40,000
sketches at 224 px or 160,000 at 112 px. Larger ones are built only when asked for."""


def _open_raster_cache(folder: Path, expect: dict) -> "CachedRasters | None":
    """The cached rasters in ``folder`` if complete and made as ``expect`` says, else None."""
    try:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        if not isinstance(meta, dict) or any(meta.get(k) != v for k, v in expect.items()):
            return None
        levels = np.load(folder / "levels.npy", mmap_mode="r")
    except (OSError, ValueError):
        return None
    size = expect["size"]
    if levels.dtype != np.uint8 or levels.shape != (expect["sketches"], size, size):
        return None
    return CachedRasters(folder, levels)


class CachedRasters:
    """A split's rasters memory-mapped from a cache folder (:meth:`StoreSketches.raster_levels`):
    pickled as the folder's name, so DataLoader workers map the same pages."""

    def __init__(self, folder: Path, levels: np.ndarray) -> None:
        self.folder = Path(folder)
        self.levels = np.asarray(levels)  # a plain view of the map: np.memmap's indexing costs more per call

    def __len__(self) -> int:
        return len(self.levels)

    def gather(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """uint8 (B, S, S) levels of sketches ``indices`` (a copy)."""
        return self.levels[np.asarray(indices, dtype=np.int64)]

    def __reduce__(self):
        return _load_raster_cache, (self.folder,)


def _load_raster_cache(folder: Path) -> CachedRasters:
    return CachedRasters(folder, np.load(folder / "levels.npy", mmap_mode="r"))


class _NpyStream:
    """Append rows to a ``.npy`` file whose length is only known at the end.

    A 128-byte placeholder header is written first and replaced by the real header (same
    length: numpy pads its v1.0 header to a multiple of 64 bytes) when the file is closed.
    """

    def __init__(self, path: Path, dtype: np.dtype, row_shape: tuple[int, ...], digest: bool = True) -> None:
        self.path = path
        self.dtype = np.dtype(dtype)
        self.row_shape = row_shape
        self.rows = 0
        self.sha256 = hashlib.sha256() if digest else None  # of the data bytes (the header excluded)
        self._f = open(path, "wb")
        self._f.write(b"\0" * _NPY_HEADER)

    def append(self, rows: np.ndarray) -> None:
        rows = np.ascontiguousarray(rows, dtype=self.dtype)
        if rows.shape[1:] != self.row_shape:
            raise ValueError(f"{self.path}: rows of shape {rows.shape[1:]}, expected {self.row_shape}")
        data = memoryview(rows).cast("B")  # the bytes, without a copy
        self._f.write(data)
        if self.sha256 is not None:
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
        _publish_folder(self.partial, self.out)
        self.committed = True
        return meta
