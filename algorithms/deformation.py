"""Deformation prediction (2-way): is this sketch as drawn (0) or deformed (1)?

Raster rule (released code, per column; batched here as tensor ops): with W columns,
source column i goes to destination column floor(f(i / (W - 1)) * (W - 1)), clamped to
[0, W - 1]; sources landing on one destination merge by max; a destination no source
reaches copies the nearest reached column to its left (column 0 is always reached since
f(0) = 0). Then the same along rows with the y warp. Identity axes are skipped.

Differences from the released code, on purpose:

- merge by max instead of bitwise OR (the same for binary bright-ink images; max keeps
  ink for grey levels too, OR does not);
- every channel is warped; the released deformed copy was channel 0 repeated three
  times while the undeformed copy kept its channels;
- strokes: both views are re-centred and rescaled the same way (the released code
  normalised only the deformed copy, a position/size shortcut), a zero-extent sketch
  does not divide by zero, and one (lam, a, b) meaning is used in both branches unless
  ``stroke_argument_order="released"`` asks for the released stroke map (which folds).
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from .base import PretextAlgorithm, new_views_like, view_targets
from .strokes import interleave, normalize_planar, normalize_strokes, valid_rows, valid_weights, with_coordinates
from .warps import DEFORMATION_MODULES, IDENTITY, AxisWarp, DeformationModule

STROKE_ARGUMENT_ORDERS: tuple[str, ...] = ("lam_a_b", "released")
ERASE_SIDES: tuple[str, ...] = ("top", "right", "bottom", "left")


# --------------------------------------------------------------------------- raster
def destination_indices(n: int, warp: AxisWarp) -> np.ndarray:
    """Destination index of each of n source positions along one axis.

    dest[i] = floor(f(i / (n - 1)) * (n - 1)) clamped to [0, n - 1], f in float64.

    Returns:
        (n,) int64 numpy array (``arange(n)`` for n == 1).
    """
    if n < 1:
        raise ValueError(f"axis length must be >= 1, got {n}")
    if n == 1:
        return np.zeros(1, dtype=np.int64)
    t = np.arange(n, dtype=np.float64) / (n - 1)
    dest = np.floor(warp.f(t) * (n - 1)).astype(np.int64)
    return np.clip(dest, 0, n - 1)


@lru_cache(maxsize=64)
def _axis_index_maps(n: int, warp: AxisWarp, device: torch.device) -> tuple[Tensor, Tensor]:
    """(dest, fill) long tensors (n,) on device for one axis length and warp.

    dest[i]: where source i goes. fill[j]: the reached destination that column j shows
    (j itself if reached, else the nearest reached index to its left), from a cummax of
    the reached indices.
    """
    dest = torch.from_numpy(destination_indices(n, warp))
    reached = torch.zeros(n, dtype=torch.bool)
    reached[dest] = True
    positions = torch.arange(n)
    fill = torch.where(reached, positions, torch.zeros_like(positions)).cummax(dim=0).values
    return dest.to(device), fill.to(device)


def _warp_last_dim(x: Tensor, warp: AxisWarp) -> Tensor:
    """Apply the column rule along the last dim of x (..., n) with a scatter (any warp)."""
    dest, fill = _axis_index_maps(x.shape[-1], warp, x.device)
    index = dest.expand(x.shape)
    merged = torch.zeros_like(x).scatter_reduce_(-1, index, x, reduce="amax", include_self=False)
    return merged.index_select(-1, fill)


def _deform_raster_scatter(x: Tensor, module: DeformationModule) -> Tensor:
    """The general path (any warp, folding ones included): scatter_reduce(amax) per axis."""
    out = x
    if not module.x.is_identity:
        out = _warp_last_dim(out, module.x)
    if not module.y.is_identity:
        out = _warp_last_dim(out.transpose(-1, -2), module.y).transpose(-1, -2)
    return out.contiguous() if out is not x else x.clone()


class _AxisRuns:
    """Gather plan of one axis whose destination map is monotone (a warp that does not fold).

    Then the sources landing on one destination are a contiguous run [start, start + r),
    and the merge is a max over each run. Runs of one source are slice copies (a stretch
    of them has consecutive sources); longer runs are grouped by their length r: one
    ``index_select`` of all the group's sources, viewed as (m, r), reduced by ``amax``.
    The merged rows ("pool") are stored group after group; ``fill[j]`` is the pool row
    destination j shows (its own run, or for an unreached j the nearest reached one to
    its left), so one more ``index_select`` gives the warped axis.

    Attributes:
        singles: (source, offset, count): pool rows [offset, offset + count) are source
            rows [source, source + count).
        groups: (r, m, offset, index) per run length r > 1: m runs, pool rows
            [offset, offset + m), index the (m * r,) source positions, run by run.
        pooled: number of reached destinations (pool rows).
        fill: (n,) long, pool row of each destination.
    """

    def __init__(self, dest: np.ndarray, device: torch.device) -> None:
        n = len(dest)
        lengths = np.bincount(dest, minlength=n)
        starts = np.cumsum(lengths) - lengths
        reached = np.flatnonzero(lengths)
        pool_row = np.zeros(n, dtype=np.int64)
        singles: list[tuple[int, int, int]] = []
        groups = []
        offset = 0
        for r in np.unique(lengths[reached]):
            runs = reached[lengths[reached] == r]
            pool_row[runs] = np.arange(offset, offset + len(runs))
            if r == 1:  # consecutive one-source runs have consecutive sources: slice copies
                breaks = np.flatnonzero(np.diff(starts[runs]) != 1) + 1
                for lo, hi in zip(np.r_[0, breaks], np.r_[breaks, len(runs)]):
                    singles.append((int(starts[runs[lo]]), offset + int(lo), int(hi - lo)))
            else:
                index = (starts[runs][:, None] + np.arange(r)).reshape(-1)
                groups.append((int(r), len(runs), offset, torch.from_numpy(index).to(device)))
            offset += len(runs)
        shown = np.maximum.accumulate(np.where(lengths > 0, np.arange(n), 0))
        self.singles: tuple[tuple[int, int, int], ...] = tuple(singles)
        self.groups: tuple[tuple[int, int, int, Tensor], ...] = tuple(groups)
        self.pooled: int = offset
        self.fill: Tensor = torch.from_numpy(pool_row[shown]).to(device)

    def merge(self, x: Tensor) -> Tensor:
        """(..., n, W) -> (..., pooled, W): the max over each run along dim -2."""
        pool = x.new_empty((*x.shape[:-2], self.pooled, x.shape[-1]))
        for source, offset, count in self.singles:
            pool[..., offset : offset + count, :].copy_(x[..., source : source + count, :])
        for r, m, offset, index in self.groups:
            sources = x.index_select(-2, index).unflatten(-2, (m, r))
            torch.amax(sources, dim=-2, out=pool[..., offset : offset + m, :])
        return pool


@lru_cache(maxsize=64)
def _axis_runs(n: int, warp: AxisWarp, device: torch.device) -> _AxisRuns | None:
    """The run plan of one axis, or None when the destination map is not monotone."""
    dest = destination_indices(n, warp)
    if np.any(np.diff(dest) < 0):
        return None
    return _AxisRuns(dest, device)


#: Elements per chunk of the run path (about 4 MB of float32): the intermediates stay in
#: cache and in glibc's reused heap instead of fresh page-faulted mappings.
RASTER_CHUNK_ELEMENTS: int = 1 << 20


def _deform_raster_runs(x: Tensor, runs_x: _AxisRuns | None, runs_y: _AxisRuns | None, out: Tensor) -> None:
    """Write the deformation of x (..., H, W) into the contiguous out, via run plans.

    The rule is a max over a rectangle of sources per output pixel, separable in rows
    and columns, and max is exact, so the order of the steps does not change a bit:
    merge rows (y runs, along dim -2), transpose, merge the columns as rows (x runs),
    spread them (x fill), transpose back and spread the rows (y fill) into out.
    """
    current = runs_y.merge(x) if runs_y is not None else x
    if runs_x is not None:
        turned = runs_x.merge(current.transpose(-1, -2).contiguous()).index_select(-2, runs_x.fill)
        current = turned.transpose(-1, -2)
        if runs_y is None:
            out.copy_(current)
            return
        current = current.contiguous()
    torch.index_select(current, -2, runs_y.fill, out=out)


def deform_raster(x: Tensor, module: DeformationModule, out: Tensor | None = None) -> Tensor:
    """Deform a raster batch: x warp along columns, then y warp along rows.

    Warps that do not fold (monotone destination maps, every module in
    ``DEFORMATION_MODULES``) take a gather path: runs of sources are max-merged with
    ``index_select`` + ``amax`` (``_AxisRuns``), ``RASTER_CHUNK_ELEMENTS`` at a time.
    Folding warps (``allow_folding=True``) and inputs that need a gradient take the
    ``scatter_reduce(amax)`` path. Both give the same bits as ``deform_raster_reference``.

    Args:
        x: (B, C, H, W) (or any (..., H, W)) float images, ink bright.
        module: the warps; identity axes are skipped.
        out: optional contiguous tensor of x's shape, dtype and device to write into.

    Returns:
        New tensor (or out) of x's shape, dtype and device (contiguous).
    """
    if x.dim() < 2:
        raise ValueError(f"raster must have at least 2 dims (..., H, W), got {tuple(x.shape)}")
    if out is not None and (out.shape != x.shape or out.dtype != x.dtype or out.device != x.device
                            or not out.is_contiguous()):
        raise ValueError(
            f"deform_raster: out must be a contiguous {x.dtype} tensor of shape {tuple(x.shape)} "
            f"on {x.device}, got a {out.dtype} tensor of shape {tuple(out.shape)} on {out.device}"
        )
    height, width = x.shape[-2], x.shape[-1]
    runs_x = None if module.x.is_identity else _axis_runs(width, module.x, x.device)
    runs_y = None if module.y.is_identity else _axis_runs(height, module.y, x.device)
    folds = (runs_x is None and not module.x.is_identity) or (runs_y is None and not module.y.is_identity)
    if folds or (runs_x is None and runs_y is None) or (torch.is_grad_enabled() and x.requires_grad):
        result = _deform_raster_scatter(x, module)
        return result if out is None else out.copy_(result)
    if out is None:
        out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    if x.dim() < 3:
        _deform_raster_runs(x, runs_x, runs_y, out)
        return out
    flat_x, flat_out = x.reshape(-1, height, width), out.view(-1, height, width)
    chunk = max(1, RASTER_CHUNK_ELEMENTS // max(1, height * width))
    for i in range(0, flat_x.shape[0], chunk):
        _deform_raster_runs(flat_x[i : i + chunk], runs_x, runs_y, flat_out[i : i + chunk])
    return out


def deform_raster_reference(img: np.ndarray, module: DeformationModule) -> np.ndarray:
    """Per-image reference of ``deform_raster`` that follows the rule with loops.

    Args:
        img: (H, W) array.
        module: the warps; identity axes are skipped.

    Returns:
        (H, W) array of img's dtype.
    """

    def columns(image: np.ndarray, warp: AxisWarp) -> np.ndarray:
        height, width = image.shape
        out = np.zeros_like(image)
        reached = [False] * width
        for i in range(width):
            t = i / (width - 1) if width > 1 else 0.0
            d = math.floor(warp.f(t) * (width - 1))
            d = min(max(d, 0), width - 1)
            if reached[d]:
                out[:, d] = np.maximum(out[:, d], image[:, i])
            else:
                out[:, d] = image[:, i]
                reached[d] = True
        for d in range(width):  # left to right, so runs of gaps copy the last reached
            if not reached[d]:
                out[:, d] = out[:, d - 1]
        return out

    if img.ndim != 2:
        raise ValueError(f"reference works on one (H, W) image, got shape {img.shape}")
    out = img.copy()
    if not module.x.is_identity:
        out = columns(out, module.x)
    if not module.y.is_identity:
        out = columns(out.T, module.y).T.copy()
    return out


def erase_half(x: Tensor, side: str) -> Tensor:
    """Keep one half of each raster, set the rest to background 0 (released ``erase``).

    The split is at H // 2 (rows) or W // 2 (columns): "top" keeps rows [0, H // 2),
    "bottom" rows [H // 2, H), "left" columns [0, W // 2), "right" columns [W // 2, W).
    For odd sizes the middle row/column belongs to the bottom/right half (the released
    helper only accepted even sizes).

    Args:
        x: (..., H, W) raster batch.
        side: one of "top", "right", "bottom", "left".

    Returns:
        New tensor of x's shape.
    """
    if side not in ERASE_SIDES:
        raise ValueError(f"erase_half: side must be one of {list(ERASE_SIDES)}, got {side!r}")
    height, width = x.shape[-2], x.shape[-1]
    out = torch.zeros_like(x)
    if side == "top":
        out[..., : height // 2, :] = x[..., : height // 2, :]
    elif side == "bottom":
        out[..., height // 2 :, :] = x[..., height // 2 :, :]
    elif side == "left":
        out[..., : width // 2] = x[..., : width // 2]
    else:
        out[..., width // 2 :] = x[..., width // 2 :]
    return out


# --------------------------------------------------------------------------- strokes
def deform_strokes(x: Tensor, module: DeformationModule, normalize: bool = True) -> Tensor:
    """Warp the coordinates of valid rows: x column by f_x, y column by f_y.

    f is evaluated in float64 and cast back to x's dtype.

    Args:
        x: (B, L, 4) stroke batch, coordinates in [0, 1].
        module: the warps (identity axes leave their column as is).
        normalize: re-centre and rescale into the unit square afterwards
            (``normalize_strokes``).

    Returns:
        (B, L, 4) new tensor; pen columns unchanged, padding rows exactly zero.
    """
    valid = valid_rows(x)
    coords = []
    for column, warp in ((0, module.x), (1, module.y)):
        values = x[..., column]
        if not warp.is_identity:
            values = warp.f(values.double()).to(x.dtype)
        coords.append(values)
    out = with_coordinates(x, torch.stack(coords, dim=-1), valid)
    return normalize_strokes(out) if normalize else out


def deformation_views_strokes(x: Tensor, module: DeformationModule) -> Tensor:
    """``cat([normalize_strokes(x), deform_strokes(x, module)])`` in one planar pass.

    The batch is copied once into planes (``strokes.planar``); both axes are warped in one
    pass (``DeformationModule.warp_planes``, float64 as in ``deform_strokes``); both views
    are normalised together (``normalize_planar``) and written into one output. Bit-identical
    to the cat (the same arithmetic on every value) in about a quarter of its time: these
    tensors are small, so the count of torch calls and contiguous memory are what count.

    Args:
        x: (B, L, 4) stroke batch, coordinates in [0, 1].
        module: the deformation (identity axes are left as they are).

    Returns:
        (2B, L, 4): undeformed views, then deformed ones; pen columns kept, padding rows zero.
    """
    valid = valid_weights(x)
    coords = torch.empty((2, 2, *x.shape[:2]), dtype=x.dtype, device=x.device)  # (view, axis, B, L)
    coords[0] = x[..., :2].permute(2, 0, 1)
    coords[1] = module.warp_planes(coords[0].to(torch.float64))  # padding rows stay 0: f(0) = 0
    out = new_views_like(x, 2 * x.shape[0])
    normalize_planar(coords, valid, out=interleave(x, 2, out))
    return out


# ------------------------------------------------------------------------- algorithm
def _parse_custom(custom: Mapping[str, Any]) -> DeformationModule:
    """{"x": [lam, a, b], "y": [lam, a, b]} -> module (missing axis = identity); the
    folding check is left to the caller."""
    if not isinstance(custom, Mapping):
        raise ValueError(f"deformation: parameter 'custom' must be a dict, got {custom!r}")
    warps: dict[str, AxisWarp] = {}
    for axis, triple in custom.items():
        if axis not in ("x", "y"):
            raise ValueError(
                f"deformation: parameter 'custom' has unknown axis {axis!r} (known: ['x', 'y'])"
            )
        if isinstance(triple, (str, bytes)) or not isinstance(triple, Sequence) or len(triple) != 3:
            raise ValueError(
                f"deformation: parameter 'custom' axis {axis!r} must be [lam, a, b], got {triple!r}"
            )
        try:
            warps[axis] = AxisWarp(*triple)
        except ValueError as err:
            raise ValueError(f"deformation: parameter 'custom' axis {axis!r}: {err}") from None
    return DeformationModule(
        "custom", x=warps.get("x", IDENTITY), y=warps.get("y", IDENTITY), allow_folding=True
    )


class DeformationAlgorithm(PretextAlgorithm):
    """2-way deformation prediction.

    Parameters:
        module: name in ``DEFORMATION_MODULES`` (default "released").
        custom: {"x": [lam, a, b], "y": [lam, a, b]} overriding ``module``; a missing
            axis is left alone.
        stroke_argument_order: "lam_a_b" (default) reads every triple as (lam, a, b) in
            both branches; "released" reproduces the released stroke code, which read the
            triple as (a, b, lam) (``AxisWarp.from_released_stroke_order``). It affects
            the stroke branch only; the raster branch always reads (lam, a, b).
        allow_folding: accept warps whose slope goes negative (needed for
            stroke_argument_order="released").

    Views: raster label 0 = x, label 1 = deform_raster(x); strokes label 0 =
    normalize_strokes(x), label 1 = normalize_strokes(deform(x)).
    """

    name: ClassVar[str] = "deformation"
    num_pretext_classes: ClassVar[int] = 2

    def __init__(
        self,
        modality: str,
        *,
        module: str = "released",
        custom: Mapping[str, Any] | None = None,
        stroke_argument_order: str = "lam_a_b",
        allow_folding: bool = False,
    ) -> None:
        super().__init__(modality)
        if not isinstance(allow_folding, bool):
            raise ValueError(
                "deformation: parameter 'allow_folding' must be True or False, "
                f"got {allow_folding!r}"
            )
        if stroke_argument_order not in STROKE_ARGUMENT_ORDERS:
            raise ValueError(
                "deformation: parameter 'stroke_argument_order' must be one of "
                f"{list(STROKE_ARGUMENT_ORDERS)}, got {stroke_argument_order!r}"
            )
        setting_param = "module" if custom is None else "custom"
        if custom is not None:
            written = _parse_custom(custom)
            module_name = "custom"
        else:
            if module not in DEFORMATION_MODULES:
                raise ValueError(
                    "deformation: parameter 'module' must be one of "
                    f"{list(DEFORMATION_MODULES)}, got {module!r}"
                )
            written = DEFORMATION_MODULES[module]
            module_name = module
        self.module_name: str = module_name
        self.written: DeformationModule = written
        self.stroke_argument_order: str = stroke_argument_order
        self.allow_folding: bool = allow_folding

        released_order = modality == "stroke" and stroke_argument_order == "released"
        if released_order:
            x_warp = AxisWarp.from_released_stroke_order(*written.x.params)
            y_warp = AxisWarp.from_released_stroke_order(*written.y.params)
            applied_name = f"{module_name}@released_stroke_order"
        else:
            x_warp, y_warp = written.x, written.y
            applied_name = module_name
        applied = DeformationModule(applied_name, x=x_warp, y=y_warp, allow_folding=True)
        problem = applied.fold_report()
        if problem and not allow_folding:
            if released_order:
                raise ValueError(
                    "deformation: stroke_argument_order='released' reads (lam, a, b) as "
                    f"(a, b, lam) and the resulting {problem}; pass allow_folding=True to "
                    "reproduce the released code"
                )
            raise ValueError(
                f"deformation: parameter {setting_param!r}: {problem}; "
                "pass allow_folding=True to use it anyway"
            )
        if applied.is_identity:
            raise ValueError(
                f"deformation: parameter {setting_param!r} is the identity on both axes, "
                "so both views would be the same"
            )
        self.deformation: DeformationModule = applied

    def views(self, x: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Build (undeformed, deformed) copies.

        Args:
            x: (B, C, H, W) raster batch or (B, L, 4) stroke batch.
            y: class labels (B,), unused.

        Returns:
            inputs: (2B, ...) = cat([undeformed, deformed]).
            targets: (2B,) int64 = [0]*B + [1]*B, on x.device.
        """
        self.check_input(x)
        if self.modality == "stroke":
            inputs = deformation_views_strokes(x, self.deformation)
        elif not (torch.is_grad_enabled() and x.requires_grad):
            batch = x.shape[0]
            inputs = new_views_like(x, 2 * batch)  # both views written in place, no cat
            inputs[:batch].copy_(x)
            deform_raster(x, self.deformation, out=inputs[batch:])
        else:
            inputs = torch.cat([x, deform_raster(x, self.deformation)], dim=0)
        targets = view_targets(2, x.shape[0], x.device)
        return inputs, targets

    def describe(self) -> dict[str, Any]:
        """Module name, the written triples, the argument order, and the applied warps."""
        return {
            **super().describe(),
            "module": self.module_name,
            "written": self.written.as_dict(),
            "stroke_argument_order": self.stroke_argument_order,
            "allow_folding": self.allow_folding,
            "applied": self.deformation.as_dict(),
        }
