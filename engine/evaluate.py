"""Retrieval evaluation of trained encoders: checkpoint -> features -> mAP / precision@K.

The model is rebuilt from the config saved in the checkpoint, so evaluating needs nothing
but the checkpoint file. Features of the query and gallery splits are read from one named
layer in eval mode without gradients and flattened to one vector per sketch.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Sequence

import torch
from tqdm import tqdm

from config import ConfigError, ExperimentConfig, from_dict
from config import apply_overrides
from engine import build
from engine.cli import parse_set, run_cli
from utils.checkpoint import CheckpointError, load_checkpoint
from utils.device import resolve_device
from utils.retrieval import retrieval_metrics
from utils.rng import seed_everything


def load_trained(path: str | Path, device: torch.device) -> tuple[torch.nn.Module, ExperimentConfig, dict]:
    """Model with the checkpoint's weights, its config, and the raw checkpoint dict."""
    state = load_checkpoint(path, map_location="cpu")
    try:
        cfg = from_dict(state["config"], where=f"{path} config")
    except ConfigError as err:
        raise CheckpointError(f"{path}: saved config is not valid here ({err})") from None
    model = build.build_model(cfg, int(state["num_outputs"]))
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as err:
        raise CheckpointError(f"{path}: weights do not fit model '{cfg.model.name}' ({str(err).splitlines()[0]})") from None
    return model.to(device).eval(), cfg, state


def random_init_model(cfg: ExperimentConfig, num_outputs: int, seed: int, device: torch.device) -> torch.nn.Module:
    """The same architecture as a trained model, with fresh seeded initial weights."""
    seed_everything(seed)
    return build.build_model(cfg, num_outputs).to(device).eval()


@torch.no_grad()
def extract_features(
    model: torch.nn.Module,
    dataset: torch.utils.data.Dataset,
    layer: str,
    device: torch.device,
    batch_size: int = 256,
    workers: int = 0,
    desc: str = "features",
    progress: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features (N, D) float32 on the CPU and labels (N,) int64 of every item of ``dataset``."""
    model.eval()
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers)
    feats, labels = [], []
    for x, y in tqdm(loader, desc=desc, disable=not progress, leave=False):
        f = model(x.to(device), out_feat_keys=layer)
        feats.append(f.flatten(1).float().cpu())
        labels.append(torch.as_tensor(y))
    return torch.cat(feats), torch.cat(labels).long()


def evaluate_retrieval(
    model: torch.nn.Module,
    cfg: ExperimentConfig,
    layer: str,
    device: torch.device,
    metric: str = "cosine",
    topk: Sequence[int] = (1, 10, 100),
    progress: bool = True,
    splits: tuple | None = None,
) -> dict:
    """mAP and precision@K of the query split against the gallery split of ``cfg``'s data.
    ``splits`` may pass prebuilt (query, gallery) datasets to avoid rebuilding them."""
    query_set, gallery_set = splits or (build.build_dataset(cfg, "query"), build.build_dataset(cfg, "gallery"))
    bs, workers = cfg.eval.batch_size, cfg.train.workers
    q, ql = extract_features(model, query_set, layer, device, bs, workers, "query features", progress)
    g, gl = extract_features(model, gallery_set, layer, device, bs, workers, "gallery features", progress)
    out = retrieval_metrics(q, ql, g, gl, metric=metric, topk=topk)
    out.pop("ap")
    out.update({"layer": layer, "metric": metric, "feature_dim": q.shape[1], "gallery_size": len(g)})
    return out


def format_table(rows: list[dict], topk: Sequence[int]) -> str:
    """A Markdown table of retrieval results, one row per evaluated model."""
    head = ["model", "layer", "dim", "mAP"] + [f"P@{k}" for k in topk]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in rows:
        cells = [r["model"], r["layer"], str(r["feature_dim"]), f"{r['mAP']:.4f}"]
        cells += [f"{r[f'P@{k}']:.4f}" for k in topk]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def eval_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="eval_retrieval.py",
        description="Sketch retrieval (query vs gallery) with features of a trained encoder.",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--ckpt", help="checkpoint file (best.pt or last.pt of a run)")
    src.add_argument("--exp", help="experiment name: evaluates OUT/NAME/best.pt")
    p.add_argument("--out", default="experiments", help="experiments folder used with --exp")
    p.add_argument("--layer", help="feature layer (default: the config's eval.feature)")
    p.add_argument("--metric", choices=("cosine", "euclidean"), help="default: the config's eval.metric")
    p.add_argument("--topk", type=int, nargs="+", help="K values for precision@K")
    p.add_argument("--random-baseline", action="store_true",
                   help="also evaluate a randomly initialised network of the same architecture")
    p.add_argument("--seed", type=int, default=0, help="seed of the random-init baseline")
    p.add_argument("--data", help="prepared Quick, Draw! store (default: the data the checkpoint was trained on)")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a key of the checkpoint's config (e.g. data.gallery_per_class=100)")
    p.add_argument("--json", help="where to write the results (default: next to the checkpoint)")
    p.add_argument("--no-progress", action="store_true")
    return p


def eval_main(argv: Sequence[str] | None = None) -> int:
    args = eval_parser().parse_args(argv)

    def go() -> None:
        device = resolve_device(args.device)
        ckpt = Path(args.ckpt) if args.ckpt else Path(args.out) / args.exp / "best.pt"
        model, cfg, state = load_trained(ckpt, device)
        over = parse_set(args.set)
        if args.data:
            over.update({"data.source": "store", "data.path": args.data})
        if args.batch_size:
            over["eval.batch_size"] = args.batch_size
        if over:
            cfg = from_dict(apply_overrides(cfg.to_dict(), over), where="overridden config")
        layer = build.feature_layer(cfg, model, args.layer)
        metric = args.metric or cfg.eval.metric
        topk = args.topk or cfg.eval.topk
        progress = not args.no_progress
        splits = (build.build_dataset(cfg, "query"), build.build_dataset(cfg, "gallery"))
        print(f"[eval] {ckpt} ({cfg.name}, epoch {state['epoch']}): {len(splits[0])} queries vs "
              f"{len(splits[1])} gallery sketches, layer {layer}, {metric}")

        rows = []
        res = evaluate_retrieval(model, cfg, layer, device, metric, topk, progress, splits)
        rows.append({"model": f"{cfg.name} (epoch {state['epoch']})", **res})
        if args.random_baseline:
            rand = random_init_model(cfg, int(state["num_outputs"]), args.seed, device)
            res = evaluate_retrieval(rand, cfg, layer, device, metric, topk, progress, splits)
            rows.append({"model": f"random init ({cfg.model.name}, seed {args.seed})", **res})
        print(format_table(rows, topk))
        out = Path(args.json) if args.json else ckpt.parent / f"retrieval_{ckpt.stem}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        payload = {"checkpoint": str(ckpt), "experiment": cfg.name, "epoch": state["epoch"], "results": rows}
        tmp = out.with_suffix(out.suffix + ".tmp")
        tmp.write_text(json.dumps(payload, indent=2) + "\n")
        tmp.replace(out)
        print(f"[eval] results written to {out}")

    return run_cli(go)
