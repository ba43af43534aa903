"""Stage 5, report: the table, the results JSON and Markdown, their names and the index.

Names. A result is named by what was evaluated (:func:`result_name`): the checkpoint's stem,
the layer, the kinds of rows (``random``, ``baselineN``, ``fusedN-concat``), the metric when
it is not cosine, ``probe``, the data folder when ``--data`` chose one, and a digest of the
evaluation's identity (every row's weights, layers, fusion weights and data, the metric,
K values, feature storage, probe and kNN settings), e.g. ``best_pool_random_probe_1a2b3c4d``;
or by a user-given ``--name``. Results live in ``<run>/eval/`` beside the checkpoint:
``NAME.json`` (every number), ``NAME.md`` (tables, pictures) and the pictures
``NAME_grid.png``, ``NAME_class_ap.png``, ``NAME_pr.png``. The same evaluation run again
replaces its own result; a different evaluation never gets the same name, and a ``--name``
that holds a different evaluation is refused (:func:`check_not_taken`).

Index. ``<run>/eval/index.json`` and ``index.md`` list every result of the run's
checkpoints (name, checkpoint and its sha256, rows, data, metric, headline numbers, the
command), updated under a lock after each evaluation (:func:`update_index`).

Every file is written whole or not at all (:mod:`evaluation.output_files`); a full disk is
one line naming the file.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import re
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from evaluation.output_files import OutputWriteError, write_text

#: Fewer sketches than this in the query or the gallery split earns a warning: mAP and P@K
#: of so few queries move by several points from one sample to the next.
SMALL_SPLIT = 100
INDEX_NAME = "index"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


# ---------------------------------------------------------------------------- names
def identity_digest(identity: dict) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()


def result_name(head: str, layer: str, tokens: Sequence[str], identity: dict) -> str:
    """``<head>_<layer>[_<token>...]_<8 hex digits of the identity>``; characters outside
    ``[A-Za-z0-9.+-]`` become ``-``."""
    parts = [head, layer, *tokens]
    clean = [re.sub(r"[^A-Za-z0-9.+-]+", "-", p).strip("-") for p in parts if p]
    return "_".join(p for p in clean if p) + "_" + identity_digest(identity)[:8]


def check_name(name: str) -> str:
    if not _NAME_RE.match(name) or len(name) > 150:
        raise ValueError(f"--name '{name}': use letters, digits and . _ + - (at most 150 characters)")
    return name


def check_not_taken(json_path: Path, identity: dict) -> None:
    """Refuse (ValueError, one line) to replace a result of another evaluation."""
    if not json_path.exists():
        return
    try:
        theirs = json.loads(json_path.read_text()).get("identity")
    except (OSError, ValueError, AttributeError):
        theirs = None
    if theirs != json.loads(json.dumps(identity, default=str)):
        raise ValueError(f"{json_path} holds the results of another evaluation; choose another --name "
                         "(or remove that file)")


# ---------------------------------------------------------------------------- tables
def _cell(value: float | None) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"


def clamped_topk(topk: Sequence[int], gallery_size: int) -> list[int]:
    """The K values above the gallery size (their precision is taken at the gallery size)."""
    return [k for k in topk if k > gallery_size]


def format_table(rows: list[dict], topk: Sequence[int], gallery_size: int | None = None) -> str:
    """A Markdown table, one row per descriptor: mAP, P@K (a K above the gallery size is
    marked ``*``), kNN and probe top-1 / top-5 when any row has them."""
    knn = any(r.get("knn") for r in rows)
    probe = any(r.get("probe") for r in rows)
    over = set(clamped_topk(topk, gallery_size)) if gallery_size is not None else set()
    head = ["model", "layer", "dim", "mAP"] + [f"P@{k}" + ("*" if k in over else "") for k in topk]
    head += (["kNN top-1", "kNN top-5"] if knn else []) + (["probe top-1", "probe top-5"] if probe else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in rows:
        cells = [r["model"], r["layer"], str(r["feature_dim"]), _cell(r["mAP"])]
        cells += [_cell(r[f"P@{k}"]) for k in topk]
        for key, on in (("knn", knn), ("probe", probe)):
            if on:
                m = r.get(key)
                cells += [_cell(m["top1"]), _cell(m["top5"])] if m else ["-", "-"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def table_notes(topk: Sequence[int], gallery_size: int) -> list[str]:
    """Footnotes of the table: the ``*`` of P@K above the gallery size."""
    over = clamped_topk(topk, gallery_size)
    if not over:
        return []
    ks = ", ".join(str(k) for k in over)
    return [f"* K = {ks} is above the gallery size ({gallery_size}): precision taken at the gallery size."]


def split_warnings(num_queries: int, gallery_size: int) -> list[str]:
    """Warnings for a tiny query or gallery split (fewer than :data:`SMALL_SPLIT`)."""
    out = []
    for what, n in (("queries", num_queries), ("gallery sketches", gallery_size)):
        if n < SMALL_SPLIT:
            out.append(f"only {n} {what} (fewer than {SMALL_SPLIT}): mAP, P@K and accuracies vary a lot "
                       "with so small a sample")
    return out


def class_table(rows: list[dict], class_names: Sequence[str]) -> str:
    """Markdown: AP of each class (rows) for each descriptor (columns, numbered as in the
    main table)."""
    head = ["class"] + [f"({i + 1})" for i in range(len(rows))]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for name in class_names:
        lines.append("| " + " | ".join([str(name)] + [_cell(r["class_ap"].get(str(name))) for r in rows]) + " |")
    return "\n".join(lines)


def markdown_report(payload: dict) -> str:
    """The Markdown file written beside the JSON."""
    topk, rows, d = payload["topk"], payload["results"], payload["data"]
    lines = [f"# Evaluation: {payload['title']}", "", f"Result `{payload['name']}`.", ""]
    lines.append(
        f"{payload['num_queries']} queries vs {payload['gallery_size']} gallery sketches "
        f"({d['source']} data, {len(payload['class_names'])} classes), {payload['metric']} similarity, "
        f"every query ranks the whole gallery; mAP over the full ranking; ties keep gallery order."
    )
    lines += ["", format_table(rows, topk, payload["gallery_size"]), ""]
    lines += table_notes(topk, payload["gallery_size"])
    for i, r in enumerate(rows):
        extra = ""
        if r.get("components"):
            parts = ", ".join(f"{c['model']}:{c['layer']}@{c['weight']:g}" for c in r["components"])
            extra = f" = {r['fusion_mode']} of {parts}"
        lines.append(f"- ({i + 1}) {r['model']}{extra}")
    lines += ["", f"mAP and P@K: retrieval ({payload['metric']} similarity)."]
    if payload.get("knn"):
        k = payload["knn"]
        lines += ["", f"kNN top-1, top-5: each query classified by a vote of its {k['k']} nearest gallery sketches "
                  f"(same similarity), weights exp(s / {k['temperature']:g})."]
    if payload.get("probe_recipe"):
        lines += ["", "probe top-1, top-5: recognition accuracy of a linear probe on frozen features. "
                  + payload["probe_recipe"]]
        for r in rows:
            if r.get("probe"):
                lines.append(f"- {r['model']}: weight decay {r['probe']['weight_decay']:g}; encoder unchanged: "
                             f"{r['encoder_unchanged']}")
    for w in payload.get("warnings", []):
        lines += ["", f"Warning: {w}."]
    if payload.get("pictures"):
        lines += ["", "## Pictures", ""]
        for caption, name in payload["pictures"].items():
            lines += [f"![{caption}]({name})", ""]
    lines += ["## Average precision per class", "", class_table(rows, payload["class_names"]), ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------- files
def _json_default(o: object) -> object:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def write_results(base: Path, payload: dict) -> tuple[Path, Path]:
    """``base.json`` then ``base.md``. Raises :class:`OutputWriteError`."""
    json_path, md_path = base.with_name(base.name + ".json"), base.with_name(base.name + ".md")
    write_text(json_path, json.dumps(payload, indent=2, default=_json_default) + "\n")
    write_text(md_path, markdown_report(payload))
    return json_path, md_path


def index_entry(payload: dict, json_path: Path, folder: Path) -> dict:
    try:
        where = os.path.relpath(json_path, folder)
    except ValueError:
        where = str(json_path)
    first = payload["results"][0]
    return {
        "name": payload["name"],
        "json": where,
        "written": time.strftime("%Y-%m-%d %H:%M:%S"),
        "checkpoint": payload["checkpoint"],
        "checkpoint_sha256": payload.get("checkpoint_sha256"),
        "title": payload["title"],
        "rows": [r["model"] for r in payload["results"]],
        "layer": first["layer"],
        "data": payload["data"],
        "metric": payload["metric"],
        "mAP": first["mAP"],
        "knn_top1": (first.get("knn") or {}).get("top1"),
        "probe_top1": (first.get("probe") or {}).get("top1"),
        "command": payload.get("command"),
    }


def index_markdown(entries: list[dict]) -> str:
    lines = ["# Evaluations of this run", "",
             "Newest last. mAP, kNN and probe top-1 are the first row's; the JSON holds every row.", "",
             "| result | checkpoint | rows | data | metric | mAP | kNN top-1 | probe top-1 | written |",
             "|---|---|---|---|---|---|---|---|---|"]
    for e in entries:
        ckpt = Path(e["checkpoint"]).name if e.get("checkpoint") else "-"
        if e.get("checkpoint_sha256"):
            ckpt += f" ({e['checkpoint_sha256'][:8]})"
        data = e["data"].get("path") or e["data"].get("source")
        lines.append(f"| [{e['name']}]({e['json']}) | {ckpt} | {'; '.join(e['rows'])} | {data} | {e['metric']} | "
                     f"{_cell(e['mAP'])} | {_cell(e.get('knn_top1'))} | {_cell(e.get('probe_top1'))} | "
                     f"{e['written']} |")
    return "\n".join(lines) + "\n"


def update_index(folder: Path, entry: dict) -> Path:
    """Add ``entry`` to ``folder/index.json`` (replacing an entry of the same name, which
    is the same evaluation, and dropping entries whose results file is gone) and rewrite
    ``index.md``, under an exclusive lock on the folder.
    An unreadable index is kept aside as ``index.json.bad`` and a new one started.
    Raises :class:`OutputWriteError`."""
    path = folder / f"{INDEX_NAME}.json"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock = os.open(folder, os.O_RDONLY)
    except OSError as err:
        raise OutputWriteError(folder, err) from None
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        entries: list[dict] = []
        if path.exists():
            try:
                entries = list(json.loads(path.read_text())["results"])
            except (OSError, ValueError, KeyError, TypeError):
                try:
                    os.replace(path, path.with_name(path.name + ".bad"))
                except OSError as err:
                    raise OutputWriteError(path, err) from None
        # an entry of the same name is the same evaluation; results removed since are dropped
        entries = [e for e in entries if e.get("name") != entry["name"] and (folder / str(e.get("json"))).exists()]
        entries.append(entry)
        write_text(path, json.dumps({"results": entries}, indent=2, default=_json_default) + "\n")
        write_text(folder / f"{INDEX_NAME}.md", index_markdown(entries))
    finally:
        os.close(lock)
    return path
