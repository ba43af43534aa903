"""The evaluation command: command line, plan of rows, the loop; the only caller of the stages.

``python eval_retrieval.py --ckpt experiments/NAME/best.pt [options]`` evaluates one table
(docs/EVALUATION.md). A checkpoint's path through the stages, each a module, in one
direction:

    run          command line -> the plan: rows (Descriptors), where results go, their name
    encoders     checkpoint (or seeded random init) -> Encoder, a network with named layers
    features     (Encoder, split, layer) -> CachedFeatures, extracted once then read back
    descriptors  the parts' features -> the row's query and gallery features (fused or not)
    metrics      retrieval (mAP, P@K, per-class AP, nearest neighbours) -> kNN vote;
                 linear probe
    report       table, JSON, Markdown, index;  pictures: grid, per-class AP, PR curves

Rows: the checkpoint (``--ckpt`` / ``--exp``); ``--random-baseline`` (the same architecture,
seeded random weights); ``--baseline CKPT[:LAYER]``; ``--fuse PART PART ...`` (several
encoders fused into one descriptor, ``PART = PATH[:LAYER][@WEIGHT]``). Every model is
rebuilt from the config saved in its checkpoint; all rows are evaluated on the same
retrieval set: the data keys that choose the query and gallery sketches
(:data:`IDENTITY_KEYS`) are taken from the first checkpoint and imposed on the others;
``--set`` overrides apply to every checkpoint.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from config import ConfigError, ExperimentConfig
from config.schema import EvalConfig
from engine import build, distributed
from engine.cli import parse_set, run_cli
from evaluation import descriptors, encoders, features, pictures, report
from evaluation.descriptors import FUSION_MODES, Descriptor, DescriptorFeatures
from evaluation.features import FeatureCache
from evaluation.metrics import knn, linear_probe, retrieval
from utils.host_memory import keep_freed_memory

#: Precision@K cut-offs when neither ``--topk`` nor the config's ``eval.topk`` chooses others.
DEFAULT_TOPK = (1, 10, 100, 1000)
#: Data keys that decide which sketches are queries and gallery items.
IDENTITY_KEYS = ("source", "path", "num_classes", "query_per_class", "gallery_per_class", "seed")
#: Folder of the results, beside the checkpoint.
RESULTS_FOLDER = "eval"

__all__ = ["eval_main", "eval_parser", "run_evaluation", "DEFAULT_TOPK"]


# ---------------------------------------------------------------------------- command line
def eval_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="eval_retrieval.py",
        description="Sketch retrieval (query vs gallery), kNN and linear-probe recognition, and fusion, with "
        "features of trained encoders. PART = PATH[:LAYER][@WEIGHT].",
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
    p.add_argument("--knn-k", type=int, default=knn.DEFAULT_K,
                   help="neighbours of the kNN vote (0: no kNN columns)")
    p.add_argument("--knn-temperature", type=float, default=knn.DEFAULT_TEMPERATURE,
                   help="T of the kNN vote weights exp(similarity / T)")
    p.add_argument("--probe", action="store_true", help="also measure recognition with a linear probe")
    p.add_argument("--probe-per-class", type=int, default=linear_probe.DEFAULT_PER_CLASS,
                   help="gallery sketches per class the probe trains on (0 = all)")
    p.add_argument("--probe-wd", type=float, nargs="+", default=list(linear_probe.DEFAULT_WD_GRID),
                   help="weight decays the probe chooses from")
    p.add_argument("--probe-iters", type=int, default=linear_probe.DEFAULT_MAX_ITER,
                   help="L-BFGS iterations per fit")
    p.add_argument("--data", help="prepared Quick, Draw! store (default: the data the checkpoint was trained on)")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a key of every checkpoint's config (e.g. data.gallery_per_class=100)")
    p.add_argument("--memory-mb", type=float, default=retrieval.DEFAULT_MEMORY_MB,
                   help="working memory of the ranking (scores, gallery block, scratch) in MiB")
    p.add_argument("--cache-dir", help="feature cache folder (default: <run>/features for each checkpoint)")
    p.add_argument("--no-cache", action="store_true", help="extract into a temporary folder, reuse nothing")
    p.add_argument("--feature-dtype", choices=("float32", "float16"), default="float32",
                   help="storage of cached features (float16 halves disk and I/O)")
    p.add_argument("--name", help=f"name of the result (default: from what is evaluated); files go to "
                   f"<run>/{RESULTS_FOLDER}/NAME.json, .md and pictures")
    p.add_argument("--json", help="write the results exactly here instead (replacing what is there); the "
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


def default_topk(cfg: ExperimentConfig) -> list[int]:
    """The config's eval.topk when it sets its own, else :data:`DEFAULT_TOPK`."""
    own = list(cfg.eval.topk)
    return own if own != EvalConfig().topk else list(DEFAULT_TOPK)


@dataclass
class Settings:
    """How every row is measured."""

    metric: str
    topk: list[int]
    device: torch.device
    memory_mb: float = retrieval.DEFAULT_MEMORY_MB
    progress: bool = True
    knn_k: int = knn.DEFAULT_K
    knn_temperature: float = knn.DEFAULT_TEMPERATURE
    neighbours: int = knn.DEFAULT_K  # nearest items kept per query: kNN, and the grid of row 1
    probe: bool = False
    probe_per_class: int = linear_probe.DEFAULT_PER_CLASS
    probe_wd: tuple[float, ...] = linear_probe.DEFAULT_WD_GRID
    probe_iters: int = linear_probe.DEFAULT_MAX_ITER


def settings_from(args: argparse.Namespace, cfg: ExperimentConfig, device: torch.device, progress: bool) -> Settings:
    topk = list(args.topk) if args.topk else default_topk(cfg)
    if any(k < 1 for k in topk):
        raise ConfigError(f"--topk values must be positive, got {topk}")
    if args.probe and args.probe_iters < 1:
        raise ConfigError("--probe-iters must be positive")
    if args.knn_k < 0 or args.knn_temperature <= 0:
        raise ConfigError("--knn-k must be >= 0 and --knn-temperature > 0")
    grid = args.grid_topk if not args.no_pictures else 0
    return Settings(args.metric or cfg.eval.metric, topk, device, args.memory_mb, progress, args.knn_k,
                    args.knn_temperature, max(args.knn_k, grid), args.probe, args.probe_per_class,
                    tuple(args.probe_wd), args.probe_iters)


# ---------------------------------------------------------------------------- the plan
@dataclass
class Plan:
    """What one command evaluates and where its results go."""

    rows: list[Descriptor]
    ckpt: Path | None  # the checkpoint named by --ckpt / --exp
    base: Path  # results: base.json, base.md, base_grid.png, ...
    index_folder: Path  # where the index of the run's results is kept
    name: str


def plan_rows(args: argparse.Namespace) -> tuple[list[Descriptor], Path | None, list]:
    """The rows to evaluate, in table order; the checkpoint named in them; the fused parts."""
    over = _overrides(args)
    ckpt = Path(args.ckpt) if args.ckpt else (Path(args.out) / args.exp / "best.pt" if args.exp else None)
    if ckpt is None and not args.fuse:
        raise ConfigError("nothing to evaluate: give --ckpt, --exp or --fuse")
    main = encoders.load_encoder(ckpt, over, args.layer) if ckpt else None
    fuse_specs = [[descriptors.parse_part(s) for s in group] for group in args.fuse]
    if any(len(group) < 2 for group in fuse_specs):
        raise ConfigError("--fuse needs at least two parts (PATH[:LAYER][@WEIGHT] ...)")

    first = main or encoders.load_encoder(fuse_specs[0][0].path, over, fuse_specs[0][0].layer)
    same_set = {**over, **{f"data.{k}": getattr(first.cfg.data, k) for k in IDENTITY_KEYS}}
    loaded: dict[tuple, encoders.Encoder] = {}

    def other(path: Path, layer: str | None) -> encoders.Encoder:
        key = (str(path), layer)
        if key not in loaded:
            loaded[key] = encoders.load_encoder(path, same_set, layer)
        return loaded[key]

    rows: list[Descriptor] = []
    if main is not None:
        rows.append(Descriptor(main.label, "pretrained", [main]))
        if args.random_baseline:
            rand = encoders.random_encoder(main, args.seed)
            rows.append(Descriptor(rand.label, "random", [rand]))
    for spec in args.baseline:
        part = descriptors.parse_part(spec)
        enc = other(part.path, part.layer)
        rows.append(Descriptor(enc.label, "baseline", [enc]))
    for group in fuse_specs:
        encs = [other(p.path, p.layer) for p in group]
        weights = [p.weight for p in group]
        rows.append(Descriptor(descriptors.fused_name(encs, weights, args.fuse_mode), "fused", encs, weights,
                               args.fuse_mode, fused=True))
        if args.random_baseline:
            rands = [encoders.random_encoder(e, args.seed) for e in encs]
            archs = " + ".join(e.cfg.model.name for e in encs)
            ws = ":".join(f"{w:g}" for w in weights)
            rows.append(Descriptor(f"random init (fused {archs}, {args.fuse_mode} {ws}, seed {args.seed})", "random",
                                   rands, weights, args.fuse_mode, fused=True))
    return rows, ckpt, fuse_specs


def evaluation_identity(rows: list[Descriptor], s: Settings, feature_dtype: str) -> dict:
    """Everything that decides the numbers of a table (the digest in a result's name)."""
    return {
        "rows": [{**d.identity(), "data": [features.data_digest(p.cfg) for p in d.parts]} for d in rows],
        "metric": s.metric,
        "topk": list(s.topk),
        "feature_dtype": feature_dtype,
        "knn": {"k": s.knn_k, "temperature": s.knn_temperature} if s.knn_k else None,
        "probe": {"per_class": s.probe_per_class, "wd": list(s.probe_wd), "iters": s.probe_iters} if s.probe else None,
    }


def make_plan(args: argparse.Namespace, rows: list[Descriptor], ckpt: Path | None, fuse_specs: list,
              identity: dict) -> Plan:
    """Where the results go and their name; refuses a ``--name`` that holds another evaluation."""
    home = (ckpt.parent if ckpt is not None else fuse_specs[0][0].path.parent) / RESULTS_FOLDER
    if args.json and args.name:
        raise ConfigError("give --name (a result in <run>/eval/) or --json (a file of your choice), not both")
    if args.json:
        base = Path(args.json).with_suffix("")
        return Plan(rows, ckpt, base, home, base.name)
    if args.name:
        try:
            name = report.check_name(args.name)
        except ValueError as err:
            raise ConfigError(str(err)) from None
    else:
        kinds = [d.kind for d in rows]
        fused = [d for d in rows if d.kind == "fused"]
        tokens = ["random" if "random" in kinds else "",
                  f"baseline{kinds.count('baseline')}" if "baseline" in kinds else "",
                  (f"fused{len(fused)}-{fused[0].mode}" if len(fused) > 1 else f"fused-{fused[0].mode}") if fused else "",
                  identity["metric"] if identity["metric"] != "cosine" else "", "probe" if identity["probe"] else "",
                  f"data-{Path(args.data).name}" if args.data else ""]
        head = ckpt.stem if ckpt is not None else "fused"
        name = report.result_name(head, rows[0].layer, tokens, identity)
    base = home / name
    try:
        report.check_not_taken(base.with_name(name + ".json"), identity)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    return Plan(rows, ckpt, base, home, name)


# ---------------------------------------------------------------------------- the loop
def evaluate_row(desc: Descriptor, cache: FeatureCache, s: Settings,
                 class_names: Sequence[str]) -> tuple[dict, DescriptorFeatures, dict]:
    """One row: its features, retrieval, kNN and probe. Returns the JSON-ready row, the
    row's features and the retrieval result (per-query AP, neighbours) for the pictures."""
    t0 = time.time()
    parts = [(cache.get(enc, "query", s.device), cache.get(enc, "gallery", s.device)) for enc in desc.parts]
    feats = descriptors.combine(desc, [q for q, _ in parts], [g for _, g in parts])
    for e in feats.entries:
        what = "cached" if e.hit else f"extracted in {e.seconds:.1f}s"
        if distributed.context().is_main:
            print(f"[eval] {desc.name}: {e.path.name} ({len(e.labels)} x {e.source.dim}) {what}")
    t1 = time.time()
    res = retrieval.retrieval_metrics(feats.query, feats.query_labels, feats.gallery, feats.gallery_labels,
                                      metric=s.metric, topk=s.topk, memory_mb=s.memory_mb, device=s.device,
                                      progress=s.progress, neighbours=s.neighbours)
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
    if s.knn_k:
        nb = res["neighbours"]
        row["knn"] = knn.knn_classify(nb["index"], nb["score"], feats.gallery_labels, feats.query_labels,
                                      s.knn_k, s.knn_temperature)
    if s.probe:
        t3 = time.time()
        row["probe"] = linear_probe.run_probe(feats.query, feats.query_labels, feats.gallery, feats.gallery_labels,
                                              s.probe_per_class, s.probe_wd, s.probe_iters)
        row["seconds"]["probe"] = round(time.time() - t3, 2)
    row["encoder_unchanged"] = all(e.unchanged() for e in desc.parts)
    if not row["encoder_unchanged"]:
        raise RuntimeError(f"{desc.name}: the encoder's weights or buffers changed during evaluation")
    return row, feats, res


def draw_pictures(base: Path, rows: list[dict], first: Descriptor, feats: DescriptorFeatures, res: dict,
                  s: Settings, class_names: Sequence[str], n_queries: int, k: int) -> dict[str, str]:
    """The grid of the first row's nearest gallery sketches for a few queries, the per-class
    AP chart and the PR curves of every row; returns {caption: file name}."""
    out: dict[str, str] = {}
    cfg = first.parts[0].cfg
    picked = pictures.pick_grid_queries(feats.query_labels, n_queries)
    k = min(k, res["neighbours"]["index"].shape[1]) if "neighbours" in res else 0
    if picked and k > 0:
        idx = res["neighbours"]["index"][picked, :k]
        q_src, g_src = build.build_source(cfg, "query"), build.build_source(cfg, "gallery")
        ql, gl = feats.query_labels, feats.gallery_labels
        labels = [f"{class_names[ql[i]] if ql[i] < len(class_names) else ql[i]}  AP {float(res['ap'][i]):.2f}"
                  for i in picked]
        path = base.with_name(base.name + "_grid.png")
        pictures.query_grid(path, [q_src[i] for i in picked], [[g_src[int(j)] for j in row] for row in idx],
                            [[bool(gl[int(j)] == ql[i]) for j in row] for i, row in zip(picked, idx)], labels,
                            f"{first.name}: top-{k} retrievals (green: same class, red: other class)")
        out["queries and their top retrievals"] = path.name
    names = [str(c) for c in class_names]
    series = [(f"({i + 1}) {r['model']}", [r["class_ap"].get(n, float("nan")) for n in names]) for i, r in enumerate(rows)]
    path = base.with_name(base.name + "_class_ap.png")
    pictures.class_ap_chart(path, names, series, f"AP per class ({s.metric})")
    out["average precision per class"] = path.name
    path = base.with_name(base.name + "_pr.png")
    pictures.pr_chart(path, [(f"({i + 1}) {r['model']}", r["pr_curve"]["recall"], r["pr_curve"]["precision"])
                             for i, r in enumerate(rows)], "interpolated precision-recall, mean over queries")
    out["precision-recall curves"] = path.name
    return out


def run_evaluation(args: argparse.Namespace, command: str | None = None) -> dict:
    """Evaluate every row asked for by ``args``; write pictures, JSON, Markdown and the
    index entry; return the JSON payload."""
    # Under torchrun, feature extraction is split over the ranks (evaluation.features); every
    # rank then ranks the same features, and rank 0 alone prints and writes.
    ctx, device = distributed.setup(args.device)
    main = ctx.is_main
    rows_plan, ckpt, fuse_specs = plan_rows(args)
    first = rows_plan[0]
    cfg = first.parts[0].cfg
    if cfg.train.keep_host_memory:
        keep_freed_memory()  # feature extraction allocates like a training step (utils/host_memory.py)
    progress = not args.no_progress and main
    s = settings_from(args, cfg, device, progress)
    identity = evaluation_identity(rows_plan, s, args.feature_dtype)
    plan = make_plan(args, rows_plan, ckpt, fuse_specs, identity)
    source = build.build_source(cfg, "query")
    gallery_size = len(build.build_source(cfg, "gallery"))
    class_names = list(getattr(source, "class_names", None) or [str(i) for i in range(build.num_data_classes(cfg))])
    warnings = report.split_warnings(len(source), gallery_size)
    if main:
        print(f"[eval] {len(plan.rows)} row(s): {len(source)} queries vs {gallery_size} gallery sketches "
              f"({cfg.data.source} data), {s.metric}, P@{s.topk}" + (f", kNN k={s.knn_k}" if s.knn_k else ""))
        for w in warnings:
            print(f"[eval] warning: {w}")

    cache = FeatureCache(args.cache_dir, temporary=args.no_cache, dtype=args.feature_dtype, progress=progress)
    rows: list[dict] = []
    first_feats = first_res = None
    try:
        for desc in plan.rows:
            row, feats, res = evaluate_row(desc, cache, s, class_names)
            rows.append(row)
            if first_feats is None:
                first_feats, first_res = feats, res
        if main:
            print(report.format_table(rows, s.topk, gallery_size))
            for note in report.table_notes(s.topk, gallery_size):
                print(note)
        drawn = {}
        if not args.no_pictures and main:
            drawn = draw_pictures(plan.base, rows, first, first_feats, first_res, s, class_names,
                                  args.grid_queries, args.grid_topk)
    finally:
        cache.close()
    payload = {
        "name": plan.name,
        "title": first.name,
        "checkpoint": str(ckpt) if ckpt else None,
        "checkpoint_sha256": first.parts[0].weights_id if ckpt else None,
        "experiment": cfg.name if ckpt else None,
        "epoch": first.parts[0].epoch if ckpt else None,
        "metric": s.metric,
        "topk": s.topk,
        "topk_above_gallery": report.clamped_topk(s.topk, gallery_size),
        "data": {k: getattr(cfg.data, k) for k in IDENTITY_KEYS},
        "num_queries": rows[0]["num_queries"],
        "gallery_size": rows[0]["gallery_size"],
        "class_names": [str(c) for c in class_names],
        "knn": {"k": s.knn_k, "temperature": s.knn_temperature} if s.knn_k else None,
        "probe_recipe": linear_probe.describe_recipe(s.probe_per_class, s.probe_wd, s.probe_iters) if s.probe else None,
        "warnings": warnings,
        "pictures": drawn,
        "command": command,
        "identity": identity,
        "results": rows,
    }
    if not main:
        return payload
    json_path, md_path = report.write_results(plan.base, payload)
    report.update_index(plan.index_folder, report.index_entry(payload, json_path, plan.index_folder))
    print(f"[eval] results written to {json_path} and {md_path}" +
          (f"; pictures {', '.join(drawn.values())}" if drawn else "") +
          f"; index {plan.index_folder / (report.INDEX_NAME + '.md')}")
    return payload


def eval_main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = eval_parser().parse_args(argv)
    command = "python eval_retrieval.py " + shlex.join(argv)
    try:
        return run_cli(lambda: run_evaluation(args, command) and None)
    finally:
        distributed.cleanup()
