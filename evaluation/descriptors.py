"""Stage 3, descriptors: what one row of the table ranks by (one encoder, or several fused).

A :class:`Descriptor` names the encoders of a row and how their features combine; the row
plan (:mod:`evaluation.run`) builds them, and :func:`combine` turns the parts' features into
the row's query and gallery feature sources. On the command line a part is
``PATH[:LAYER][@WEIGHT]`` (:func:`parse_part`), e.g. ``experiments/cnn_rotation/best.pt:fc_block@1``.

Fusion (the paper's dual branch and Sigma node; also rotation + deformation). Each part is
L2-normalised per sketch, multiplied by a scale, and the parts are concatenated:

    fused = [s_1 * f_1 / |f_1|, s_2 * f_2 / |f_2|, ...]

Two ways to read the weights w_i, both exact (:data:`FUSION_MODES`):

- ``concat`` (default): s_i = w_i, a weighted concatenation. Every part has norm s_i, so the
  cosine similarity of two fused descriptors is ``sum_i w_i**2 cos_i / sum_i w_i**2``: a
  weight acts *squared* on the similarity (weights 2:1 make the first encoder count 4:1).
- ``score``: s_i = sqrt(w_i), which makes the cosine of the fused descriptors
  ``sum_i w_i cos_i / sum_i w_i``, a weighted sum of the encoders' cosine similarities
  (weights 2:1 count 2:1). Squared euclidean distance adds up over concatenated parts, so
  the same holds for the euclidean metric: fused -distance = sum_i w_i * (-distance_i) on
  the normalised parts. Ranking by the fused descriptor is therefore ranking by the
  weighted sum of similarities, without ever holding per-encoder score matrices.

Fusing copies of one encoder gives back that encoder's ranking (its normalised features,
repeated); equal weights in either mode are the unweighted average of cosines; a weight of 0
drops a part. The fused rows are computed block by block as the metrics read them
(:class:`FusedSource`), never stored.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from config import ConfigError
from evaluation.feature_matrix import FeatureSource, as_source

if TYPE_CHECKING:  # types only: this stage never calls the ones before it
    from evaluation.encoders import Encoder
    from evaluation.features import CachedFeatures

FUSION_MODES = ("concat", "score")

_SPEC = re.compile(r"^(?P<path>.+?)(?::(?P<layer>[A-Za-z_][A-Za-z0-9_.]*))?(?:@(?P<weight>[^@:]+))?$")


# ---------------------------------------------------------------------------- parts
@dataclass
class PartSpec:
    """One part of a fused row as the command line gives it."""

    path: Path
    layer: str | None = None
    weight: float = 1.0


def parse_part(spec: str) -> PartSpec:
    """``PATH[:LAYER][@WEIGHT]`` -> :class:`PartSpec` (weight 1 when not given)."""
    m = _SPEC.match(spec.strip())
    if not m or not m.group("path"):
        raise ConfigError(f"cannot read '{spec}' as PATH[:LAYER][@WEIGHT]")
    weight = 1.0
    if m.group("weight") is not None:
        try:
            weight = float(m.group("weight"))
        except ValueError:
            raise ConfigError(f"'{spec}': weight '{m.group('weight')}' is not a number") from None
        if not math.isfinite(weight) or weight < 0:
            raise ConfigError(f"'{spec}': weight must be a finite number >= 0")
    return PartSpec(Path(m.group("path")), m.group("layer"), weight)


# ---------------------------------------------------------------------------- fusion maths
def fusion_scales(weights: Sequence[float], mode: str = "concat") -> list[float]:
    """Per-part multipliers for ``weights`` (see the module docstring)."""
    if mode not in FUSION_MODES:
        raise ValueError(f"fusion mode must be one of {', '.join(FUSION_MODES)}, got '{mode}'")
    w = [float(x) for x in weights]
    if not w:
        raise ValueError("fusion needs at least one part")
    if any(not math.isfinite(x) or x < 0 for x in w) or not any(x > 0 for x in w):
        raise ValueError(f"fusion weights must be finite, >= 0 and not all 0, got {w}")
    return w if mode == "concat" else [math.sqrt(x) for x in w]


def fuse(features: Sequence[torch.Tensor], weights: Sequence[float] | None = None, mode: str = "concat") -> torch.Tensor:
    """Fused descriptors (N, sum of D_i) of parts (N, D_i); equal weights by default."""
    if len({len(f) for f in features}) > 1:
        raise ValueError(f"parts differ in length: {[len(f) for f in features]}")
    scales = fusion_scales(weights if weights is not None else [1.0] * len(features), mode)
    if len(scales) != len(features):
        raise ValueError(f"{len(features)} parts but {len(scales)} weights")
    return torch.cat([s * F.normalize(f.float(), dim=1) for f, s in zip(features, scales)], dim=1)


class FusedSource:
    """A fused descriptor as a feature source: reads the same rows of every part and fuses them."""

    def __init__(self, parts: Sequence[torch.Tensor | FeatureSource], weights: Sequence[float] | None = None,
                 mode: str = "concat") -> None:
        self.parts = [as_source(p) for p in parts]
        if len({len(p) for p in self.parts}) > 1:
            raise ValueError(f"parts differ in length: {[len(p) for p in self.parts]}")
        self.scales = fusion_scales(weights if weights is not None else [1.0] * len(self.parts), mode)
        if len(self.scales) != len(self.parts):
            raise ValueError(f"{len(self.parts)} parts but {len(self.scales)} weights")

    def __len__(self) -> int:
        return len(self.parts[0])

    @property
    def dim(self) -> int:
        return sum(p.dim for p in self.parts)

    def read(self, start: int, stop: int) -> torch.Tensor:
        return self._fuse([p.read(start, stop) for p in self.parts])

    def take(self, rows: torch.Tensor) -> torch.Tensor:
        return self._fuse([p.take(rows) for p in self.parts])

    def _fuse(self, parts: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat([s * F.normalize(x, dim=1) for x, s in zip(parts, self.scales)], dim=1)


# ---------------------------------------------------------------------------- rows
@dataclass
class Descriptor:
    """One table row: the encoders it reads and how their features are combined."""

    name: str
    kind: str  # "pretrained", "random", "baseline", "fused"
    parts: list[Encoder]
    weights: list[float] = field(default_factory=lambda: [1.0])
    mode: str = "concat"
    fused: bool = False

    def __post_init__(self) -> None:
        if self.mode not in FUSION_MODES:
            raise ConfigError(f"fusion mode must be one of {', '.join(FUSION_MODES)}, got '{self.mode}'")
        if len(self.weights) != len(self.parts):
            raise ConfigError(f"{self.name}: {len(self.parts)} parts but {len(self.weights)} weights")
        if self.fused:
            try:
                fusion_scales(self.weights, self.mode)
            except ValueError as err:
                raise ConfigError(f"{self.name}: {err}") from None

    @property
    def layer(self) -> str:
        return "+".join(p.layer for p in self.parts)

    def describe_parts(self) -> list[dict]:
        return [{"model": p.label, "checkpoint": str(p.ckpt) if p.ckpt else None, "layer": p.layer, "weight": w}
                for p, w in zip(self.parts, self.weights)]

    def identity(self) -> dict:
        """What decides this row's numbers: every part's weights and layer, weights, mode."""
        return {"kind": self.kind, "mode": self.mode if self.fused else None,
                "parts": [{"weights": p.weights_id, "layer": p.layer, "weight": w}
                          for p, w in zip(self.parts, self.weights)]}


def fused_name(parts: list[Encoder], weights: list[float], mode: str) -> str:
    def name(p: Encoder) -> str:  # a dual checkpoint's branch is named after the experiment
        branch = getattr(p, "branch", None)
        return p.cfg.name + (f" [{branch}]" if branch else "") if p.kind == "checkpoint" else p.label

    names = " + ".join(name(p) for p in parts)
    ws = ":".join(f"{w:g}" for w in weights)
    return f"fused {names} ({mode} {ws})"


@dataclass
class DescriptorFeatures:
    """A row's query and gallery features as sources, with their labels, and the cache
    entries they were read from."""

    query: FeatureSource
    query_labels: np.ndarray
    gallery: FeatureSource
    gallery_labels: np.ndarray
    entries: list[CachedFeatures]

    @property
    def all_cached(self) -> bool:
        return all(e.hit for e in self.entries)


def combine(desc: Descriptor, query: Sequence[CachedFeatures], gallery: Sequence[CachedFeatures]) -> DescriptorFeatures:
    """The row's features from each part's query and gallery features (in part order): the
    part itself, or the parts fused. The parts must have read the same sketches (same labels)."""
    for split, got in (("query", query), ("gallery", gallery)):
        for other, enc in zip(got[1:], desc.parts[1:]):
            if not np.array_equal(other.labels, got[0].labels):
                raise ConfigError(
                    f"{desc.name}: {enc.label} has different {split} sketches than {desc.parts[0].label}; "
                    "fused encoders must be evaluated on the same retrieval set"
                )
    if desc.fused:
        q: FeatureSource = FusedSource([f.source for f in query], desc.weights, desc.mode)
        g: FeatureSource = FusedSource([f.source for f in gallery], desc.weights, desc.mode)
    else:
        q, g = query[0].source, gallery[0].source
    return DescriptorFeatures(q, query[0].labels, g, gallery[0].labels, list(query) + list(gallery))
