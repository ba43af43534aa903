"""Stage 2, features: (encoder, split, layer) -> features, extracted or read from the cache.

:class:`FeatureCache` extracts the features of a split (``query`` or ``gallery``) from an
encoder's named layer (eval mode, no gradients, batched, CPU or CUDA; under torchrun split
over the processes) into an ``.npy`` file, block by block, and reuses it on the next
evaluation. What it hands on is a :class:`CachedFeatures`: a feature source read in blocks
(:mod:`evaluation.feature_matrix`) and the labels. A cache entry is named

    <cache dir>/<encoder stem>-<split>-<layer>-<digest>.npy   (+ .labels.npy, .json)

where the digest covers the encoder's ``weights_id`` (sha256 of the checkpoint's bytes; for
a random init: seed, architecture and torch version), the split, the layer, the data config
(after overrides; a store's content hash included), the storage dtype and
:data:`FEATURE_VERSION`. The three files are each written to a locked temporary file and
renamed; the ``.json`` comes last and marks the entry complete, so an interrupted extraction
never leaves an entry that loads. The ``.json`` also holds a CRC-32 of the two ``.npy``
files, checked before an entry is used: an entry changed on disk since it was written (even
in place at the same size) is extracted again, with one line saying so. Temporaries that a
killed extraction left behind are removed when the cache first looks at their folder
(:func:`evaluation.output_files.remove_stale_temporaries_in`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import shutil
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from config import ConfigError, ExperimentConfig
from data.datasets import collate_samples
from data.store import read_meta
from engine import build, distributed
from evaluation.encoders import Encoder
from evaluation.feature_matrix import STORAGE_DTYPES, NpyReader, NpyWriter, file_crc32
from evaluation.output_files import remove_stale_temporaries_in, write_locked

#: Bump when the meaning of extracted features changes, to invalidate old cache entries.
FEATURE_VERSION = 1


def _digest(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


# ---------------------------------------------------------------------------- extraction
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
    writer: NpyWriter | None = None,
) -> tuple[torch.Tensor | None, torch.Tensor]:
    """Features of every item of ``dataset`` from ``layer``, flattened to (N, D), and labels (N,).

    The model is put in eval mode and run without gradients. With ``writer`` the features
    go to it batch by batch (nothing is kept in memory) and None is returned in their place;
    otherwise they are returned as one float32 CPU tensor.
    """
    model.eval()
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                                         pin_memory=device.type == "cuda", collate_fn=collate_samples)
    feats, labels = [], []
    for x, y in tqdm(loader, desc=desc, disable=not progress, leave=False):
        f = model(x.to(device, non_blocking=True), out_feat_keys=layer).flatten(1).float().cpu()
        if writer is not None:
            writer.write(f)
        else:
            feats.append(f)
        labels.append(torch.as_tensor(y))
    labels_t = torch.cat(labels).long() if labels else torch.zeros(0, dtype=torch.int64)
    return (None if writer is not None else torch.cat(feats)), labels_t


def data_digest(cfg: ExperimentConfig) -> str:
    """Identity of the sketches a config reads. For a prepared store this includes the
    store's content hash, so re-preparing a store at the same path never reuses features
    extracted from the old one."""
    data = dataclasses.asdict(cfg.data)
    if cfg.data.source == "store":
        data["store_content"] = read_meta(cfg.data.path).get("content_sha256")
    return _digest(data)


@dataclass
class CachedFeatures:
    """Features of one split on disk, read in blocks, with their labels."""

    source: NpyReader
    labels: np.ndarray
    path: Path
    hit: bool  # True when found in the cache, False when just extracted
    seconds: float = 0.0


class FeatureCache:
    """Extract-once features.

    Args:
        root: folder for every entry; None puts each encoder's entries in its own
            ``home`` (``<checkpoint folder>/features``).
        temporary: keep entries in a temporary folder removed by :meth:`close` (no reuse
            across runs).
        dtype: storage type, ``float32`` (exact) or ``float16`` (half the disk and I/O).
        progress: progress bars while extracting.

    :meth:`get` raises :class:`evaluation.output_files.OutputWriteError` when an entry
    cannot be written (a full disk); complete entries written before stay usable.
    """

    def __init__(self, root: str | os.PathLike | None = None, temporary: bool = False, dtype: str = "float32",
                 progress: bool = True) -> None:
        if dtype not in STORAGE_DTYPES:
            raise ConfigError(f"feature dtype must be one of {', '.join(STORAGE_DTYPES)}, got '{dtype}'")
        self._tmp = tempfile.mkdtemp(prefix="sketch-features-") if temporary else None
        self.root = Path(self._tmp) if temporary else (Path(root) if root is not None else None)
        self.dtype = dtype
        self.progress = progress
        self._datasets: dict[tuple, torch.utils.data.Dataset] = {}
        self._verified: dict[tuple, bool] = {}
        self._swept: set[Path] = set()
        self.extracted: list[Path] = []  # entries written by this cache object

    def close(self) -> None:
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def entry(self, enc: Encoder, split: str) -> Path:
        """Path of the ``.npy`` file of an encoder's features of ``split`` (without the suffix
        variants for labels and metadata)."""
        key = _digest({"weights": enc.weights_id, "split": split, "layer": enc.layer, "data": data_digest(enc.cfg),
                       "dtype": self.dtype, "version": FEATURE_VERSION})
        root = self.root or enc.home
        if root is None:
            raise ValueError(f"no cache folder for encoder {enc.label}")
        return root / f"{enc.stem}-{split}-{enc.layer}-{key[:16]}.npy"

    @staticmethod
    def _parts(path: Path) -> tuple[Path, Path]:
        base = path.with_suffix("")
        return base.with_name(base.name + ".labels.npy"), base.with_name(base.name + ".json")

    def _sweep(self, folder: Path) -> None:
        """Remove what killed extractions left in ``folder`` (once per folder and cache)."""
        if folder in self._swept:
            return
        self._swept.add(folder)
        removed = remove_stale_temporaries_in(folder)
        if removed and distributed.context().is_main:
            mb = sum(size for _, size in removed) / 2**20
            print(f"[eval] removed {len(removed)} temporary file(s) ({mb:.1f} MB) that interrupted extractions "
                  f"left in {folder}")

    def _intact(self, path: Path, labels_path: Path, meta: dict) -> bool:
        """True when both ``.npy`` files have the CRC-32 their metadata recorded (memoised
        per file identity and modification time)."""
        try:
            stats = [(str(p), st.st_ino, st.st_size, st.st_mtime_ns) for p in (path, labels_path)
                     for st in [p.stat()]]
        except OSError:
            return False
        key = tuple(stats) + (meta.get("crc32"), meta.get("labels_crc32"))
        if key not in self._verified:
            want = (meta.get("crc32"), meta.get("labels_crc32"))
            self._verified[key] = None not in want and want == (file_crc32(path), file_crc32(labels_path))
        return self._verified[key]

    def lookup(self, enc: Encoder, split: str) -> CachedFeatures | None:
        """The entry of ``split`` if it is complete and intact, else None (with one line
        when an entry is there but damaged)."""
        path = self.entry(enc, split)
        self._sweep(path.parent)
        labels_path, meta_path = self._parts(path)
        if not meta_path.exists():
            return None
        try:
            meta = json.loads(meta_path.read_text())
            reader = NpyReader(path)
            labels = np.load(labels_path)
        except (OSError, ValueError) as err:
            print(f"[eval] ignoring a broken cache entry {path.name} ({err})")
            return None
        if list(reader.shape) != meta.get("shape") or labels.shape != (reader.shape[0],):
            return None
        if not self._intact(path, labels_path, meta):
            if distributed.context().is_main:
                why = "has no checksum (older version)" if "crc32" not in meta else "does not match its checksum"
                print(f"[eval] cache entry {path} {why}; extracting it again")
            return None
        return CachedFeatures(reader, labels, path, hit=True)

    def dataset(self, cfg: ExperimentConfig, split: str) -> torch.utils.data.Dataset:
        key = (data_digest(cfg), split)
        if key not in self._datasets:
            self._datasets[key] = build.build_dataset(cfg, split)
        return self._datasets[key]

    def get(self, enc: Encoder, split: str, device: torch.device) -> CachedFeatures:
        """Features of ``split`` from the cache, extracted first if they are not there."""
        found = self.lookup(enc, split)
        if found is not None:
            return found
        path = self.entry(enc, split)
        labels_path, meta_path = self._parts(path)
        dataset = self.dataset(enc.cfg, split)
        t0 = time.time()
        if distributed.is_distributed():
            # Under torchrun every rank extracts one contiguous share; the shares are gathered
            # in rank order, which is the single-process order. One rank writes a shared cache
            # (every rank its own copy when each has a private temporary folder).
            share = torch.utils.data.Subset(dataset, list(distributed.shard_indices(len(dataset))))
            feats, labels = extract_features(enc.model(device), share, enc.layer, device, enc.cfg.eval.batch_size,
                                             enc.cfg.train.workers, f"{split} features",
                                             self.progress and distributed.context().is_main)
            feats, labels = distributed.gather_features(feats, labels)
            writes = self._tmp is not None or distributed.context().is_main
            dim = feats.shape[1]
            crc = self._write_entry(path, feats) if writes else None
        else:
            writes, writer = True, NpyWriter(path, len(dataset), self.dtype)
            try:
                _, labels = extract_features(enc.model(device), dataset, enc.layer, device, enc.cfg.eval.batch_size,
                                             enc.cfg.train.workers, f"{split} features", self.progress, writer)
                writer.close()
            except BaseException:
                writer.abort()
                raise
            dim, crc = writer.dim, writer.crc
        if writes:
            buf = io.BytesIO()
            np.save(buf, labels.numpy())
            write_locked(labels_path, buf.getvalue())
            meta = {"weights": enc.weights_id, "checkpoint": str(enc.ckpt) if enc.ckpt else None, "kind": enc.kind,
                    "seed": enc.seed, "split": split, "layer": enc.layer, "data": dataclasses.asdict(enc.cfg.data),
                    "dtype": self.dtype, "shape": [len(dataset), dim], "version": FEATURE_VERSION,
                    "crc32": crc, "labels_crc32": zlib.crc32(buf.getvalue())}
            write_locked(meta_path, (json.dumps(meta, indent=2) + "\n").encode())
        distributed.barrier()
        self.extracted.append(path)
        return CachedFeatures(NpyReader(path), labels.numpy(), path, hit=False, seconds=time.time() - t0)

    def _write_entry(self, path: Path, feats: torch.Tensor) -> int:
        writer = NpyWriter(path, len(feats), self.dtype)
        try:
            writer.write(feats)
            writer.close()
        except BaseException:
            writer.abort()
            raise
        return writer.crc
