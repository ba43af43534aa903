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

from .base import PretextAlgorithm, ink_to_float, new_views_like, view_targets
from .strokes import (
    check_strokes,
    normalize_planar,
    normalize_strokes,
    valid_rows,
    valid_weights,
    with_coordinates,
    write_coordinates,
)
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


def _monotone_runs(n: int, warp: AxisWarp) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(lengths, starts, shown) of one axis, or None when its destination map is not monotone.

    lengths[d]: how many sources land on destination d; starts[d]: the first of them
    (they are contiguous, [starts[d], starts[d] + lengths[d]), when the map is monotone);
    shown[d]: the reached destination that d shows (d itself, or the nearest reached one
    to its left).
    """
    dest = destination_indices(n, warp)
    if np.any(np.diff(dest) < 0):
        return None
    lengths = np.bincount(dest, minlength=n)
    starts = np.cumsum(lengths) - lengths
    shown = np.maximum.accumulate(np.where(lengths > 0, np.arange(n), 0))
    return lengths, starts, shown


class _RasterPlan:
    """How to deform (H, W) rasters by warps that do not fold, as a few batched gathers.

    With monotone destination maps the sources of a destination row (column) are a
    contiguous run, and a deformed pixel is the max over a rectangle of sources: its row's
    run by its column's run (a gap destination shows the nearest reached one to its left).
    Max is exact, so computing it rows first, then columns, gives the same bits as the
    reference. Per image, a scratch row S holds:

    - the row-merged image (P, W), one row per reached destination row ("pool" rows, in
      order): one-source runs are slice copies (a stretch of them has consecutive sources),
      longer runs one ``amax`` over their slice each; with an identity y warp this part
      is a copy of the image (or the image itself when there is nothing else to hold);
    - after it, the merged multi-source column runs: their sources are gathered by one
      flat ``index_select`` laid out (r, P, m) per run length r, and one ``amax`` over r
      writes the group's m columns as a contiguous (P, m) block.

    One flat ``index_select`` from S then writes every output pixel. Gathers along a
    flattened image run near memory speed, where gathers of columns or transposes did not
    (``bench/RESULTS.md``). With an identity x warp the output is a row gather instead.

    Attributes:
        row_singles: (source, pool, count): pool rows [pool, pool + count) are image rows
            [source, source + count).
        row_runs: (source, length, pool): pool row ``pool`` is the max of image rows
            [source, source + length).
        pooled: P, rows of the row-merged image (H when the y warp is the identity).
        copy_rows: the y warp is the identity but S needs the image next to merged columns.
        from_input: the y warp is the identity and no column run has two sources: the
            output is gathered from the input itself, no scratch.
        column_index: flat positions in S of every column run's sources (None: no
            multi-source column runs).
        column_groups: (offset, length, size, target): the (length, size) block of the
            gathered sources at ``offset`` reduces into S[target : target + size].
        width_s: length of S per image.
        pixel_index: (H * W,) flat position in S of each output pixel (None with an
            identity x warp).
        row_fill: (H,) pool row of each output row (used with an identity x warp).
    """

    def __init__(self, height: int, width: int, rows: tuple | None, columns: tuple | None,
                 device: torch.device) -> None:
        self.height, self.width = height, width
        singles: list[tuple[int, int, int]] = []
        runs: list[tuple[int, int, int]] = []
        if rows is None:  # identity y warp: pool row i is image row i
            pool_of_row = np.arange(height)
            self.pooled = height
        else:
            lengths, starts, shown = rows
            reached = np.flatnonzero(lengths)
            pool = np.zeros(height, dtype=np.int64)
            pool[reached] = np.arange(len(reached))
            pool_of_row = pool[shown]
            self.pooled = len(reached)
            for p, d in enumerate(reached):
                source, length = int(starts[d]), int(lengths[d])
                if length > 1:
                    runs.append((source, length, p))
                elif singles and singles[-1][0] + singles[-1][2] == source and singles[-1][1] + singles[-1][2] == p:
                    singles[-1] = (singles[-1][0], singles[-1][1], singles[-1][2] + 1)
                else:
                    singles.append((source, p, 1))
        self.row_singles: tuple[tuple[int, int, int], ...] = tuple(singles)
        self.row_runs: tuple[tuple[int, int, int], ...] = tuple(runs)
        self.row_fill: Tensor = torch.from_numpy(pool_of_row).to(device)

        pooled, image = self.pooled, self.pooled * width
        groups: list[tuple[int, int, int, int]] = []
        self.column_index: Tensor | None = None
        self.pixel_index: Tensor | None = None
        self.width_s = image
        if columns is not None:
            lengths, starts, shown = columns
            # output pixel (i, j) shows pool row pool_of_row[i] and column run shown[j]:
            # a one-source run reads its source column of the row-merged image ...
            pixels = pool_of_row[:, None] * width + starts[shown][None, :]
            sources, offset, target = [], 0, image
            for r in np.unique(lengths[lengths > 1]):
                group = np.flatnonzero(lengths == r)  # the m destinations with r sources
                m = len(group)
                # their sources laid out (r, P, m): the k-th source of each run, every pool row
                columns_rk = starts[group][None, None, :] + np.arange(r)[:, None, None]
                sources.append((columns_rk + (np.arange(pooled) * width)[None, :, None]).reshape(-1))
                groups.append((offset, int(r), pooled * m, target))
                # ... a multi-source run reads its merged column in the group's (P, m) block
                slot = np.full(width, -1, dtype=np.int64)
                slot[group] = np.arange(m)
                hit = slot[shown] >= 0
                pixels[:, hit] = target + pool_of_row[:, None] * m + slot[shown][hit][None, :]
                offset += int(r) * pooled * m
                target += pooled * m
            self.width_s = target
            if sources:
                self.column_index = torch.from_numpy(np.concatenate(sources)).to(device)
            self.pixel_index = torch.from_numpy(pixels.reshape(-1)).to(device)
        self.column_groups: tuple[tuple[int, int, int, int], ...] = tuple(groups)
        self.copy_rows: bool = rows is None and bool(groups)
        self.from_input: bool = rows is None and not groups  # nothing to merge: gather from x itself

    def apply(self, x: Tensor, out: Tensor, scratch: Tensor) -> None:
        """Write the deformation of x (n, H, W) into the contiguous out (n, H, W).

        scratch: a contiguous tensor of at least n * width_s elements of x's dtype.
        """
        n, width = x.shape[0], self.width
        if self.from_input:
            s = x.reshape(n, -1)
        else:
            s = scratch[: n * self.width_s].view(n, self.width_s)
            image = s[:, : self.pooled * width].view(n, self.pooled, width)
            if self.copy_rows:
                image.copy_(x)
            for source, pool, count in self.row_singles:
                image[:, pool : pool + count].copy_(x[:, source : source + count])
            for source, length, pool in self.row_runs:
                torch.amax(x[:, source : source + length], dim=1, out=image[:, pool])
        if self.column_index is not None:
            # from all of s (its sources sit in the image part): index_select takes a much
            # slower path on a sliced, non-contiguous source
            gathered = torch.index_select(s, 1, self.column_index)
            for offset, length, size, target in self.column_groups:
                block = gathered[:, offset : offset + length * size].view(n, length, size)
                torch.amax(block, dim=1, out=s[:, target : target + size])
        if self.pixel_index is None:  # identity x warp: whole rows
            torch.index_select(s.view(n, self.pooled, width), 1, self.row_fill, out=out)
        else:
            torch.index_select(s, 1, self.pixel_index, out=out.view(n, -1))


@lru_cache(maxsize=64)
def _raster_plan(height: int, width: int, module: DeformationModule, device: torch.device) -> _RasterPlan | None:
    """The gather plan of a module at one raster size, or None when a warped axis folds."""
    rows = None if module.y.is_identity else _monotone_runs(height, module.y)
    columns = None if module.x.is_identity else _monotone_runs(width, module.x)
    if (rows is None and not module.y.is_identity) or (columns is None and not module.x.is_identity):
        return None
    return _RasterPlan(height, width, rows, columns, device)


#: Elements per chunk of the gather path on the CPU (16 MB of float32, a batch of 64
#: rasters at 224 px): the plan costs ~40 torch calls per chunk, so smaller chunks, which
#: would keep the scratch in cache, measured slower (1.2x at 4 MB, 2.8x at 0.5 MB).
RASTER_CHUNK_ELEMENTS: int = 1 << 22

#: The same on other devices (a GPU): no cache to stay in, and each of the ~40 calls a
#: chunk is a kernel launch, so a training batch goes in one chunk (2^26 elements: 1,337
#: rasters at 224 px, 256 MB of float32; the plan's scratch and gathered column sources
#: take at most 1.6x the chunk's size, 0.9x for "released").
RASTER_CHUNK_ELEMENTS_ACCELERATOR: int = 1 << 26


def raster_chunk_elements(device: torch.device) -> int:
    """Elements per chunk of ``deform_raster``'s gather path on device."""
    return RASTER_CHUNK_ELEMENTS if device.type == "cpu" else RASTER_CHUNK_ELEMENTS_ACCELERATOR


def deform_raster(x: Tensor, module: DeformationModule, out: Tensor | None = None) -> Tensor:
    """Deform a raster batch: x warp along columns, then y warp along rows.

    Warps that do not fold (monotone destination maps, every module in
    ``DEFORMATION_MODULES``) take a gather path (``_RasterPlan``: runs of source rows and
    columns max-merged, then one flat gather per chunk of ``raster_chunk_elements``).
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
    plan = None if module.is_identity else _raster_plan(height, width, module, x.device)
    if plan is None or (torch.is_grad_enabled() and x.requires_grad):
        result = _deform_raster_scatter(x, module)
        return result if out is None else out.copy_(result)
    if out is None:
        out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    flat_x, flat_out = x.reshape(-1, height, width), out.view(-1, height, width)
    chunk = max(1, raster_chunk_elements(x.device) // (height * width))
    scratch = x.new_empty(min(chunk, flat_x.shape[0]) * plan.width_s)
    for i in range(0, flat_x.shape[0], chunk):
        plan.apply(flat_x[i : i + chunk], flat_out[i : i + chunk], scratch)
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

    The batch's coordinates are copied once into planes (``strokes`` planar layout); both
    axes are warped in one pass (``DeformationModule.warp_planes``, float64 as in
    ``deform_strokes``, cast straight into the deformed view's planes); both views are
    normalised together (``normalize_planar``) and written over two copies of the batch
    (``strokes.write_coordinates``). Bit-identical to the cat (the same arithmetic
    on every value); with a gradient to track, the cat itself. These tensors are small, so
    the count of torch calls and contiguous memory are what count.

    Args:
        x: (B, L, 4) stroke batch, coordinates in [0, 1].
        module: the deformation (identity axes are left as they are).

    Returns:
        (2B, L, 4): undeformed views, then deformed ones; pen columns kept, padding rows zero.
    """
    check_strokes(x)
    if torch.is_grad_enabled() and x.requires_grad:
        return torch.cat([normalize_strokes(x), deform_strokes(x, module)])
    valid = valid_weights(x)
    coords = torch.empty((2, 2, x.shape[0], x.shape[1]), dtype=x.dtype, device=x.device)  # (view, axis, B, L)
    plain = coords[0]
    plain.copy_(x[..., :2].permute(2, 0, 1))
    module.warp_planes(plain.to(torch.float64), out=coords[1])  # padding rows stay 0: f(0) = 0
    return write_coordinates(torch.cat([x, x]), normalize_planar(coords, valid))


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

    @property
    def takes_ink_levels(self) -> bool:
        """Rasters: yes (converted once, then deformed as floats)."""
        return self.modality == "raster"

    def views(self, x: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Build (undeformed, deformed) copies.

        Args:
            x: (B, C, H, W) raster batch (float, or uint8 ink levels: the views are then
                those of ``ink_to_float(x)``, float32) or (B, L, 4) stroke batch.
            y: class labels (B,), unused.

        Returns:
            inputs: (2B, ...) = cat([undeformed, deformed]).
            targets: (2B,) int64 = [0]*B + [1]*B, on x.device.
        """
        self.check_input(x)
        if self.modality == "stroke":
            inputs = deformation_views_strokes(x, self.deformation)
        elif not (torch.is_grad_enabled() and x.requires_grad):
            # Both views written in place, no cat; ink levels become floats on the way in.
            batch, levels = x.shape[0], x.dtype == torch.uint8
            inputs = new_views_like(x, 2 * batch, dtype=torch.float32 if levels else None)
            undeformed = ink_to_float(x, out=inputs[:batch]) if levels else inputs[:batch].copy_(x)
            deform_raster(undeformed, self.deformation, out=inputs[batch:])
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
