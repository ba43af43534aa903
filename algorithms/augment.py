"""Random sketch augmentations for the generic self-supervised methods, batched on the device.

Every random number comes from a :class:`~algorithms.base.Draws` (a seeded
``torch.Generator`` whose state the trainer checkpoints, drawn for the global batch under
torchrun), so a run is reproducible from its seed and resumes exactly. The parameters of a
whole batch are drawn first (a few numbers per sketch) and then applied as a handful of
tensor operations, on whatever device the batch is on.

Rasters (:class:`RasterAugment`, on (B, C, H, W) in [0, 1], ink bright on 0):

1. one affine map per sketch, sampled with one ``grid_sample`` (bilinear, background 0
   outside the image): a random resized crop (area fraction ``crop_scale``, aspect ratio
   log-uniform in ``crop_ratio``; a side longer than the image is clamped to it), then a
   small affine (rotation, shear, isotropic ``scale``, ``shift`` as a fraction of the side)
   and a horizontal flip with probability ``flip``;
2. with probability ``erase``, one rectangle (area fraction ``erase_area``, aspect ratio
   log-uniform in ``erase_ratio``) set to background (random erasing of a block).

Strokes (:class:`StrokeAugment`, on (B, L, 4) rows [x, y, p1, p2]):

1. drops: each stroke is dropped with probability ``drop_stroke`` (never every stroke of
   a sketch), each point that is not a stroke's last point with probability
   ``drop_point``; the kept rows move up in order and the freed rows become padding. Pen
   states stay valid: every kept stroke still ends with its pen-up row;
2. geometry: the coordinates of each sketch turn about the centre of the unit square
   (``rotation``), shear (``shear``) and scale per axis (``scale``), get Gaussian point
   jitter (``jitter``, unit-square units), and are re-normalised: the bounding box is
   re-centred at (0.5, 0.5) and scaled so its longer side is as long as the input's was
   (capped at 1), so an augmented sketch has the size the encoder sees at evaluation and
   stays inside the unit square.

Padding rows stay exactly zero. A stage whose settings are all identity is skipped, so the
identity setting returns the input itself (``RasterAugment.identity()`` /
``StrokeAugment.identity()``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import Draws
from .strokes import check_strokes, valid_rows


def _check_range(owner: str, name: str, value: Any, low: float, high: float, positive: bool = False) -> tuple:
    if (not isinstance(value, (list, tuple)) or len(value) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
        raise ValueError(f"{owner}: {name} must be a pair [low, high] of numbers, got {value!r}")
    lo, hi = float(value[0]), float(value[1])
    if not low <= lo <= hi <= high or (positive and lo <= 0):
        raise ValueError(f"{owner}: {name} must satisfy {low} {'<' if positive else '<='} low <= high <= {high}, "
                         f"got {value!r}")
    return lo, hi


def _check_number(owner: str, name: str, value: Any, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ValueError(f"{owner}: {name} must be a number in [{low}, {high}], got {value!r}")
    return float(value)


def _from_params(cls, owner: str, params: Mapping[str, Any] | None):
    params = dict(params or {})
    known = [f.name for f in dataclasses.fields(cls)]
    for key in params:
        if key not in known:
            raise ValueError(f"{owner}: unknown augmentation setting {key!r} (known: {known})")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in params.items()})


def _log_uniform(draws: Draws, n: int, low: float, high: float, device: torch.device) -> Tensor:
    u = draws.uniform(n).to(device)
    return torch.exp(math.log(low) + u * (math.log(high) - math.log(low)))


@dataclass(frozen=True)
class RasterAugment:
    """Random resized crop + small affine + flip + optional block erasing (module docstring).

    Defaults: SimCLR's crop and flip (aspect ratio 3/4-4/3, flip 0.5) with a larger minimum
    area (0.35 instead of 0.08: a crop of 8% of a line drawing is mostly background), a small
    affine in place of SimCLR's colour distortion and blur (which a black-and-white line
    drawing has no use for), erasing off.
    """

    crop_scale: tuple = (0.35, 1.0)
    crop_ratio: tuple = (3 / 4, 4 / 3)
    rotation: float = 15.0  # degrees, uniform in [-rotation, rotation]
    shear: float = 10.0  # degrees, uniform in [-shear, shear]
    scale: tuple = (0.9, 1.1)  # isotropic zoom of the affine step
    shift: float = 0.05  # fraction of the side, uniform in [-shift, shift] per axis
    flip: float = 0.5  # probability of a horizontal flip
    erase: float = 0.0  # probability of erasing one block
    erase_area: tuple = (0.02, 0.15)  # fraction of the image
    erase_ratio: tuple = (0.3, 3.3)  # block height / width, log-uniform

    def __post_init__(self) -> None:
        o = "raster augmentation"
        object.__setattr__(self, "crop_scale", _check_range(o, "crop_scale", self.crop_scale, 0.0, 1.0, positive=True))
        object.__setattr__(self, "crop_ratio", _check_range(o, "crop_ratio", self.crop_ratio, 0.0, math.inf, positive=True))
        object.__setattr__(self, "rotation", _check_number(o, "rotation", self.rotation, 0.0, 180.0))
        object.__setattr__(self, "shear", _check_number(o, "shear", self.shear, 0.0, 60.0))
        object.__setattr__(self, "scale", _check_range(o, "scale", self.scale, 0.0, math.inf, positive=True))
        object.__setattr__(self, "shift", _check_number(o, "shift", self.shift, 0.0, 1.0))
        object.__setattr__(self, "flip", _check_number(o, "flip", self.flip, 0.0, 1.0))
        object.__setattr__(self, "erase", _check_number(o, "erase", self.erase, 0.0, 1.0))
        object.__setattr__(self, "erase_area", _check_range(o, "erase_area", self.erase_area, 0.0, 1.0, positive=True))
        object.__setattr__(self, "erase_ratio", _check_range(o, "erase_ratio", self.erase_ratio, 0.0, math.inf,
                                                             positive=True))

    @classmethod
    def from_params(cls, params: Mapping[str, Any] | None) -> "RasterAugment":
        """Defaults overridden by ``params``; an unknown key or bad value is a ValueError."""
        return _from_params(cls, "raster augmentation", params)

    @classmethod
    def identity(cls) -> "RasterAugment":
        """Settings under which the augmentation returns its input."""
        return cls(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), rotation=0.0, shear=0.0, scale=(1.0, 1.0),
                   shift=0.0, flip=0.0, erase=0.0)

    @property
    def geometric_identity(self) -> bool:
        return (self.crop_scale == (1.0, 1.0) and self.crop_ratio == (1.0, 1.0) and self.rotation == 0
                and self.shear == 0 and self.scale == (1.0, 1.0) and self.shift == 0 and self.flip == 0)

    def describe(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    def __call__(self, x: Tensor, draws: Draws) -> Tensor:
        """Augment a raster batch.

        Args:
            x: (B, C, H, W) float in [0, 1].
            draws: the random numbers (parameters are drawn per sketch, in a fixed order).

        Returns:
            (B, C, H, W) new tensor in [0, 1] (``x`` itself under the identity settings).
        """
        if x.dim() != 4:
            raise ValueError(f"raster augmentation: expected (B, C, H, W), got {tuple(x.shape)}")
        out = x
        if not self.geometric_identity:
            out = self._geometric(out, draws)
        if self.erase > 0:
            out = self._erase(out, draws)
        return out

    def _theta(self, n: int, draws: Draws, device: torch.device) -> Tensor:
        """(n, 2, 3) maps from output to input coordinates (affine_grid's convention)."""
        area = draws.uniform(n, low=self.crop_scale[0], high=self.crop_scale[1]).to(device)
        ratio = _log_uniform(draws, n, *self.crop_ratio, device)
        w = torch.sqrt(area * ratio).clamp(max=1.0)  # crop width / image width
        h = torch.sqrt(area / ratio).clamp(max=1.0)
        cx = (draws.uniform(n).to(device) * 2 - 1) * (1 - w)  # crop centre in [-1, 1] coordinates
        cy = (draws.uniform(n).to(device) * 2 - 1) * (1 - h)
        angle = torch.deg2rad(draws.uniform(n, low=-self.rotation, high=self.rotation).to(device))
        shear = torch.tan(torch.deg2rad(draws.uniform(n, low=-self.shear, high=self.shear).to(device)))
        zoom = draws.uniform(n, low=self.scale[0], high=self.scale[1]).to(device)
        tx = draws.uniform(n, low=-self.shift, high=self.shift).to(device) * 2
        ty = draws.uniform(n, low=-self.shift, high=self.shift).to(device) * 2
        flip = torch.where(draws.uniform(n).to(device) < self.flip, -1.0, 1.0)
        cos, sin = torch.cos(angle), torch.sin(angle)
        # L = diag(flip, 1) @ R(angle) @ [[1, shear], [0, 1]] / zoom
        l00, l01 = flip * cos / zoom, flip * (cos * shear - sin) / zoom
        l10, l11 = sin / zoom, (sin * shear + cos) / zoom
        row0 = torch.stack([w * l00, w * l01, w * tx + cx], dim=1)
        row1 = torch.stack([h * l10, h * l11, h * ty + cy], dim=1)
        return torch.stack([row0, row1], dim=1)

    def _geometric(self, x: Tensor, draws: Draws) -> Tensor:
        theta = self._theta(x.shape[0], draws, x.device).to(x.dtype)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    def _erase(self, x: Tensor, draws: Draws) -> Tensor:
        n, _, height, width = x.shape
        dev = x.device
        on = draws.uniform(n).to(dev) < self.erase
        area = draws.uniform(n, low=self.erase_area[0], high=self.erase_area[1]).to(dev)
        ratio = _log_uniform(draws, n, *self.erase_ratio, dev)
        bh = torch.sqrt(area * ratio).mul(height).round().clamp(1, height)
        bw = torch.sqrt(area / ratio).mul(width).round().clamp(1, width)
        top = (draws.uniform(n).to(dev) * (height - bh + 1)).floor()
        left = (draws.uniform(n).to(dev) * (width - bw + 1)).floor()
        rows = torch.arange(height, device=dev).view(1, height, 1)
        cols = torch.arange(width, device=dev).view(1, 1, width)
        inside = ((rows >= top.view(n, 1, 1)) & (rows < (top + bh).view(n, 1, 1))
                  & (cols >= left.view(n, 1, 1)) & (cols < (left + bw).view(n, 1, 1)) & on.view(n, 1, 1))
        return x.masked_fill(inside.unsqueeze(1), 0.0)


@dataclass(frozen=True)
class StrokeAugment:
    """Stroke and point drops + random affine + point jitter + re-normalisation (module docstring).

    Defaults after sketch-rnn's data augmentation (random scale of each axis by up to 15%,
    each point dropped with probability 0.1), plus a small rotation and shear (the raster
    branch's affine, in coordinates), 1% point jitter and whole-stroke drops with
    probability 0.1.
    """

    rotation: float = 15.0  # degrees
    shear: float = 10.0  # degrees
    scale: tuple = (0.85, 1.15)  # per axis
    jitter: float = 0.01  # standard deviation, unit-square units
    drop_stroke: float = 0.1
    drop_point: float = 0.1

    def __post_init__(self) -> None:
        o = "stroke augmentation"
        object.__setattr__(self, "rotation", _check_number(o, "rotation", self.rotation, 0.0, 180.0))
        object.__setattr__(self, "shear", _check_number(o, "shear", self.shear, 0.0, 60.0))
        object.__setattr__(self, "scale", _check_range(o, "scale", self.scale, 0.0, math.inf, positive=True))
        object.__setattr__(self, "jitter", _check_number(o, "jitter", self.jitter, 0.0, 1.0))
        object.__setattr__(self, "drop_stroke", _check_number(o, "drop_stroke", self.drop_stroke, 0.0, 1.0))
        object.__setattr__(self, "drop_point", _check_number(o, "drop_point", self.drop_point, 0.0, 1.0))

    @classmethod
    def from_params(cls, params: Mapping[str, Any] | None) -> "StrokeAugment":
        return _from_params(cls, "stroke augmentation", params)

    @classmethod
    def identity(cls) -> "StrokeAugment":
        return cls(rotation=0.0, shear=0.0, scale=(1.0, 1.0), jitter=0.0, drop_stroke=0.0, drop_point=0.0)

    @property
    def geometric_identity(self) -> bool:
        return self.rotation == 0 and self.shear == 0 and self.scale == (1.0, 1.0) and self.jitter == 0

    def describe(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    def __call__(self, x: Tensor, draws: Draws) -> Tensor:
        """Augment a stroke batch.

        Args:
            x: (B, L, 4) stroke batch (valid rows first, then all-zero padding).
            draws: the random numbers.

        Returns:
            (B, L, 4) new tensor (``x`` itself under the identity settings): valid rows
            first, each with exactly one pen state, every sketch that had a point ending
            with a pen-up row, padding rows exactly zero, coordinates in [0, 1].
        """
        check_strokes(x)
        out = x
        if self.drop_stroke > 0 or self.drop_point > 0:
            out = self._drop(out, draws)
        if not self.geometric_identity:
            out = self._geometric(out, draws)
        return out

    def _drop(self, x: Tensor, draws: Draws) -> Tensor:
        n, length, _ = x.shape
        dev = x.device
        valid = valid_rows(x)
        ends = x[..., 3] > 0  # the last point of each stroke (pen lifted after it)
        stroke = torch.cumsum(ends.long(), dim=1) - ends.long()  # (B, L) stroke index of each row
        u_stroke = draws.uniform(n, length).to(dev)  # one number per possible stroke
        u_point = draws.uniform(n, length).to(dev)
        drop = u_stroke.gather(1, stroke.clamp(max=length - 1)) < self.drop_stroke
        every = ~(valid & ~drop).any(dim=1, keepdim=True)  # would drop every stroke: drop none
        drop = drop & ~every
        drop = drop | ((u_point < self.drop_point) & ~ends)
        keep = valid & ~drop
        # Kept rows first, in order (a stable sort of "dropped" flags), padding after.
        order = torch.sort((~keep).to(torch.int8), dim=1, stable=True).indices
        moved = x.gather(1, order.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        kept = keep.gather(1, order).unsqueeze(-1)
        return torch.where(kept, moved, torch.zeros((), dtype=x.dtype, device=dev))

    def _geometric(self, x: Tensor, draws: Draws) -> Tensor:
        n, length, _ = x.shape
        dev, dtype = x.device, x.dtype
        valid = valid_rows(x)
        angle = torch.deg2rad(draws.uniform(n, low=-self.rotation, high=self.rotation).to(dev))
        shear = torch.tan(torch.deg2rad(draws.uniform(n, low=-self.shear, high=self.shear).to(dev)))
        sx = draws.uniform(n, low=self.scale[0], high=self.scale[1]).to(dev)
        sy = draws.uniform(n, low=self.scale[0], high=self.scale[1]).to(dev)
        noise = draws.normal(n, length, 2).to(dev) * self.jitter
        cos, sin = torch.cos(angle), torch.sin(angle)
        # A = R(angle) @ [[1, shear], [0, 1]] @ diag(sx, sy), about the centre of the square
        a = torch.stack([torch.stack([cos * sx, (cos * shear - sin) * sy], -1),
                         torch.stack([sin * sx, (sin * shear + cos) * sy], -1)], dim=1)  # (B, 2, 2)
        xy = x[..., :2].float() - 0.5
        moved = torch.einsum("bij,blj->bli", a.float(), xy) + noise.float()
        # Re-normalise: centre the box, longest side as long as the input's (at most 1).
        big = torch.finfo(torch.float32).max
        mask = valid.unsqueeze(-1)

        def extent(c: Tensor) -> tuple[Tensor, Tensor]:
            lo = torch.where(mask, c, torch.full_like(c, big)).amin(dim=1, keepdim=True)
            hi = torch.where(mask, c, torch.full_like(c, -big)).amax(dim=1, keepdim=True)
            return lo, hi

        lo0, hi0 = extent(xy)
        lo1, hi1 = extent(moved)
        before = (hi0 - lo0).amax(dim=2, keepdim=True).clamp(max=1.0)  # (B, 1, 1)
        after = (hi1 - lo1).amax(dim=2, keepdim=True)
        factor = torch.where(after > 1e-12, before / after.clamp(min=1e-12), torch.ones_like(after))
        out_xy = (moved - (lo1 + hi1) / 2) * factor + 0.5
        out_xy = out_xy.clamp(0.0, 1.0)  # rounding only: the box fits by construction
        zero = torch.zeros((), dtype=dtype, device=dev)
        coords = torch.where(mask, out_xy.to(dtype), zero)
        return torch.cat([coords, x[..., 2:]], dim=-1)
