"""Stage 1, encoders: a checkpoint (or a random initialisation) -> a network with named layers.

This is the one place that turns a checkpoint into an encoder. An :class:`Encoder` is a
network whose features are read out at one named layer (``models`` list them in
``feature_names``), and where its weights come from:

- :func:`load_encoder`: a trained checkpoint. The network is rebuilt from the config saved
  in the checkpoint (dotted-key overrides applied) and loaded from the checkpoint's
  ``model`` entry: the encoder and its task head, the part that sees sketches. Other entries
  (optimiser, RNG, history, and modules that belong to a training method rather than to
  the encoder, such as projection heads or a momentum target) are never read here.
- :func:`random_encoder`: the same architecture with fresh weights drawn from a seed (the
  random-init baseline). It is built lazily: when all its features are cached it is never
  built at all.

Each encoder has a ``weights_id`` (sha256 of the checkpoint file; for a random init a digest
of seed, architecture and torch version) that names its features in the cache, and a digest
of its weights and buffers taken when it was loaded, so that :meth:`Encoder.unchanged` can
prove afterwards that reading features did not train it (e.g. batch norm run in train mode).

A checkpoint of a dual model (a CNN and a TCN trained together, ``models.DualEncoder``,
data modality "paired") is read one branch at a time: the layer names the branch
(``raster.fc_block``, ``stroke.fc``; without a layer, the config's ``eval.feature``). The
encoder is then exactly that branch: the single-branch model its config names, loaded
with the checkpoint's ``raster.`` (or ``stroke.``) weights, its config the single-branch
config those weights would have had (modality raster or stroke, so that its features come
from that form of the query and gallery sketches). Everything after this stage sees one
:class:`Encoder` per part either way, so one checkpoint gives two parts of a fused row.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from config import ConfigError, ExperimentConfig, apply_overrides, from_dict
import models
from engine import build
from utils.checkpoint import CheckpointError, load_checkpoint
from utils.rng import seed_everything

__all__ = ["Encoder", "branch_config", "load_encoder", "random_encoder", "state_digest", "file_sha256"]

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
    branch: str | None = None  # "raster" / "stroke": the branch of a dual checkpoint read
    _model: torch.nn.Module | None = field(default=None, repr=False)
    _initial_digest: str | None = field(default=None, repr=False)

    @property
    def label(self) -> str:
        """How tables name this encoder."""
        if self.kind == "random":
            return f"random init ({self.cfg.model.name}, seed {self.seed})"
        where = f" [{self.branch}]" if self.branch else ""
        return f"{self.cfg.name}{where} (epoch {self.epoch})"

    @property
    def stem(self) -> str:
        """Short name for files: ``<experiment>-<checkpoint stem>`` or ``random-<arch>-seed<S>``."""
        if self.kind == "random":
            return f"random-{self.cfg.model.name}-seed{self.seed}"
        branch = f"-{self.branch}" if self.branch else ""
        return f"{self.cfg.name}{branch}-{self.ckpt.stem}"

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
    the model's default feature. Raises :class:`CheckpointError` or :class:`ConfigError`
    (one line naming the file) for a checkpoint that cannot be used."""
    path = Path(path)
    state = load_checkpoint(path, map_location="cpu")
    try:
        cfg = from_dict(apply_overrides(dict(state["config"]), dict(overrides or {})), where=f"{path} config")
    except ConfigError as err:
        raise CheckpointError(f"{path}: saved config is not valid here ({err})") from None
    num_outputs = int(state.get("num_outputs") or build.head_size(cfg))
    weights = state["model"]
    branch = None
    if cfg.data.modality == models.PAIRED:
        branch, cfg, layer = _branch_of(path, cfg, layer)
        prefix = f"{branch}."
        weights = {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}
    net = build.build_model(cfg, num_outputs)
    layer = build.feature_layer(cfg, net, layer)
    try:
        net.load_state_dict(weights)
    except RuntimeError as err:
        raise CheckpointError(f"{path}: weights do not fit model '{cfg.model.name}' ({str(err).splitlines()[0]})") from None
    return Encoder(cfg=cfg, layer=layer, num_outputs=num_outputs, kind="checkpoint", ckpt=path,
                   epoch=int(state["epoch"]), weights_id=file_sha256(path), home=path.parent / "features",
                   branch=branch, _model=net.eval(), _initial_digest=state_digest(weights))


def branch_config(cfg: ExperimentConfig, branch: str, layer: str | None = None) -> ExperimentConfig:
    """The single-branch config of one branch of a dual-model config: the same data (its
    modality ``raster`` or ``stroke``), the branch's model and parameters, the same head
    width, ``eval.feature`` = ``layer`` (a layer of the branch model)."""
    raw = cfg.to_dict()
    params = dict(raw["model"]["params"])
    model = {"name": params.get(branch, models.DEFAULT_MODELS[branch]),
             "num_classes": raw["model"]["num_classes"], "params": dict(params.get(f"{branch}_params") or {})}
    raw.update(branch="cnn" if branch == "raster" else "tcn", model=model)
    raw["data"]["modality"] = branch
    raw["eval"]["feature"] = layer
    return from_dict(raw, where=f"{cfg.name} ({branch} branch)")


def _branch_of(path: Path, cfg: ExperimentConfig, layer: str | None) -> tuple[str, ExperimentConfig, str]:
    """(branch, its single-branch config, its layer) for ``layer`` of a dual checkpoint."""
    layer = layer or cfg.eval.feature
    if not layer:
        raise ConfigError(f"{path}: a dual checkpoint holds two encoders; name one with the layer "
                          "(raster.<layer> or stroke.<layer>, e.g. --layer raster.fc_block)")
    try:
        branch, sub = models.split_feature(layer)
    except ValueError:
        raise ConfigError(f"{path}: layer '{layer}' names no branch of this dual checkpoint; use "
                          f"raster.<layer> or stroke.<layer> (e.g. raster.fc_block, stroke.fc)") from None
    return branch, branch_config(cfg, branch, sub), sub


def random_encoder(like: Encoder, seed: int) -> Encoder:
    """The architecture of ``like`` with fresh weights drawn with ``seed``."""
    recipe = {"random": int(seed), "model": dataclasses.asdict(like.cfg.model), "num_outputs": like.num_outputs,
              "torch": torch.__version__}
    wid = hashlib.sha256(json.dumps(recipe, sort_keys=True, default=str).encode()).hexdigest()
    return Encoder(cfg=like.cfg, layer=like.layer, num_outputs=like.num_outputs, kind="random", seed=int(seed),
                   weights_id=wid, home=like.home)
