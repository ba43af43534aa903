"""Encoders and their features: checkpoint -> model -> features of a split, cached on disk.

An :class:`Encoder` is one network whose features are read out: a trained checkpoint
(rebuilt from the config saved in it) or a randomly initialised network of the same
architecture. :class:`FeatureCache` extracts the features of a split from one named layer
(eval mode, no gradients, batched, CPU or CUDA) into an ``.npy`` file, block by block, and
reuses it on the next evaluation. A cache entry is named

    <cache dir>/<checkpoint stem>-<split>-<layer>-<digest>.npy   (+ .labels.npy, .json)

where the digest covers the checkpoint's bytes (sha256; for a random init: seed,
architecture and torch version), the split, the layer, the data config (after overrides),
the storage dtype and :data:`FEATURE_VERSION`. The three files are each written to a
temporary name and renamed; the ``.json`` comes last and marks the entry complete, so an
interrupted extraction never leaves an entry that loads.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from config import ConfigError, ExperimentConfig, apply_overrides, from_dict
from data.store import read_meta
from engine import build, distributed
from utils.atomic import atomic_write, atomic_write_text
from utils.checkpoint import CheckpointError, load_checkpoint
from utils.feature_store import STORAGE_DTYPES, NpyReader, NpyWriter
from utils.rng import seed_everything

#: Bump when the meaning of extracted features changes, to invalidate old cache entries.
FEATURE_VERSION = 1


# ---------------------------------------------------------------------------- hashing
_SHA_MEMO: dict[tuple, str] = {}


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes (memoised per path, size and modification time)."""
    path = Path(path)
    st = path.stat()
    memo = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if memo not in _SHA_MEMO:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for piece in iter(lambda: fh.read(1 << 22), b""):
                h.update(piece)
        _SHA_MEMO[memo] = h.hexdigest()
    return _SHA_MEMO[memo]


def state_digest(state: dict) -> str:
    """sha256 over every tensor of a state dict (names, dtypes, shapes and values)."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name]
        if not isinstance(t, torch.Tensor):
            h.update(f"{name}={t!r};".encode())
            continue
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _digest(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


# ---------------------------------------------------------------------------- encoders
@dataclass
class Encoder:
    """A network whose features are read out, and where its weights come from."""

    cfg: ExperimentConfig  # the config used (after overrides)
    layer: str
    num_outputs: int
    kind: str  # "checkpoint" or "random"
    ckpt: Path | None = None
    epoch: int | None = None
    seed: int | None = None
    weights_id: str = ""  # sha256 of the checkpoint file, or a digest of the random init
    home: Path | None = None  # default folder of its feature cache
    _model: torch.nn.Module | None = field(default=None, repr=False)
    _initial_digest: str | None = field(default=None, repr=False)

    @property
    def label(self) -> str:
        """How tables name this encoder."""
        if self.kind == "random":
            return f"random init ({self.cfg.model.name}, seed {self.seed})"
        return f"{self.cfg.name} (epoch {self.epoch})"

    @property
    def stem(self) -> str:
        if self.kind == "random":
            return f"random-{self.cfg.model.name}-seed{self.seed}"
        return f"{self.cfg.name}-{self.ckpt.stem}"

    def model(self, device: torch.device) -> torch.nn.Module:
        """The network in eval mode on ``device`` (a random init is built on first use)."""
        if self._model is None:
            seed_everything(int(self.seed))
            self._model = build.build_model(self.cfg, self.num_outputs)
            self._initial_digest = state_digest(self._model.state_dict())
        return self._model.to(device).eval()

    def unchanged(self) -> bool:
        """True when the network's weights and buffers equal the checkpoint's (or, for a
        random init, those it was built with): reading features did not train it."""
        if self._model is None:
            return True  # a random init never built: every feature came from the cache
        return state_digest(self._model.state_dict()) == self._initial_digest


def load_encoder(path: str | os.PathLike, overrides: dict | None = None, layer: str | None = None) -> Encoder:
    """An encoder from a checkpoint; its config is the one saved in the checkpoint, with
    dotted-key ``overrides`` applied. ``layer`` defaults to the config's eval.feature, else
    the model's default feature."""
    path = Path(path)
    state = load_checkpoint(path, map_location="cpu")
    try:
        cfg = from_dict(apply_overrides(dict(state["config"]), dict(overrides or {})), where=f"{path} config")
    except ConfigError as err:
        raise CheckpointError(f"{path}: saved config is not valid here ({err})") from None
    num_outputs = int(state.get("num_outputs") or build.head_size(cfg))
    net = build.build_model(cfg, num_outputs)
    layer = build.feature_layer(cfg, net, layer)
    try:
        net.load_state_dict(state["model"])
    except RuntimeError as err:
        raise CheckpointError(f"{path}: weights do not fit model '{cfg.model.name}' ({str(err).splitlines()[0]})") from None
    return Encoder(cfg=cfg, layer=layer, num_outputs=num_outputs, kind="checkpoint", ckpt=path,
                   epoch=int(state["epoch"]), weights_id=file_sha256(path), home=path.parent / "features",
                   _model=net.eval(),
                   _initial_digest=state_digest(state["model"]))


def random_encoder(like: Encoder, seed: int) -> Encoder:
    """The architecture of ``like`` with fresh weights drawn with ``seed``."""
    wid = _digest({"random": int(seed), "model": dataclasses.asdict(like.cfg.model),
                   "num_outputs": like.num_outputs, "torch": torch.__version__})
    return Encoder(cfg=like.cfg, layer=like.layer, num_outputs=like.num_outputs, kind="random", seed=int(seed),
                   weights_id=wid, home=like.home)


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
                                         pin_memory=device.type == "cuda")
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
    """Features of one split on disk, read in blocks."""

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

    def lookup(self, enc: Encoder, split: str) -> CachedFeatures | None:
        path = self.entry(enc, split)
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
            if writes:
                self._write_entry(path, feats, labels)
        else:
            writes, writer = True, NpyWriter(path, len(dataset), self.dtype)
            try:
                _, labels = extract_features(enc.model(device), dataset, enc.layer, device, enc.cfg.eval.batch_size,
                                             enc.cfg.train.workers, f"{split} features", self.progress, writer)
                writer.close()
            except BaseException:
                writer.abort()
                raise
            dim = writer.dim
        if writes:
            atomic_write(labels_path, lambda fh: np.save(fh, labels.numpy()))
            meta = {"weights": enc.weights_id, "checkpoint": str(enc.ckpt) if enc.ckpt else None, "kind": enc.kind,
                    "seed": enc.seed, "split": split, "layer": enc.layer, "data": dataclasses.asdict(enc.cfg.data),
                    "dtype": self.dtype, "shape": [len(dataset), dim], "version": FEATURE_VERSION}
            atomic_write_text(meta_path, json.dumps(meta, indent=2) + "\n")
        distributed.barrier()
        self.extracted.append(path)
        return CachedFeatures(NpyReader(path), labels.numpy(), path, hit=False, seconds=time.time() - t0)

    def _write_entry(self, path: Path, feats: torch.Tensor, labels: torch.Tensor) -> None:
        writer = NpyWriter(path, len(labels), self.dtype)
        try:
            writer.write(feats)
            writer.close()
        except BaseException:
            writer.abort()
            raise
