"""Fusing several encoders' features into one descriptor (the paper's dual branch, Sigma node).

Each part is L2-normalised per sketch, multiplied by a scale and the parts are concatenated:

    fused = [s_1 * f_1 / |f_1|, s_2 * f_2 / |f_2|, ...]

Two ways to read the weights w_i, both exact:

- ``mode="concat"`` (default): s_i = w_i, a weighted concatenation. Because every part has
  norm s_i, the cosine similarity of two fused descriptors is
  ``sum_i w_i**2 cos_i / sum_i w_i**2``: a weight acts *squared* on the similarity
  (weights 2:1 make the first encoder count 4:1).
- ``mode="score"``: s_i = sqrt(w_i), which makes the cosine of the fused descriptors
  ``sum_i w_i cos_i / sum_i w_i``: a weighted sum of the encoders' cosine similarities
  (weights 2:1 count 2:1). Squared euclidean distance adds up over concatenated parts, so
  the same holds for the euclidean metric: fused -distance = sum_i w_i * (-distance_i) on
  the normalised parts. Ranking by the fused descriptor is therefore ranking by the
  weighted sum of similarities, without ever holding per-encoder score matrices.

Fusing copies of one encoder gives back that encoder's ranking (its normalised features,
repeated); equal weights in either mode are the unweighted average of cosines.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

from utils.feature_store import FeatureSource, as_source

FUSION_MODES = ("concat", "score")


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
