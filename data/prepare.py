"""Quick, Draw! files -> a packed store with deterministic train/val/query/gallery splits.

``python -m data.prepare --src DIR --out STORE [--per-class train=9000,val=1000,query=100,gallery=1000]
[--seed 0] [--classes "cat,dog"] [--workers N] [--fill in-order] [--allow-empty-classes]``

What it does, class by class (a class is a file name without its suffix: Google names
every file after its category; ``--src`` may be given several times, folders are searched
recursively for ``*.ndjson``, ``*.bin`` and ``*.npz``):

1. **Index** every file of the class: the ``key_id`` of each record, without decoding the
   drawing (a regular expression per ndjson line, the record headers of a ``.bin``).
   A ``key_id`` found in several files (the same drawing as simplified ndjson, ``.bin``
   and raw ndjson) is kept once, from the first of: simplified ndjson, ``.bin``, raw
   ndjson, sketch-rnn ``.npz``; ties by file path, then position.
2. **Rank** the class's unique key_ids by ``blake2b(f"{seed}:{key_id}", digest_size=8)``
   read as a big-endian uint64, ties by key_id. The rank depends on nothing but the seed
   and the id: not on file names, directory listing order, or the order of lines.
3. **Decode** in rank order until the class has ``sum(per_class)`` usable sketches; a bad
   record is skipped, counted in the report, and the next rank takes its place.
4. **Assign** by rank: the first ``query`` sketches to query, the next ``gallery`` to
   gallery, then ``val``, then ``train``. The evaluation splits come first so that asking
   for more or less pretraining data never changes them.

A class with fewer usable sketches than asked is listed in the report and never dropped;
a class with none at all stops the run before anything is written (``--allow-empty-classes``
writes it anyway), a file that gives no record is named in a warning, and a split that
comes out tiny (:data:`TINY_SPLIT`) gets a warning.
``--fill proportional`` (the default) splits it in the same proportions as asked (largest
remainder, ties in the order train, val, query, gallery); ``--fill in-order`` fills the
splits in rank order instead (query, gallery, val, then train, each up to its count), so
every class keeps the same query and gallery size and a short class gives up pretraining
sketches first (what a small sample needs: see docs/REPRODUCTION.md). Defaults are the paper's: 10,000 pretraining sketches per class, of which
1,000 validation (the released code held out 345,000 of 3,450,000), and 1,100 retrieval
sketches, 100 query + 1,000 gallery: 11,100 per class, 3,829,500 for 345 classes.

Only the records a class needs are fully decoded; a malformed line that is never reached
in rank order is never noticed (lines without a readable ``key_id`` always are). Files that
cannot be read at all stop the run (see :mod:`data.formats`); the store is written under a
temporary name and renamed when complete (:class:`data.store.StoreWriter`), so a failed or
killed run never leaves a half-written store and never damages the previous one.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .formats import SUFFIXES, BadRecord, FormatError, Report, categories, category_key, open_source
from .store import STORE_SPLITS, StoreError, StoreWriter

DEFAULT_PER_CLASS: dict[str, int] = {"train": 9000, "val": 1000, "query": 100, "gallery": 1000}
"""Sketches per class and split (the paper's 10,000 pretraining + 1,100 retrieval)."""

RANK_ORDER = ("query", "gallery", "val", "train")
"""Which split takes the lowest hash ranks first (evaluation splits are stable)."""

FILL_MODES = ("proportional", "in-order")
"""How a class with fewer usable sketches than asked is split (:func:`split_counts`)."""

TINY_SPLIT = 100
"""A split that is asked for but ends with fewer sketches than this in all, or with classes
that have none, gets a warning: retrieval figures over a few dozen queries are noise."""


class PrepareError(ValueError):
    """A prepare run that cannot go on. One line naming the file or option."""


def split_hash(seed: int, key_id: str) -> int:
    """The uint64 that ranks a sketch within its class: ``blake2b(f"{seed}:{key_id}")``."""
    return int.from_bytes(hashlib.blake2b(f"{seed}:{key_id}".encode("utf-8"), digest_size=8).digest(), "big")


def split_counts(available: int, per_class: dict[str, int], fill: str = "proportional") -> dict[str, int]:
    """How many of ``available`` sketches go to each split.

    All asked counts when there are enough. Otherwise, ``fill="proportional"``: the same
    proportions, rounded by largest remainder (ties in :data:`STORE_SPLITS` order) so they
    sum to ``available``; ``fill="in-order"``: each split of :data:`RANK_ORDER` in turn
    takes its full count while sketches are left (train, last, absorbs the shortfall).
    """
    if fill not in FILL_MODES:
        raise PrepareError(f"fill must be one of {', '.join(FILL_MODES)}, got '{fill}'")
    asked = sum(per_class.values())
    if available >= asked:
        return dict(per_class)
    if fill == "in-order":
        out, left = {}, available
        for s in RANK_ORDER:
            out[s] = min(per_class[s], left)
            left -= out[s]
        return {s: out[s] for s in STORE_SPLITS}
    exact = {s: per_class[s] * available / asked for s in STORE_SPLITS}
    out = {s: int(exact[s]) for s in STORE_SPLITS}
    left = available - sum(out.values())
    by_remainder = sorted(STORE_SPLITS, key=lambda s: (-(exact[s] - out[s]), STORE_SPLITS.index(s)))
    for s in by_remainder[:left]:
        out[s] += 1
    return out


def parse_per_class(text: str) -> dict[str, int]:
    """``"train=9000,val=1000,query=100,gallery=1000"`` -> dict; missing splits keep defaults."""
    out = dict(DEFAULT_PER_CLASS)
    for item in filter(None, (t.strip() for t in text.split(","))):
        name, sep, value = item.partition("=")
        if not sep or name not in out:
            raise PrepareError(f"--per-class expects SPLIT=N with SPLIT in {', '.join(STORE_SPLITS)}; got '{item}'")
        try:
            n = int(value)
        except ValueError:
            raise PrepareError(f"--per-class {name}: '{value}' is not an integer") from None
        if n < 0:
            raise PrepareError(f"--per-class {name}: must be >= 0, got {n}")
        out[name] = n
    if sum(out.values()) == 0:
        raise PrepareError("--per-class asks for no sketches at all")
    return out


def find_files(sources: Sequence[str | Path]) -> dict[str, list[Path]]:
    """Class name -> its input files (sorted), from files and folders (searched recursively)."""
    files: set[Path] = set()
    for src in sources:
        p = Path(src)
        if p.is_dir():
            files.update(f for f in p.rglob("*") if f.suffix in SUFFIXES and f.is_file())
        elif p.is_file():
            if p.suffix not in SUFFIXES:
                raise PrepareError(f"{p}: not a Quick, Draw! file (expected {', '.join(SUFFIXES)})")
            files.add(p)
        else:
            raise PrepareError(f"--src {p}: no such file or folder")
    by_class: dict[str, list[Path]] = {}
    for f in files:
        by_class.setdefault(f.stem, []).append(f)
    return {c: sorted(fs, key=str) for c, fs in by_class.items()}


@dataclass
class ClassResult:
    name: str
    indexed: int = 0  # unique key_ids found
    duplicates: int = 0  # extra copies of a key_id (same class, other file or position)
    usable: int = 0  # sketches kept
    report: Report = field(default_factory=Report)
    silent_files: list = field(default_factory=list)  # (path, why) of files that gave no record at all
    # split -> (points uint8 (P, 3), lengths (n,), key_ids)
    splits: dict = field(default_factory=dict)


def pack(sketch_strokes: Sequence[tuple[np.ndarray, ...]]) -> tuple[np.ndarray, np.ndarray]:
    """Strokes of several sketches -> (uint8 (P, 3) rows [x, y, end_of_stroke], lengths (n,))."""
    rows, lengths = [], []
    for strokes in sketch_strokes:
        n = 0
        for s in strokes:
            r = np.zeros((len(s), 3), dtype=np.uint8)
            r[:, :2] = s  # integers 0..255 (checked by the readers)
            r[-1, 2] = 1
            rows.append(r)
            n += len(s)
        lengths.append(n)
    points = np.concatenate(rows) if rows else np.zeros((0, 3), np.uint8)
    return points, np.asarray(lengths, dtype=np.int64)


def prepare_class(name: str, files: Sequence[Path], per_class: dict[str, int], seed: int,
                  fill: str = "proportional") -> ClassResult:
    """Index, rank, decode and assign one class (see the module docstring)."""
    res = ClassResult(name)
    sources = [open_source(f, word=name) for f in files]
    best: dict[str, tuple] = {}  # key_id -> (priority, path, position, source index, locator)
    try:
        for si, src in enumerate(sources):
            entries = src.index(res.report)
            if not entries:
                why = "empty file" if src.path.stat().st_size == 0 else "no readable record"
                res.silent_files.append((str(src.path), why))
            for pos, (key_id, loc) in enumerate(entries):
                cand = (src.priority, str(src.path), pos, si, loc)
                old = best.get(key_id)
                if old is not None:
                    res.duplicates += 1
                    if old[:3] <= cand[:3]:
                        continue
                best[key_id] = cand
        res.indexed = len(best)
        ranked = sorted(best, key=lambda k: (split_hash(seed, k), k))
        want = sum(per_class.values())
        kept: list[tuple[str, tuple]] = []
        i = 0
        while len(kept) < want and i < len(ranked):
            batch = ranked[i : i + want - len(kept)]
            i += len(batch)
            decoded = {}
            # Decode grouped by file and position (sequential reads), keep rank order.
            for k in sorted(batch, key=lambda k: (best[k][3], best[k][2])):
                src, loc = sources[best[k][3]], best[k][4]
                try:
                    decoded[k] = src.decode(loc)
                except BadRecord as err:
                    res.report.add(src.path, src.where(loc), err.kind, err.detail)
            kept.extend((k, decoded[k]) for k in batch if k in decoded)
    finally:
        for src in sources:
            src.close()
    res.usable = len(kept)
    counts = split_counts(len(kept), per_class, fill)
    start = 0
    for split in RANK_ORDER:
        part = kept[start : start + counts[split]]
        start += counts[split]
        points, lengths = pack([strokes for _, strokes in part])
        res.splits[split] = (points, lengths, [k for k, _ in part])
    return res


def _prepare_class_args(args: tuple) -> ClassResult:
    return prepare_class(*args)


def prepare(
    sources: Sequence[str | Path],
    out: str | Path,
    per_class: dict[str, int] | None = None,
    seed: int = 0,
    classes: Sequence[str] | None = None,
    workers: int = 1,
    progress: bool = True,
    log: Callable[[str], None] = print,
    fill: str = "proportional",
    allow_empty_classes: bool = False,
) -> dict:
    """Build the store ``out`` from Quick, Draw! files (module docstring). Returns its meta.

    Args:
        sources: files and folders holding ``.ndjson`` / ``.bin`` / ``.npz`` files.
        out: the store folder (replaced atomically when the run completes).
        per_class: sketches per class and split; :data:`DEFAULT_PER_CLASS` if None.
        seed: the split hash seed.
        classes: only these classes (each must be found); None for all found.
        workers: processes decoding classes in parallel (the result does not depend on it).
        progress: a progress bar over classes.
        log: where the summary lines go.
        fill: how a short class is split, "proportional" or "in-order" (:func:`split_counts`).
        allow_empty_classes: write the store even when a class has no usable sketch (by
            default that refuses the run: an empty class is almost always a bad input file,
            e.g. an empty or unreadable one, and would go unnoticed in the store).

    Raises:
        PrepareError, FormatError, StoreError: a one-line reason; ``out`` is left as it was.
    """
    per_class = dict(DEFAULT_PER_CLASS if per_class is None else per_class)
    if set(per_class) != set(STORE_SPLITS):
        raise PrepareError(f"per_class needs exactly the splits {', '.join(STORE_SPLITS)}, got {sorted(per_class)}")
    if fill not in FILL_MODES:
        raise PrepareError(f"--fill must be one of {', '.join(FILL_MODES)}, got '{fill}'")
    t0 = time.time()
    by_class = find_files(sources)
    if classes is not None:
        missing = [c for c in classes if c not in by_class]
        if missing:
            raise PrepareError(f"class '{missing[0]}' has no file in {', '.join(map(str, sources))}")
        by_class = {c: by_class[c] for c in classes}
    if not by_class:
        raise PrepareError(f"no .ndjson, .bin or .npz files in {', '.join(map(str, sources))}")
    names = sorted(by_class, key=category_key)
    known = set(categories())
    unknown = [c for c in names if c not in known]
    label_of = {c: i for i, c in enumerate(names)}

    report = Report()
    seen: dict[str, str] = {}  # key_id -> class, across classes
    cross_dups: list[dict] = []
    short: dict[str, dict] = {}
    silent: list[tuple[str, str]] = []
    empty: list[str] = []
    info: dict[str, dict] = {}
    jobs = [(c, by_class[c], per_class, seed, fill) for c in names]
    from tqdm import tqdm  # here, not at import: the module must import without it

    with StoreWriter(out, num_classes=len(names)) as writer:
        pool = ProcessPoolExecutor(workers) if workers > 1 else None
        try:
            results = pool.map(_prepare_class_args, jobs) if pool else map(_prepare_class_args, jobs)
            for res in tqdm(results, total=len(jobs), desc="prepare", unit="class", disable=not progress):
                report.merge(res.report)
                label = label_of[res.name]
                for split in STORE_SPLITS:
                    points, lengths, keys = res.splits[split]
                    ok = []
                    for k in keys:
                        owner = seen.setdefault(k, res.name)
                        ok.append(owner == res.name)
                        if owner != res.name:
                            cross_dups.append({"key_id": k, "class": res.name, "kept_in": owner})
                    if not all(ok):  # drop sketches whose key_id an earlier class already holds
                        starts = np.concatenate([[0], np.cumsum(lengths)])
                        sel = [j for j, good in enumerate(ok) if good]
                        points = np.concatenate([points[starts[j] : starts[j + 1]] for j in sel] or [points[:0]])
                        lengths, keys = lengths[sel], [keys[j] for j in sel]
                    writer.append(split, points, lengths, label, keys)
                counts = {s: len(res.splits[s][2]) for s in STORE_SPLITS}
                info[res.name] = {"files": [str(f) for f in by_class[res.name]], "indexed": res.indexed,
                                  "duplicates": res.duplicates, "usable": res.usable}
                if res.usable < sum(per_class.values()):
                    short[res.name] = {"usable": res.usable, "asked": sum(per_class.values()), "split": counts}
                silent.extend(res.silent_files)
                if res.usable == 0:
                    empty.append(res.name)
        finally:
            if pool:
                pool.shutdown(cancel_futures=True)
        for path, why in silent:
            log(f"[prepare] warning: {path} gives no sketch ({why})")
        if empty and not allow_empty_classes:
            raise PrepareError(
                f"{len(empty)} class(es) have no usable sketch ({', '.join(repr(c) for c in empty[:5])}"
                f"{', ...' if len(empty) > 5 else ''}; files: {', '.join(map(str, by_class[empty[0]][:3]))}); "
                "the store was not written (--allow-empty-classes writes it anyway)"
            )

        meta = {
            "class_names": names,
            "num_classes": len(names),
            "seed": seed,
            "per_class_asked": per_class,
            "rank_order": list(RANK_ORDER),
            "fill": fill,
            "hash": "blake2b(f'{seed}:{key_id}', digest_size=8) as big-endian uint64, ties by key_id",
            "points": {"dtype": "uint8", "columns": ["x", "y", "end_of_stroke"]},
        }
        report_doc = {
            "bad_records": report.to_dict(),
            "short_classes": short,
            "duplicate_key_ids_across_classes": cross_dups,
            "classes_not_in_categories_txt": unknown,
            "files_without_sketches": [{"path": p, "why": w} for p, w in silent],
            "empty_classes": empty,
            "classes": info,
        }
        meta = writer.commit(meta, {"report.json": json.dumps(report_doc, indent=1) + "\n"})

    sizes = ", ".join(f"{s} {meta['splits'][s]['sketches']}" for s in STORE_SPLITS)
    log(f"[prepare] {len(names)} classes -> {out}: {sizes} sketches ({time.time() - t0:.1f}s)")
    log(f"[prepare] {report.summary()}" + (f"; details in {Path(out) / 'report.json'}" if report.total else ""))
    for p in report.problems[:10]:
        log(f"[prepare]   {p}")
    if report.total > 10:
        log(f"[prepare]   ... {report.total - 10} more in report.json")
    if short:
        how = ("each is split in the same proportions" if fill == "proportional"
               else "splits filled in the order query, gallery, val, train")
        log(f"[prepare] {len(short)} class(es) have fewer usable sketches than the {sum(per_class.values())} asked; "
            f"{how} (train/val/query/gallery):")
        for c, s in list(short.items())[:10]:
            log(f"[prepare]   '{c}': {s['usable']} -> " + "/".join(str(s["split"][k]) for k in STORE_SPLITS))
        if len(short) > 10:
            log(f"[prepare]   ... {len(short) - 10} more in report.json")
    if cross_dups:
        log(f"[prepare] {len(cross_dups)} key_id(s) found in two classes: kept in the first class only")
    if unknown:
        log(f"[prepare] {len(unknown)} class(es) not among the 345 Quick, Draw! categories: {', '.join(unknown[:5])}")
    if empty:
        log(f"[prepare] warning: {len(empty)} class(es) with no sketch at all (--allow-empty-classes): "
            f"{', '.join(empty[:5])}")
    for line in tiny_split_warnings(meta, per_class):
        log(f"[prepare] warning: {line}")
    return meta


def tiny_split_warnings(meta: dict, per_class: dict[str, int]) -> list[str]:
    """One line for each split that was asked for but came out tiny: fewer than
    :data:`TINY_SPLIT` sketches in all, or classes without a single sketch in it."""
    lines = []
    for split in STORE_SPLITS:
        if per_class.get(split, 0) == 0:
            continue
        info = meta["splits"][split]
        missing = sum(1 for n in info["per_class"] if n == 0)
        if info["sketches"] >= TINY_SPLIT and missing == 0:
            continue
        lines.append(
            f"split '{split}' holds {info['sketches']} sketch(es) in all"
            + (f", none for {missing} of {len(info['per_class'])} classes" if missing else "")
            + f" (asked {per_class[split]} a class; under {TINY_SPLIT} in all, figures on it are noise): "
            "ask for more, or --fill in-order to fill query and gallery first"
        )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m data.prepare",
        description="Build a packed sketch store (train/val/query/gallery) from Quick, Draw! files.",
    )
    p.add_argument("--src", action="append", required=True,
                   help="folder (searched recursively) or file of .ndjson/.bin/.npz; repeatable")
    p.add_argument("--out", required=True, help="store folder to write (replaced atomically)")
    p.add_argument("--per-class", default="",
                   help="sketches per class, e.g. train=9000,val=1000,query=100,gallery=1000 (the default)")
    p.add_argument("--seed", type=int, default=0, help="split hash seed (default 0)")
    p.add_argument("--classes", help="comma-separated class names to use (default: every class found)")
    p.add_argument("--workers", type=int, default=1, help="parallel processes (default 1)")
    p.add_argument("--fill", choices=FILL_MODES, default="proportional",
                   help="how a class with fewer sketches than asked is split: in the asked proportions "
                        "(default) or query, gallery, val, train in turn (short classes lose train sketches)")
    p.add_argument("--allow-empty-classes", action="store_true",
                   help="write the store even if a class has no usable sketch (refused by default)")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    try:
        classes = [c.strip() for c in args.classes.split(",") if c.strip()] if args.classes else None
        if args.workers < 1:
            raise PrepareError(f"--workers must be >= 1, got {args.workers}")
        prepare(args.src, args.out, parse_per_class(args.per_class), seed=args.seed, classes=classes,
                workers=args.workers, progress=not args.no_progress, fill=args.fill,
                allow_empty_classes=args.allow_empty_classes)
    except (PrepareError, FormatError, StoreError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a file the readers do not check first (e.g. --out where we may not write)
        where = err.filename if err.filename is not None else "a file"
        print(f"error: {where}: {err.strerror or err}; the store was not changed", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; the store was not changed", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
