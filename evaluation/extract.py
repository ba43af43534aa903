"""Features of your own sketches: a trained encoder applied to sketch files, and their ranking.

    python extract_features.py --ckpt experiments/tcn_rotation/best.pt my_sketches/ --out out/mine
    python extract_features.py --ckpt experiments/tcn_rotation/best.pt cat.ndjson --out out/cat --rank

Inputs are any files the data layer reads (:mod:`data.formats`: simplified or raw
``.ndjson``, ``.bin``, sketch-rnn ``.npz``; a folder stands for the files in it). Each
sketch goes through the encoder exactly as the evaluation's sketches do (the checkpoint's
config decides raster size or stroke length and centring) and is read out at one layer.
Bad records are skipped and counted (one line), a file that cannot be read is one line
naming it.

Outputs, written whole or not at all:

- ``OUT.npy``: float32 (N, D) features, one row per sketch in file order;
- ``OUT.key_ids.txt``: the N key_ids, one a line (strings: Quick, Draw! ids exceed 2**53;
  sketch-rnn sketches get ``npz:<class>:<member>:<index>``);
- ``OUT.json``: checkpoint and its sha256, layer, the files with their sketch counts and
  the first row of each, the skipped records;
- with ``--rank``: every sketch ranks the checkpoint's gallery (its features come from the
  evaluation's cache), ``OUT_ranking.json`` lists each sketch's first K gallery items
  (index, key_id, class, similarity) and ``OUT_grid.png`` shows the first sketches with
  their retrievals (the first sketch of each file, then the second, ...; frames green / red
  when the file's name is a gallery class, else grey).

Python: :func:`sketch_features` returns the features and key_ids; :func:`rank_against_gallery`
ranks them. Like :mod:`evaluation.run`, this module is a caller of the stages (encoders,
features, metrics, pictures); no stage calls it.
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from config import ConfigError
from data.formats import SUFFIXES, FormatError, Report, read_sketches
from data.sketch import Sketch
from engine import build, distributed
from engine.cli import parse_set, run_cli
from evaluation import encoders, features, pictures
from evaluation.features import FeatureCache
from evaluation.metrics.retrieval import topk_indices
from evaluation.output_files import write_output, write_text

__all__ = ["SketchFeatures", "read_sketch_files", "sketch_features", "rank_against_gallery", "extract_main"]


@dataclass
class SketchFeatures:
    """Features of sketches read from files."""

    features: np.ndarray  # float32 (N, D)
    key_ids: list[str]
    sketches: list[Sketch]  # labels: the gallery class named by the file, else -1
    files: list[dict] = field(default_factory=list)  # {"path", "sketches", "first_row"}
    skipped: Report = field(default_factory=Report)
    layer: str = ""
    checkpoint: str = ""
    checkpoint_sha256: str = ""
    encoder: encoders.Encoder | None = field(default=None, repr=False)


def _expand(paths: Sequence[str | os.PathLike]) -> list[Path]:
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and f.suffix in SUFFIXES)
            if not found:
                raise ConfigError(f"{p}: no sketch files in this folder (expected {', '.join(SUFFIXES)})")
            out += found
        else:
            out.append(p)
    return out


def read_sketch_files(paths: Sequence[str | os.PathLike], max_per_file: int | None = None,
                      class_names: Sequence[str] = ()) -> tuple[list[Sketch], list[dict], Report]:
    """Sketches of every file (folders expanded, files in order), at most ``max_per_file``
    each; label: the index of the file's stem in ``class_names``, else -1. Bad records are
    skipped and counted in the returned report; an unreadable file raises
    :class:`data.formats.FormatError` (or ``OSError``) naming it."""
    report = Report()
    sketches: list[Sketch] = []
    files = []
    for path in _expand(paths):
        label = list(class_names).index(path.stem) if path.stem in class_names else -1
        got = list(itertools.islice(read_sketches(path, label=label, report=report), max_per_file))
        files.append({"path": str(path), "sketches": len(got), "first_row": len(sketches)})
        sketches += got
    return sketches, files, report


def _gallery_class_names(cfg) -> list[str]:
    src = build.build_source(cfg, "gallery")
    return [str(c) for c in (getattr(src, "class_names", None) or [])]


def sketch_features(
    checkpoint: str | os.PathLike,
    paths: Sequence[str | os.PathLike],
    layer: str | None = None,
    device: str | torch.device = "cpu",
    overrides: dict | None = None,
    max_per_file: int | None = None,
    batch_size: int | None = None,
    progress: bool = False,
) -> SketchFeatures:
    """Features of the sketches in ``paths`` from ``layer`` of the encoder in ``checkpoint``
    (default layer: the config's ``eval.feature``, else the model's)."""
    enc = encoders.load_encoder(checkpoint, overrides, layer)
    names = _gallery_class_names(enc.cfg) if _has_gallery(enc.cfg) else []
    sketches, files, report = read_sketch_files(paths, max_per_file, names)
    if not sketches:
        raise ConfigError(f"no usable sketch in {', '.join(str(p) for p in paths)} ({report.summary()})")
    device = torch.device(device)
    dataset = build.dataset_of(enc.cfg, sketches)
    feats, _ = features.extract_features(enc.model(device), dataset, enc.layer, device,
                                         batch_size or enc.cfg.eval.batch_size, 0, "features", progress)
    if not enc.unchanged():
        raise RuntimeError(f"{checkpoint}: the encoder's weights or buffers changed while reading features")
    return SketchFeatures(feats.numpy(), [s.key_id for s in sketches], sketches, files, report, enc.layer,
                          str(checkpoint), enc.weights_id, enc)


def _has_gallery(cfg) -> bool:
    try:
        build.build_source(cfg, "gallery")
        return True
    except (ConfigError, OSError, ValueError):
        return False


def rank_against_gallery(sf: SketchFeatures, k: int = 8, metric: str | None = None, device: str | torch.device = "cpu",
                         cache_dir: str | None = None, progress: bool = False) -> dict:
    """Each sketch's first ``k`` gallery items of the encoder's retrieval set (its config's
    data; the gallery's features from the evaluation's cache, extracted once). Returns
    ``{"index": int64 (N, k), "score": float32 (N, k), "gallery": the gallery's sketch
    source, "gallery_labels", "class_names", "metric"}``."""
    enc = sf.encoder
    device = torch.device(device)
    metric = metric or enc.cfg.eval.metric
    cache = FeatureCache(cache_dir, progress=progress)
    gallery = cache.get(enc, "gallery", device)
    idx, score = topk_indices(torch.from_numpy(sf.features), gallery.source, k, metric, device=device)
    return {"index": idx, "score": score, "gallery": build.build_source(enc.cfg, "gallery"),
            "gallery_labels": gallery.labels, "class_names": _gallery_class_names(enc.cfg), "metric": metric}


# ---------------------------------------------------------------------------- writing
def write_features(out: Path, sf: SketchFeatures) -> list[Path]:
    """``OUT.npy``, ``OUT.key_ids.txt``, ``OUT.json`` (raises :class:`OutputWriteError`)."""
    buf = io.BytesIO()
    np.save(buf, sf.features.astype(np.float32))
    npy = write_output(out.with_name(out.name + ".npy"), lambda fh: fh.write(buf.getvalue()))
    ids = write_text(out.with_name(out.name + ".key_ids.txt"), "".join(k + "\n" for k in sf.key_ids))
    meta = {"checkpoint": sf.checkpoint, "checkpoint_sha256": sf.checkpoint_sha256, "layer": sf.layer,
            "shape": list(sf.features.shape), "files": sf.files, "skipped": sf.skipped.to_dict()}
    js = write_text(out.with_name(out.name + ".json"), json.dumps(meta, indent=2) + "\n")
    return [npy, ids, js]


def write_ranking(out: Path, sf: SketchFeatures, ranked: dict, grid_rows: int) -> list[Path]:
    """``OUT_ranking.json`` and ``OUT_grid.png`` (raises :class:`OutputWriteError`)."""
    names, gl, g_src = ranked["class_names"], ranked["gallery_labels"], ranked["gallery"]

    def cname(label: int) -> str | None:
        return names[label] if 0 <= label < len(names) else None

    items = []
    for i, (row, sc) in enumerate(zip(ranked["index"].tolist(), ranked["score"].tolist())):
        items.append({"key_id": sf.key_ids[i], "class": cname(sf.sketches[i].label),
                      "retrieved": [{"gallery_index": j, "key_id": g_src[j].key_id, "class": cname(int(gl[j])),
                                     "similarity": s} for j, s in zip(row, sc)]})
    written = [write_text(out.with_name(out.name + "_ranking.json"),
                          json.dumps({"metric": ranked["metric"], "layer": sf.layer, "checkpoint": sf.checkpoint,
                                      "sketches": items}, indent=2) + "\n")]
    file_of_row = np.zeros(len(sf.sketches), dtype=np.int64)
    for n, f in enumerate(sf.files):
        file_of_row[f["first_row"]:] = n
    rows = pictures.pick_grid_queries(file_of_row, grid_rows)  # the first sketch of each file, then the second...
    if rows and ranked["index"].shape[1]:
        known = [sf.sketches[i].label >= 0 for i in rows]
        correct = [[(bool(int(gl[j]) == sf.sketches[i].label) if ok else None) for j in ranked["index"][i].tolist()]
                   for i, ok in zip(rows, known)]
        labels = [f"{Path(sf.files[file_of_row[i]]['path']).stem} #{i}" for i in rows]
        written.append(pictures.query_grid(
            out.with_name(out.name + "_grid.png"), [sf.sketches[i] for i in rows],
            [[g_src[j] for j in ranked["index"][i].tolist()] for i in rows], correct, labels,
            f"your sketches: top-{ranked['index'].shape[1]} of the gallery ({ranked['metric']}, layer {sf.layer})"))
    return written


# ---------------------------------------------------------------------------- command line
def extract_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="extract_features.py",
        description="Features of your own sketch files (.ndjson simplified or raw, .bin, sketch-rnn .npz; folders "
        "too) from a trained encoder, written as OUT.npy with OUT.key_ids.txt; --rank also ranks them against "
        "the checkpoint's gallery and draws a retrieval grid.",
    )
    p.add_argument("files", nargs="+", help="sketch files or folders of them")
    p.add_argument("--ckpt", required=True, help="checkpoint file (best.pt or last.pt of a run)")
    p.add_argument("--out", required=True, help="output prefix: writes OUT.npy, OUT.key_ids.txt, OUT.json")
    p.add_argument("--layer", help="feature layer (default: the config's eval.feature)")
    p.add_argument("--max-per-file", type=int, help="read at most this many sketches of each file")
    p.add_argument("--rank", action="store_true", help="also rank the sketches against the gallery")
    p.add_argument("--topk", type=int, default=8, help="gallery items kept per sketch with --rank")
    p.add_argument("--grid-rows", type=int, default=6, help="sketches drawn in the grid with --rank")
    p.add_argument("--metric", choices=("cosine", "euclidean"), help="default: the config's eval.metric")
    p.add_argument("--data", help="prepared store whose gallery --rank uses (default: the checkpoint's data)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    p.add_argument("--cache-dir", help="feature cache folder for the gallery (default: <run>/features)")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--no-progress", action="store_true")
    return p


def run_extract(args: argparse.Namespace) -> list[Path]:
    if args.max_per_file is not None and args.max_per_file < 1:
        raise ConfigError("--max-per-file must be positive")
    if args.topk < 1:
        raise ConfigError("--topk must be positive")
    over = parse_set(args.set)
    if args.data:
        over.update({"data.source": "store", "data.path": args.data})
    _, device = distributed.setup(args.device)
    progress = not args.no_progress
    try:
        sf = sketch_features(args.ckpt, args.files, args.layer, device, over, args.max_per_file, args.batch_size,
                             progress)
    except FormatError as err:
        raise ConfigError(str(err)) from None
    print(f"[features] {len(sf.key_ids)} sketches from {len(sf.files)} file(s), layer {sf.layer}, "
          f"{sf.features.shape[1]}-d; {sf.skipped.summary()}")
    for f in sf.files:
        if not f["sketches"]:
            print(f"[features] warning: {f['path']}: no usable sketch")
    out = Path(args.out)
    written = write_features(out, sf)
    if args.rank:
        ranked = rank_against_gallery(sf, args.topk, args.metric, device, args.cache_dir, progress)
        written += write_ranking(out, sf, ranked, args.grid_rows)
    print("[features] wrote " + ", ".join(str(p) for p in written))
    return written


def extract_main(argv: Sequence[str] | None = None) -> int:
    args = extract_parser().parse_args(argv)
    try:
        return run_cli(lambda: run_extract(args) and None)
    finally:
        distributed.cleanup()


if __name__ == "__main__":
    sys.exit(extract_main())
