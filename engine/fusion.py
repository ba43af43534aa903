"""Descriptors: what one row of the evaluation table ranks by.

A :class:`Descriptor` is one encoder's features, or several encoders' features fused into one
vector (:mod:`utils.fusion`: each part L2-normalised, then a weighted concatenation, or the
equivalent of a weighted sum of similarities). The paper's dual branch is a CNN and a TCN
fused this way; so is rotation + deformation.

On the command line a part is ``PATH[:LAYER][@WEIGHT]``, e.g.
``experiments/cnn_rotation/best.pt:fc_block@1`` or ``experiments/tcn_rotation/best.pt@0.5``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from config import ConfigError
from engine.features import CachedFeatures, Encoder, FeatureCache
from utils.feature_store import FeatureSource
from utils.fusion import FUSION_MODES, FusedSource, fusion_scales

_SPEC = re.compile(r"^(?P<path>.+?)(?::(?P<layer>[A-Za-z_][A-Za-z0-9_.]*))?(?:@(?P<weight>[^@:]+))?$")


@dataclass
class PartSpec:
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


def fused_name(parts: list[Encoder], weights: list[float], mode: str) -> str:
    names = " + ".join(p.cfg.name if p.kind == "checkpoint" else p.label for p in parts)
    ws = ":".join(f"{w:g}" for w in weights)
    return f"fused {names} ({mode} {ws})"


@dataclass
class DescriptorFeatures:
    """A descriptor's query and gallery features as sources, with their labels."""

    query: FeatureSource
    query_labels: np.ndarray
    gallery: FeatureSource
    gallery_labels: np.ndarray
    entries: list[CachedFeatures]

    @property
    def all_cached(self) -> bool:
        return all(e.hit for e in self.entries)


def descriptor_features(desc: Descriptor, cache: FeatureCache, device: torch.device) -> DescriptorFeatures:
    """Query and gallery features of every part (from the cache or extracted), fused when
    the descriptor fuses. The parts must have read the same sketches (same labels)."""
    qs, gs = [], []
    for enc in desc.parts:
        qs.append(cache.get(enc, "query", device))
        gs.append(cache.get(enc, "gallery", device))
    for split, got in (("query", qs), ("gallery", gs)):
        for other, enc in zip(got[1:], desc.parts[1:]):
            if not np.array_equal(other.labels, got[0].labels):
                raise ConfigError(
                    f"{desc.name}: {enc.label} has different {split} sketches than {desc.parts[0].label}; "
                    "fused encoders must be evaluated on the same retrieval set"
                )
    if desc.fused:
        q: FeatureSource = FusedSource([f.source for f in qs], desc.weights, desc.mode)
        g: FeatureSource = FusedSource([f.source for f in gs], desc.weights, desc.mode)
    else:
        q, g = qs[0].source, gs[0].source
    return DescriptorFeatures(q, qs[0].labels, g, gs[0].labels, qs + gs)
