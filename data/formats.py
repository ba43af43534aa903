"""Readers for the four public Quick, Draw! formats, each giving :class:`Sketch` objects.

========================  =================  ================================================
format                    file               what a record becomes
========================  =================  ================================================
simplified ``.ndjson``    one JSON per line  strokes as stored (integers 0..255), checked
raw ``.ndjson``           one JSON per line  Google's simplification (:mod:`data.simplify`)
binary ``.bin``           packed records     strokes as stored (uint8), same as simplified
sketch-rnn ``.npz``       stroke-3 offsets   cumulative sum, split at pen lifts, then
                                             Google's simplification into the 0..255 frame
========================  =================  ================================================

An ``.ndjson`` line is raw when its strokes carry three arrays ``[x, y, t]`` and simplified
when they carry two; a file may hold either (the kind is decided line by line, and the
file's first usable line names the file's kind for de-duplication in :mod:`data.prepare`).
Sketch-rnn files have no ``key_id``: their sketches get ``npz:<class>:<member>:<index>``.

Bad input policy (see ``docs/DATA.md``). One unusable *record* is skipped and counted in a
:class:`Report` (file, line or record, reason): the full dataset has tens of millions of
lines and one bad line must not cost a multi-hour run, nor be silently lost. A *file* that
cannot be read at all (a corrupt ``.npz``, a missing or unreadable file, a file compressed
with gzip) stops with a :class:`FormatError` naming the file: losing a whole file would
silently change a class's size or the class list. Per record:

- malformed JSON line, a line that is not an object, a missing or non-decimal ``key_id``;
- empty drawing (no strokes), empty stroke (no points), a stroke whose x and y (and t)
  lengths differ, a stroke that is not two or three number arrays;
- simplified coordinates outside 0..255 or not integers, raw coordinates not finite;
- a ``word`` different from the file's class (when the caller names the class);
- a ``.bin`` file that ends inside a record: the records before it are kept, the
  truncated one is counted, and reading stops (nothing after it can be framed);
- a sketch-rnn element that is not an (n, 3) array of finite numbers.

Without a report (``report=None``) the ``read_*`` functions are strict: the first bad
record raises :class:`FormatError`.
"""

from __future__ import annotations

import json
import pickle
import re
import struct
import warnings
import zipfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .simplify import simplify_raw
from .sketch import BOX, Sketch, Strokes

SUFFIXES = {".ndjson": "ndjson", ".bin": "binary", ".npz": "npz"}
"""File suffix -> reader. Anything else (``SHA256SUMS``, ``*.part`` downloads) is ignored."""

NPZ_MEMBERS = ("train", "valid", "test", "sketches")
"""Arrays of a sketch-rnn ``.npz`` that hold sketches: Google's three splits, or the single
``sketches`` array of re-packed files (like the shared sample's)."""

CATEGORIES_FILE = Path(__file__).with_name("categories.txt")

GZIP_MAGIC = b"\x1f\x8b"
"""First bytes of a gzip file: a ``.ndjson.gz`` saved as ``.ndjson`` is refused by name, not
read as lines of malformed JSON (records are located by byte offset, so the readers do
not decompress on the fly)."""

_KEY_RE = re.compile(rb'"key_id"\s*:\s*"([0-9]+)"')
_BIN_HEAD = struct.Struct("<Q2sbIH")  # key_id, countrycode, recognized, timestamp, n_strokes
_U16 = struct.Struct("<H")


class FormatError(ValueError):
    """A file that cannot be read, or a bad record in strict mode. One line, naming the file."""


class BadRecord(ValueError):
    """One unusable record. ``kind`` is a short fixed reason (counted in reports)."""

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind
        self.detail = detail


@dataclass(frozen=True)
class Problem:
    path: str
    where: str  # "line 12", "record 40 at byte 6361", "sketches[17]"
    kind: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.path}: {self.where}: {self.kind}" + (f" ({self.detail})" if self.detail else "")


class Report:
    """Skipped records, counted by reason; the first ``max_listed`` are kept individually."""

    def __init__(self, max_listed: int = 1000) -> None:
        self.max_listed = max_listed
        self.counts: Counter[str] = Counter()
        self.problems: list[Problem] = []

    def add(self, path: str | Path, where: str, kind: str, detail: str = "") -> None:
        self.counts[kind] += 1
        if len(self.problems) < self.max_listed:
            self.problems.append(Problem(str(path), where, kind, detail))

    def merge(self, other: "Report") -> None:
        self.counts.update(other.counts)
        room = self.max_listed - len(self.problems)
        self.problems.extend(other.problems[: max(room, 0)])

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        if not self.total:
            return "no bad records"
        parts = ", ".join(f"{n} {kind}" for kind, n in sorted(self.counts.items()))
        return f"skipped {self.total} bad record(s): {parts}"

    def to_dict(self) -> dict:
        return {
            "skipped": self.total,
            "by_reason": dict(sorted(self.counts.items())),
            "listed": [p.__dict__ for p in self.problems],
            "listed_limit": self.max_listed,
        }


# ----------------------------------------------------------------------------- categories


def category_key(name: str) -> tuple[str, str]:
    """Sort key that reproduces the order of Google's ``categories.txt``: letters only,
    case-folded (so ``cello`` < ``cell phone``, ``The Eiffel Tower`` sits after ``tent``)."""
    return re.sub(r"[^a-z]", "", name.lower()), name


def categories() -> tuple[str, ...]:
    """The 345 Quick, Draw! categories, Google's spelling and order (``data/categories.txt``)."""
    return tuple(line for line in CATEGORIES_FILE.read_text(encoding="utf-8").splitlines() if line)


# ----------------------------------------------------------------------------- drawings


def _number_rows(stroke: Any, i: int) -> np.ndarray:
    """A JSON stroke ``[[x...], [y...](, [t...])]`` -> float64 (k, n) array, checked."""
    if not isinstance(stroke, list) or len(stroke) not in (2, 3) or not all(isinstance(a, list) for a in stroke):
        raise BadRecord("bad stroke", f"stroke {i} is not 2 or 3 number arrays")
    lengths = {len(a) for a in stroke}
    if len(lengths) != 1:
        raise BadRecord("stroke lengths differ", f"stroke {i} has x/y/t lengths {[len(a) for a in stroke]}")
    if 0 in lengths:
        raise BadRecord("empty stroke", f"stroke {i} has no points")
    try:
        arr = np.array(stroke, dtype=np.float64)
    except (TypeError, ValueError):
        raise BadRecord("bad stroke", f"stroke {i} holds something other than numbers") from None
    if arr.ndim != 2:
        raise BadRecord("bad stroke", f"stroke {i} is not flat number arrays")
    if not np.all(np.isfinite(arr)):
        raise BadRecord("non-finite coordinate", f"stroke {i}")
    return arr


def decode_drawing(drawing: Any) -> tuple[Strokes, str]:
    """A JSON ``drawing`` value -> (strokes in the 0..255 box, ``"simplified"`` or ``"raw"``).

    Simplified strokes (two arrays) must hold integers in 0..255 and are kept as they are;
    raw strokes (three arrays, x y t) go through :func:`data.simplify.simplify_raw`.

    Raises:
        BadRecord: see the module docstring.
    """
    if not isinstance(drawing, list):
        raise BadRecord("bad drawing", "drawing is not a list of strokes")
    if not drawing:
        raise BadRecord("empty drawing", "no strokes")
    rows = [_number_rows(s, i) for i, s in enumerate(drawing)]
    arity = {len(r) for r in rows}
    if len(arity) != 1:
        raise BadRecord("bad stroke", "strokes mix [x, y] and [x, y, t] forms")
    if arity == {3}:
        return simplify_raw([r[:2].T for r in rows]), "raw"
    for i, r in enumerate(rows):
        if r.min() < 0 or r.max() > BOX:
            raise BadRecord("coordinate outside 0..255", f"stroke {i} spans {r.min():g}..{r.max():g}")
        if not np.array_equal(r, np.round(r)):
            raise BadRecord("non-integer coordinate", f"stroke {i}")
    return tuple(r.T.astype(np.float32) for r in rows), "simplified"


def parse_ndjson_line(line: bytes | str, word: str | None = None) -> tuple[str, Strokes, str]:
    """One ndjson line -> (key_id, strokes, "simplified" | "raw").

    Args:
        line: the line (bytes or str).
        word: if given, the record's ``word`` must equal it.

    Raises:
        BadRecord: see the module docstring.
    """
    try:
        obj = json.loads(line)
    except (ValueError, UnicodeDecodeError) as err:  # JSONDecodeError is a ValueError
        raise BadRecord("malformed JSON", str(err).split("\n")[0]) from None
    if not isinstance(obj, dict):
        raise BadRecord("malformed JSON", "the line is not a JSON object")
    key_id = obj.get("key_id")
    if not isinstance(key_id, str) or not key_id.isdigit() or not key_id.isascii():
        raise BadRecord("bad key_id", f"key_id {key_id!r} is not a decimal string")
    if word is not None and obj.get("word") != word:
        raise BadRecord("word does not match file", f"word {obj.get('word')!r}, file holds {word!r}")
    if "drawing" not in obj:
        raise BadRecord("empty drawing", "no 'drawing' field")
    strokes, kind = decode_drawing(obj["drawing"])
    return key_id, strokes, kind


# ----------------------------------------------------------------------------- sources
#
# Every format is read in two steps, so that data.prepare can index millions of records
# cheaply and decode only the ones it keeps: ``index`` lists (key_id, locator) of every
# framed record (reporting what cannot even be framed), ``decode`` turns one locator into
# strokes (raising BadRecord). The read_* iterators below do both for every record.


class _Source:
    priority = 0  # which copy of a key_id present in several files is kept (lowest wins)

    def __init__(self, path: str | Path, word: str | None = None) -> None:
        self.path = Path(path)
        self.word = word
        if not self.path.is_file():
            raise FormatError(f"{self.path}: no such file")
        try:
            with open(self.path, "rb") as f:
                head = f.read(2)
        except OSError as err:  # no read permission, above all
            raise FormatError(f"{self.path}: cannot read ({err.strerror or err})") from None
        if head == GZIP_MAGIC:
            raise FormatError(f"{self.path}: compressed (gzip); gunzip it first, Quick, Draw! files are read "
                              "uncompressed")

    def index(self, report: Report | None) -> list[tuple[str, Any]]:
        raise NotImplementedError

    def decode(self, loc: Any) -> Strokes:
        raise NotImplementedError

    def where(self, loc: Any) -> str:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def _bad(self, report: Report | None, where: str, err: BadRecord) -> None:
        if report is None:
            raise FormatError(f"{self.path}: {where}: {err}")
        report.add(self.path, where, err.kind, err.detail)


class NdjsonSource(_Source):
    """Simplified or raw ``.ndjson``; locator ``(byte offset, length, line number)``."""


    def __init__(self, path: str | Path, word: str | None = None) -> None:
        super().__init__(path, word)
        self.kind: str | None = None  # "simplified" / "raw", from the first usable line
        self._f = None

    @property
    def priority(self) -> int:  # type: ignore[override]
        return 0 if self.kind != "raw" else 2

    def index(self, report: Report | None) -> list[tuple[str, Any]]:
        entries = []
        offset = 0
        with open(self.path, "rb") as f:
            for lineno, line in enumerate(f, 1):
                n = len(line)
                if line.strip():
                    m = _KEY_RE.search(line)
                    if m:
                        entries.append((m.group(1).decode("ascii"), (offset, n, lineno)))
                    else:  # unusual spelling (escapes), or no key_id at all: parse the line
                        try:
                            key_id = parse_ndjson_line(line)[0]
                        except BadRecord as err:
                            self._bad(report, f"line {lineno}", err)
                        else:
                            entries.append((key_id, (offset, n, lineno)))
                offset += n
        for _, loc in entries[:50]:  # the file's kind: its first decodable line
            try:
                self.kind = self._parse(loc)[2]
                break
            except BadRecord:
                continue
        return entries

    def _parse(self, loc: tuple[int, int, int]) -> tuple[str, Strokes, str]:
        if self._f is None:
            self._f = open(self.path, "rb")
        self._f.seek(loc[0])
        return parse_ndjson_line(self._f.read(loc[1]), self.word)

    def decode(self, loc: tuple[int, int, int]) -> Strokes:
        return self._parse(loc)[1]

    def where(self, loc: tuple[int, int, int]) -> str:
        return f"line {loc[2]}"

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None


class BinarySource(_Source):
    """Google's packed ``.bin``; locator ``(byte offset, record number)``.

    Record layout (little-endian): key_id uint64, countrycode 2 bytes, recognized int8,
    timestamp uint32, n_strokes uint16, then per stroke n_points uint16, n_points x uint8,
    n_points y uint8.
    """

    priority = 1

    def __init__(self, path: str | Path, word: str | None = None) -> None:
        super().__init__(path, word)
        self._buf: bytes | None = None

    def _data(self) -> bytes:
        if self._buf is None:
            self._buf = self.path.read_bytes()
        return self._buf

    def index(self, report: Report | None) -> list[tuple[str, Any]]:
        buf = self._data()
        size = len(buf)
        entries = []
        pos, rec = 0, 1
        while pos < size:
            end = pos + _BIN_HEAD.size
            if end <= size:
                key_id, _, _, _, n_strokes = _BIN_HEAD.unpack_from(buf, pos)
                for _ in range(n_strokes):
                    if end + 2 > size:
                        end = size + 1
                        break
                    end += 2 + 2 * _U16.unpack_from(buf, end)[0]
            if end > size:
                err = BadRecord("truncated record", f"the file ends inside record {rec} "
                                f"(which starts at byte {pos}; the file has {size} bytes)")
                self._bad(report, f"record {rec} at byte {pos}", err)
                break
            entries.append((str(key_id), (pos, rec)))
            pos, rec = end, rec + 1
        return entries

    def decode(self, loc: tuple[int, int]) -> Strokes:
        buf = self._data()
        pos = loc[0]
        n_strokes = _BIN_HEAD.unpack_from(buf, pos)[4]
        if n_strokes == 0:
            raise BadRecord("empty drawing", "no strokes")
        p = pos + _BIN_HEAD.size
        strokes = []
        for i in range(n_strokes):
            n = _U16.unpack_from(buf, p)[0]
            if n == 0:
                raise BadRecord("empty stroke", f"stroke {i} has no points")
            xy = np.frombuffer(buf, dtype=np.uint8, count=2 * n, offset=p + 2).reshape(2, n)
            strokes.append(xy.T.astype(np.float32))
            p += 2 + 2 * n
        return tuple(strokes)

    def where(self, loc: tuple[int, int]) -> str:
        return f"record {loc[1]} at byte {loc[0]}"

    def close(self) -> None:
        self._buf = None


class NpzSource(_Source):
    """Sketch-rnn stroke-3 ``.npz``; locator ``(member, index)``.

    Each element is an (n, 3) array of rows ``[dx, dy, pen_lifted]``: offsets from the
    previous point, ``pen_lifted = 1`` on the last point of a stroke. See
    :func:`stroke3_to_strokes` for how they are brought into the 0..255 frame.

    The file is loaded with ``allow_pickle=True`` (its arrays are object arrays): only read
    ``.npz`` files you trust, such as Google's.
    """

    priority = 3

    def __init__(self, path: str | Path, word: str | None = None) -> None:
        super().__init__(path, word)
        self.name = word if word is not None else self.path.stem
        self._members: dict[str, np.ndarray] | None = None

    def _load(self) -> dict[str, np.ndarray]:
        if self._members is None:
            try:
                with warnings.catch_warnings(), np.load(self.path, allow_pickle=True, encoding="latin1") as z:
                    # Pickles made with numpy 1.x name numpy.core; numpy 2 warns about it.
                    warnings.simplefilter("ignore", DeprecationWarning)
                    names = [m for m in NPZ_MEMBERS if m in z.files]
                    if not names:
                        raise FormatError(
                            f"{self.path}: corrupt .npz: no sketch array (expected one of "
                            f"{', '.join(NPZ_MEMBERS)}; found {', '.join(z.files) or 'nothing'})"
                        )
                    members = {m: z[m] for m in names}
            except FormatError:
                raise
            except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, pickle.UnpicklingError) as err:
                raise FormatError(f"{self.path}: corrupt .npz ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})") from None
            for m, arr in members.items():
                if not isinstance(arr, np.ndarray) or arr.ndim != 1:
                    raise FormatError(f"{self.path}: corrupt .npz: '{m}' is not a 1-D array of sketches")
            self._members = members
        return self._members

    def index(self, report: Report | None) -> list[tuple[str, Any]]:
        return [
            (f"npz:{self.name}:{m}:{i}", (m, i))
            for m, arr in self._load().items()
            for i in range(len(arr))
        ]

    def decode(self, loc: tuple[str, int]) -> Strokes:
        return stroke3_to_strokes(self._load()[loc[0]][loc[1]])

    def where(self, loc: tuple[str, int]) -> str:
        return f"{loc[0]}[{loc[1]}]"


def stroke3_to_strokes(arr: Any) -> Strokes:
    """Sketch-rnn stroke-3 ``[dx, dy, pen_lifted]`` rows -> strokes in the 0..255 box.

    Positions are the cumulative sums of the offsets, split into strokes after each row
    with ``pen_lifted != 0``. Google made these files from the raw drawings with RDP
    (epsilon 2.0) in raw-pixel units, without rescaling, so the drawing is then aligned to
    the top-left, scaled uniformly to a larger extent of 255, simplified again with RDP
    epsilon 2.0 in that frame (so its point density matches the simplified files) and
    rounded: :func:`data.simplify.simplify_raw` without the resampling step, which would
    only move the drawing's own vertices.

    Raises:
        BadRecord: not an (n >= 1, 3) array of finite numbers.
    """
    try:
        a = np.asarray(arr, dtype=np.float64)
    except (TypeError, ValueError):
        raise BadRecord("bad stroke-3 array", "not numbers") from None
    if a.ndim != 2 or a.shape[1] != 3 or len(a) == 0:
        raise BadRecord("bad stroke-3 array", f"shape {a.shape}, expected (n, 3)")
    if not np.all(np.isfinite(a)):
        raise BadRecord("non-finite coordinate", "stroke-3 offsets")
    xy = np.cumsum(a[:, :2], axis=0)
    ends = np.flatnonzero(a[:, 2] != 0) + 1
    strokes = [s for s in np.split(xy, ends) if len(s)]
    return simplify_raw(strokes, spacing=None)


def open_source(path: str | Path, word: str | None = None) -> _Source:
    """The reader for a file, chosen by its suffix (:data:`SUFFIXES`).

    Args:
        path: the file.
        word: the file's class; ndjson records whose ``word`` differs are bad records.
    """
    path = Path(path)
    kind = SUFFIXES.get(path.suffix)
    if kind is None:
        raise FormatError(f"{path}: unknown format (expected {', '.join(SUFFIXES)})")
    return {"ndjson": NdjsonSource, "binary": BinarySource, "npz": NpzSource}[kind](path, word)


def _read(source: _Source, label: int, report: Report | None) -> Iterator[Sketch]:
    try:
        for key_id, loc in source.index(report):
            try:
                strokes = source.decode(loc)
            except BadRecord as err:
                source._bad(report, source.where(loc), err)
                continue
            yield Sketch(strokes, label=label, key_id=key_id)
    finally:
        source.close()


def read_ndjson(path: str | Path, label: int = -1, report: Report | None = None, word: str | None = None) -> Iterator[Sketch]:
    """Sketches of a simplified or raw ``.ndjson`` file, in file order.

    Args:
        path: the file.
        label: the label given to every sketch.
        report: collects skipped records; None makes the first bad record a FormatError.
        word: if given, records whose ``word`` differs are bad.
    """
    return _read(NdjsonSource(path, word), label, report)


def read_binary(path: str | Path, label: int = -1, report: Report | None = None) -> Iterator[Sketch]:
    """Sketches of a packed ``.bin`` file, in file order (see :class:`BinarySource`)."""
    return _read(BinarySource(path), label, report)


def read_npz(path: str | Path, label: int = -1, report: Report | None = None) -> Iterator[Sketch]:
    """Sketches of a sketch-rnn ``.npz`` file, member by member (see :class:`NpzSource`).

    Raises:
        FormatError: the file is not a readable ``.npz`` of sketch arrays (at once).
    """
    source = NpzSource(path)
    source._load()  # a corrupt file fails here, not at the first next()
    return _read(source, label, report)


def read_sketches(path: str | Path, label: int = -1, report: Report | None = None) -> Iterator[Sketch]:
    """Sketches of any supported file, chosen by suffix."""
    source = open_source(path)
    if isinstance(source, NpzSource):
        source._load()
    return _read(source, label, report)
