"""The evaluation the paper reports: retrieval, fusion, recognition and baselines, with pictures.

``python eval_retrieval.py --ckpt experiments/NAME/best.pt [options]`` evaluates one table:

- rows: the checkpoint; ``--random-baseline`` (the same architecture, seeded random
  weights); ``--baseline CKPT[:LAYER]`` (e.g. the supervised baseline); ``--fuse PART PART
  ...`` (several encoders fused into one descriptor, ``PART = PATH[:LAYER][@WEIGHT]``);
- retrieval (PROTOCOL section 5): every query ranks the whole gallery; mAP over the full
  ranking, precision@K, per-class AP, an interpolated precision-recall curve
  (:mod:`utils.retrieval`, exact and memory-bounded);
- ``--probe``: recognition by a linear classifier on frozen features (:mod:`engine.probe`),
  top-1 and top-5, with a check that no encoder changed;
- output: the table on stdout, ``retrieval_<stem>.json`` and ``.md`` next to the checkpoint
  (or ``--json``), and PNG pictures beside them (query grid, per-class AP, PR curves).

Every model is rebuilt from the config saved in its checkpoint. Features are extracted once
per (checkpoint bytes, split, layer, data config) and cached in ``<run>/features/``
(:mod:`engine.features`). All rows are evaluated on the same retrieval set: the data keys
that choose the query and gallery sketches (:data:`IDENTITY_KEYS`) are taken from the first
checkpoint and imposed on the others; ``--set`` overrides apply to every checkpoint.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from config import ConfigError, ExperimentConfig
from config.schema import EvalConfig
from engine import build, distributed
from engine.cli import parse_set, run_cli
from engine.features import (
    Encoder,
    FeatureCache,
    load_encoder,
    random_encoder,
)
from engine.fusion import Descriptor, descriptor_features, fused_name, parse_part
from engine.pictures import class_ap_chart, pick_grid_queries, pr_chart, query_grid
from engine.probe import DEFAULT_PER_CLASS, describe_recipe, run_probe
from utils.atomic import atomic_write_text
from utils.feature_store import read_rows
from utils.fusion import FUSION_MODES
from utils.host_memory import keep_freed_memory
from utils.probe import DEFAULT_MAX_ITER, DEFAULT_WD_GRID
from utils.retrieval import DEFAULT_MEMORY_MB, retrieval_metrics, topk_indices

#: Precision@K cut-offs when neither ``--topk`` nor the config's ``eval.topk`` chooses others.
DEFAULT_TOPK = (1, 10, 100, 1000)
#: Data keys that decide which sketches are queries and gallery items.
IDENTITY_KEYS = ("source", "path", "num_classes", "query_per_class", "gallery_per_class", "seed")

__all__ = ["format_table", "eval_main", "run_evaluation"]


# ---------------------------------------------------------------------------- tables
def format_table(rows: list[dict], topk: Sequence[int]) -> str:
    """A Markdown table of results, one row per evaluated descriptor; probe columns
    (top-1, top-5) appear when any row has them."""
    probe = any("probe" in r for r in rows)
    head = ["model", "layer", "dim", "mAP"] + [f"P@{k}" for k in topk] + (["top-1", "top-5"] if probe else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in rows:
        cells = [r["model"], r["layer"], str(r["feature_dim"]), f"{r['mAP']:.4f}"]
        cells += [f"{r[f'P@{k}']:.4f}" for k in topk]
        if probe:
            p = r.get("probe")
            cells += [f"{p['top1']:.4f}", f"{p['top5']:.4f}"] if p else ["-", "-"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def class_table(rows: list[dict], class_names: Sequence[str]) -> str:
    """Markdown: AP of each class (rows) for each descriptor (columns, numbered as in the
    main table)."""
    head = ["class"] + [f"({i + 1})" for i in range(len(rows))]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for name in class_names:
        cells = [str(name)]
        for r in rows:
            v = r["class_ap"].get(str(name))
            cells.append("-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown_report(payload: dict, pictures: dict[str, str]) -> str:
    """The Markdown file written next to the checkpoint."""
    topk = payload["topk"]
    rows = payload["results"]
    lines = [f"# Evaluation: {payload['title']}", ""]
    d = payload["data"]
    lines.append(
        f"{payload['num_queries']} queries vs {payload['gallery_size']} gallery sketches "
        f"({d['source']} data, {len(payload['class_names'])} classes), {payload['metric']} similarity, "
        f"every query ranks the whole gallery; mAP over the full ranking; ties keep gallery order."
    )
    lines += ["", format_table(rows, topk), ""]
    for i, r in enumerate(rows):
        extra = ""
        if r.get("components"):
            parts = ", ".join(f"{c['model']}:{c['layer']}@{c['weight']:g}" for c in r["components"])
            extra = f" = {r['fusion_mode']} of {parts}"
        lines.append(f"- ({i + 1}) {r['model']}{extra}")
    lines += ["", f"mAP and P@K: retrieval ({payload['metric']} similarity; P@K with K above the gallery size "
              "is taken at the gallery size)."]
    if payload.get("probe_recipe"):
        lines += ["", "top-1, top-5: recognition accuracy of a linear probe on frozen features. "
                  + payload["probe_recipe"]]
        for r in rows:
            if r.get("probe"):
                p = r["probe"]
                lines.append(f"- {r['model']}: weight decay {p['weight_decay']:g}; encoder unchanged: "
                             f"{r['encoder_unchanged']}")
    if pictures:
        lines += ["", "## Pictures", ""]
        for caption, name in pictures.items():
            lines += [f"![{caption}]({name})", ""]
    lines += ["## Average precision per class", "", class_table(rows, payload["class_names"]), ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------- command line
def eval_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="eval_retrieval.py",
        description="Sketch retrieval (query vs gallery), fusion and linear-probe recognition with features of "
        "trained encoders. PART = PATH[:LAYER][@WEIGHT].",
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument("--ckpt", help="checkpoint file (best.pt or last.pt of a run)")
    src.add_argument("--exp", help="experiment name: evaluates OUT/NAME/best.pt")
    p.add_argument("--out", default="experiments", help="experiments folder used with --exp")
    p.add_argument("--layer", help="feature layer of --ckpt/--exp (default: the config's eval.feature)")
    p.add_argument("--metric", choices=("cosine", "euclidean"), help="default: the config's eval.metric")
    p.add_argument("--topk", type=int, nargs="+",
                   help=f"K values for precision@K (default: the config's eval.topk if it sets its own, "
                   f"else {' '.join(map(str, DEFAULT_TOPK))})")
    p.add_argument("--random-baseline", action="store_true",
                   help="also evaluate a randomly initialised network of the same architecture (of every "
                   "fused part too)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random-init baseline")
    p.add_argument("--baseline", action="append", default=[], metavar="CKPT[:LAYER]",
                   help="another checkpoint evaluated identically, e.g. the supervised baseline (repeatable)")
    p.add_argument("--fuse", action="append", nargs="+", default=[], metavar="PART",
                   help="one fused row from several encoders, PART = PATH[:LAYER][@WEIGHT] (repeatable)")
    p.add_argument("--fuse-mode", choices=FUSION_MODES, default="concat",
                   help="concat: weighted concatenation of L2-normalised features (a weight acts squared on "
                   "the similarity); score: weighted sum of the parts' similarities")
    p.add_argument("--probe", action="store_true", help="also measure recognition with a linear probe")
    p.add_argument("--probe-per-class", type=int, default=DEFAULT_PER_CLASS,
                   help="gallery sketches per class the probe trains on (0 = all)")
    p.add_argument("--probe-wd", type=float, nargs="+", default=list(DEFAULT_WD_GRID),
                   help="weight decays the probe chooses from")
    p.add_argument("--probe-iters", type=int, default=DEFAULT_MAX_ITER, help="L-BFGS iterations per fit")
    p.add_argument("--data", help="prepared Quick, Draw! store (default: the data the checkpoint was trained on)")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a key of every checkpoint's config (e.g. data.gallery_per_class=100)")
    p.add_argument("--memory-mb", type=float, default=DEFAULT_MEMORY_MB,
                   help="working memory of the ranking (scores, gallery block, scratch) in MiB")
    p.add_argument("--cache-dir", help="feature cache folder (default: <run>/features for each checkpoint)")
    p.add_argument("--no-cache", action="store_true", help="extract into a temporary folder, reuse nothing")
    p.add_argument("--feature-dtype", choices=("float32", "float16"), default="float32",
                   help="storage of cached features (float16 halves disk and I/O)")
    p.add_argument("--json", help="where to write the results (default: next to the checkpoint); the "
                   "Markdown report and pictures go beside it")
    p.add_argument("--no-pictures", action="store_true", help="skip the PNG pictures")
    p.add_argument("--grid-queries", type=int, default=6, help="queries (rows) in the retrieval grid")
    p.add_argument("--grid-topk", type=int, default=8, help="retrievals shown per query")
    p.add_argument("--no-progress", action="store_true")
    return p


def _overrides(args: argparse.Namespace) -> dict:
    over = parse_set(args.set)
    if args.data:
        over.update({"data.source": "store", "data.path": args.data})
    if args.batch_size:
        over["eval.batch_size"] = args.batch_size
    return over


def _identity(cfg: ExperimentConfig) -> dict:
    return {f"data.{k}": getattr(cfg.data, k) for k in IDENTITY_KEYS}


def default_topk(cfg: ExperimentConfig) -> list[int]:
    """The config's eval.topk when it sets its own, else :data:`DEFAULT_TOPK`."""
    own = list(cfg.eval.topk)
    return own if own != EvalConfig().topk else list(DEFAULT_TOPK)


def build_descriptors(args: argparse.Namespace) -> tuple[list[Descriptor], Path, Path | None]:
    """The rows to evaluate, the base path of the outputs and the checkpoint named in them."""
    over = _overrides(args)
    ckpt = Path(args.ckpt) if args.ckpt else (Path(args.out) / args.exp / "best.pt" if args.exp else None)
    if ckpt is None and not args.fuse:
        raise ConfigError("nothing to evaluate: give --ckpt, --exp or --fuse")
    main = load_encoder(ckpt, over, args.layer) if ckpt else None
    fuse_specs = [[parse_part(s) for s in group] for group in args.fuse]
    if any(len(group) < 2 for group in fuse_specs):
        raise ConfigError("--fuse needs at least two parts (PATH[:LAYER][@WEIGHT] ...)")

    first = main
    if first is None:
        first = load_encoder(fuse_specs[0][0].path, over, fuse_specs[0][0].layer)
    same_set = {**over, **_identity(first.cfg)}
    loaded: dict[tuple, Encoder] = {}

    def other(path: Path, layer: str | None) -> Encoder:
        key = (str(path), layer)
        if key not in loaded:
            loaded[key] = load_encoder(path, same_set, layer)
        return loaded[key]

    descs: list[Descriptor] = []
    if main is not None:
        descs.append(Descriptor(main.label, "pretrained", [main]))
        if args.random_baseline:
            rand = random_encoder(main, args.seed)
            descs.append(Descriptor(rand.label, "random", [rand]))
    for spec in args.baseline:
        part = parse_part(spec)
        enc = other(part.path, part.layer)
        descs.append(Descriptor(enc.label, "baseline", [enc]))
    for group in fuse_specs:
        encs = [other(p.path, p.layer) for p in group]
        weights = [p.weight for p in group]
        descs.append(Descriptor(fused_name(encs, weights, args.fuse_mode), "fused", encs, weights,
                                args.fuse_mode, fused=True))
        if args.random_baseline:
            rands = [random_encoder(e, args.seed) for e in encs]
            archs = " + ".join(e.cfg.model.name for e in encs)
            ws = ":".join(f"{w:g}" for w in weights)
            descs.append(Descriptor(f"random init (fused {archs}, {args.fuse_mode} {ws}, seed {args.seed})", "random",
                                    rands, weights, args.fuse_mode, fused=True))
    if args.json:
        base = Path(args.json).with_suffix("")
    elif ckpt is not None:
        base = ckpt.parent / f"retrieval_{ckpt.stem}"
    else:
        base = fuse_specs[0][0].path.parent / "retrieval_fused"
    return descs, base, ckpt


@dataclasses.dataclass
class Settings:
    metric: str
    topk: list[int]
    device: torch.device
    memory_mb: float = DEFAULT_MEMORY_MB
    progress: bool = True
    probe: bool = False
    probe_per_class: int = DEFAULT_PER_CLASS
    probe_wd: tuple[float, ...] = DEFAULT_WD_GRID
    probe_iters: int = DEFAULT_MAX_ITER


def evaluate_descriptor(desc: Descriptor, cache: FeatureCache, s: Settings, class_names: Sequence[str]) -> tuple[dict, object]:
    """One table row (a JSON-ready dict) and the descriptor's features (for pictures)."""
    t0 = time.time()
    feats = descriptor_features(desc, cache, s.device)
    for e in feats.entries:
        what = "cached" if e.hit else f"extracted in {e.seconds:.1f}s"
        if distributed.context().is_main:
            print(f"[eval] {desc.name}: {e.path.name} ({len(e.labels)} x {e.source.dim}) {what}")
    t1 = time.time()
    res = retrieval_metrics(feats.query, feats.query_labels, feats.gallery, feats.gallery_labels, metric=s.metric,
                            topk=s.topk, memory_mb=s.memory_mb, device=s.device, progress=s.progress)
    t2 = time.time()

    def cname(label: int) -> str:
        return str(class_names[label]) if 0 <= label < len(class_names) else str(label)

    row = {
        "model": desc.name,
        "kind": desc.kind,
        "layer": desc.layer,
        "feature_dim": feats.query.dim,
        "mAP": res["mAP"],
        **{f"P@{k}": res[f"P@{k}"] for k in s.topk},
        "num_queries": res["num_queries"],
        "num_valid_queries": res["num_valid_queries"],
        "gallery_size": len(feats.gallery),
        "metric": s.metric,
        "class_ap": {cname(c): v for c, v in res["class_ap"].items()},
        "pr_curve": res["pr_curve"],
        "features_cached": feats.all_cached,
        "seconds": {"features": round(t1 - t0, 2), "ranking": round(t2 - t1, 2)},
    }
    if desc.fused:
        row["components"] = desc.describe_parts()
        row["fusion_mode"] = desc.mode
    else:
        row["checkpoint"] = str(desc.parts[0].ckpt) if desc.parts[0].ckpt else None
    if s.probe:
        row["probe"] = run_probe(feats.query, feats.query_labels, feats.gallery, feats.gallery_labels,
                                 s.probe_per_class, s.probe_wd, s.probe_iters)
        row["seconds"]["probe"] = round(time.time() - t2, 2)
    row["encoder_unchanged"] = all(e.unchanged() for e in desc.parts)
    if not row["encoder_unchanged"]:
        raise RuntimeError(f"{desc.name}: the encoder's weights or buffers changed during evaluation")
    row["_ap"] = res["ap"]
    return row, feats


def draw_pictures(base: Path, rows: list[dict], first: Descriptor, feats, s: Settings, class_names: Sequence[str],
                  n_queries: int, k: int) -> dict[str, str]:
    """Write the PNGs; returns {caption: file name}."""
    out: dict[str, str] = {}
    cfg = first.parts[0].cfg
    picked = pick_grid_queries(feats.query_labels, n_queries)
    if picked and k > 0:
        idx, _ = topk_indices(read_rows(feats.query, picked), feats.gallery, k, s.metric, device=s.device)
        q_src, g_src = build.build_source(cfg, "query"), build.build_source(cfg, "gallery")
        ql, gl = feats.query_labels, feats.gallery_labels
        ap = rows[0]["_ap"]
        labels = [f"{class_names[ql[i]] if ql[i] < len(class_names) else ql[i]}  AP {float(ap[i]):.2f}" for i in picked]
        path = base.with_name(base.name + "_grid.png")
        query_grid(path, [q_src[i] for i in picked], [[g_src[int(j)] for j in row] for row in idx],
                   [[bool(gl[int(j)] == ql[i]) for j in row] for i, row in zip(picked, idx)], labels,
                   f"{first.name}: top-{k} retrievals (green: same class, red: other class)")
        out["queries and their top retrievals"] = path.name
    names = [str(c) for c in class_names]
    series = [(f"({i + 1}) {r['model']}", [r["class_ap"].get(n, float("nan")) for n in names]) for i, r in enumerate(rows)]
    path = base.with_name(base.name + "_class_ap.png")
    class_ap_chart(path, names, series, f"AP per class ({s.metric})")
    out["average precision per class"] = path.name
    path = base.with_name(base.name + "_pr.png")
    pr_chart(path, [(f"({i + 1}) {r['model']}", r["pr_curve"]["recall"], r["pr_curve"]["precision"])
                    for i, r in enumerate(rows)], "interpolated precision-recall, mean over queries")
    out["precision-recall curves"] = path.name
    return out


def run_evaluation(args: argparse.Namespace) -> dict:
    """Evaluate every row asked for by ``args``; write JSON, Markdown and pictures; return
    the JSON payload."""
    # Under torchrun, feature extraction is split over the ranks (engine.features); every
    # rank then ranks the same features, and rank 0 alone prints and writes.
    ctx, device = distributed.setup(args.device)
    main = ctx.is_main
    descs, base, ckpt = build_descriptors(args)
    first = descs[0]
    cfg = first.parts[0].cfg
    if cfg.train.keep_host_memory:
        keep_freed_memory()  # feature extraction allocates like a training step (utils/host_memory.py)
    metric = args.metric or cfg.eval.metric
    topk = list(args.topk) if args.topk else default_topk(cfg)
    if any(k < 1 for k in topk):
        raise ConfigError(f"--topk values must be positive, got {topk}")
    if args.probe and args.probe_iters < 1:
        raise ConfigError("--probe-iters must be positive")
    progress = not args.no_progress and main
    s = Settings(metric, topk, device, args.memory_mb, progress, args.probe, args.probe_per_class,
                 tuple(args.probe_wd), args.probe_iters)
    source = build.build_source(cfg, "query")
    class_names = list(getattr(source, "class_names", None) or [str(i) for i in range(build.num_data_classes(cfg))])
    if main:
        print(f"[eval] {len(descs)} row(s): {len(source)} queries vs {len(build.build_source(cfg, 'gallery'))} "
              f"gallery sketches ({cfg.data.source} data), {metric}, P@{topk}")

    cache = FeatureCache(args.cache_dir, temporary=args.no_cache, dtype=args.feature_dtype, progress=progress)
    rows: list[dict] = []
    first_feats = None
    try:
        for desc in descs:
            row, feats = evaluate_descriptor(desc, cache, s, class_names)
            rows.append(row)
            if first_feats is None:
                first_feats = feats
        if main:
            print(format_table(rows, topk))
        pictures = {}
        if not args.no_pictures and main:
            pictures = draw_pictures(base, rows, first, first_feats, s, class_names, args.grid_queries, args.grid_topk)
    finally:
        cache.close()
    for r in rows:
        r.pop("_ap", None)
    payload = {
        "title": first.name,
        "checkpoint": str(ckpt) if ckpt else None,
        "experiment": cfg.name if ckpt else None,
        "epoch": first.parts[0].epoch if ckpt else None,
        "metric": metric,
        "topk": topk,
        "data": {k: getattr(cfg.data, k) for k in IDENTITY_KEYS},
        "num_queries": rows[0]["num_queries"],
        "gallery_size": rows[0]["gallery_size"],
        "class_names": [str(c) for c in class_names],
        "probe_recipe": describe_recipe(args.probe_per_class, args.probe_wd, args.probe_iters) if args.probe else None,
        "pictures": pictures,
        "results": rows,
    }
    if not main:
        return payload
    base.parent.mkdir(parents=True, exist_ok=True)
    json_path = base.with_suffix(".json")
    md_path = base.with_suffix(".md")
    _write(json_path, json.dumps(payload, indent=2, default=_json_default) + "\n")
    _write(md_path, markdown_report(payload, pictures))
    print(f"[eval] results written to {json_path} and {md_path}" +
          (f"; pictures {', '.join(pictures.values())}" if pictures else ""))
    return payload


def _json_default(o: object) -> object:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _write(path: Path, text: str) -> None:
    atomic_write_text(path, text)


def eval_main(argv: Sequence[str] | None = None) -> int:
    args = eval_parser().parse_args(argv)
    try:
        return run_cli(lambda: run_evaluation(args) and None)
    finally:
        distributed.cleanup()
