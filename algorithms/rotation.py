"""Rotation prediction (4-way, after RotNet).

Label k means k counter-clockwise quarter turns *as displayed* (image y pointing down),
the same turn for rasters and for strokes. The released code turned rasters
counter-clockwise but stroke coordinates clockwise for label 1 (it forgot that y points
down); here one label is one picture in both branches, which
``tests/algorithms/test_algorithms.py`` checks by plotting rotated strokes.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, ClassVar

import cv2
import numpy as np
import torch
from torch import Tensor

from .base import PretextAlgorithm, ink_to_float, new_views_like, numpy_dtype, view_targets
from .strokes import constants, valid_rows, valid_weights, with_coordinates, write_coordinates

NUM_ROTATIONS: int = 4


def rotate_raster(x: Tensor, k: int) -> Tensor:
    """Turn rasters k quarter turns counter-clockwise as displayed.

    Args:
        x: (..., H, W) images, row 0 at the top.
        k: number of quarter turns (any int; taken modulo 4).

    Returns:
        (..., W, H) rotated copy (``torch.rot90`` over the last two dims).
    """
    return torch.rot90(x, k % NUM_ROTATIONS, dims=(-2, -1))


def rotation_views_raster(x: Tensor) -> Tensor:
    """``cat([rotate_raster(x, k) for k in range(4)])`` built into one preallocated tensor.

    Bit-identical to the cat (pure moves). On the CPU each quarter turn is one NumPy
    strided copy (NumPy has negative strides; in torch a flip is a copy of its own);
    on other devices torch ops; when x needs a gradient, the plain cat.

    A uint8 batch is ink levels (:mod:`algorithms.base`), and the views are those of
    :func:`~algorithms.base.ink_to_float` ``(x)``, bit for bit, in float32. On the CPU the
    turns are made on the levels (OpenCV's ``rotate``, a quarter of the bytes to move) and
    the four views converted in one pass; on other devices the batch is converted first
    (one table lookup per pixel of the batch, not of the views) and turned as floats.

    Args:
        x: (B, ..., S, S) square rasters.

    Returns:
        (4B, ..., S, S) contiguous tensor, views grouped by turn (float32 for uint8 x).
    """
    if x.dtype == torch.uint8:
        if x.device.type != "cpu":  # a table lookup per pixel: look up the batch once, then turn
            return rotation_views_raster(ink_to_float(x))
        return ink_to_float(_level_views_cv2(x))
    if torch.is_grad_enabled() and x.requires_grad:
        return torch.cat([rotate_raster(x, k) for k in range(NUM_ROTATIONS)], dim=0)
    b = x.shape[0]
    out = new_views_like(x, NUM_ROTATIONS * b)
    if x.device.type == "cpu" and numpy_dtype(x.dtype) is not None:
        src, dst = x.detach().resolve_conj().resolve_neg().numpy(), out.numpy()
        for k in range(NUM_ROTATIONS):
            np.copyto(dst[k * b : (k + 1) * b], np.rot90(src, k, axes=(-2, -1)))
        return out
    for k in range(NUM_ROTATIONS):
        out[k * b : (k + 1) * b].copy_(rotate_raster(x, k))
    return out


#: OpenCV's code for k counter-clockwise quarter turns (k = 1, 2, 3), as ``np.rot90`` turns.
_CV2_TURNS = {1: cv2.ROTATE_90_COUNTERCLOCKWISE, 2: cv2.ROTATE_180, 3: cv2.ROTATE_90_CLOCKWISE}


def _level_views_cv2(x: Tensor) -> Tensor:
    """The four turns of a uint8 CPU batch (B, ..., S, S), grouped by turn, still uint8."""
    b = x.shape[0]
    out = new_views_like(x, NUM_ROTATIONS * b)
    side = x.shape[-1]
    src = x.numpy().reshape(-1, side, side)
    dst = out.numpy().reshape(NUM_ROTATIONS, -1, side, side)
    np.copyto(dst[0], src)
    for k, code in _CV2_TURNS.items():
        for image, turned in zip(src, dst[k]):
            cv2.rotate(image, code, dst=turned)
    return out


def rotate_strokes(x: Tensor, k: int) -> Tensor:
    """Turn stroke sketches k quarter turns counter-clockwise as displayed.

    Valid rows' coordinates rotate about (0.5, 0.5) of the unit square; with y down one
    counter-clockwise turn maps (x, y) -> (y, 1 - x). Pen columns are unchanged and
    padding rows stay exactly zero.

    Args:
        x: (B, L, 4) stroke batch.
        k: number of quarter turns (any int; taken modulo 4).

    Returns:
        (B, L, 4) rotated copy.
    """
    valid = valid_rows(x)
    px, py = x[..., 0], x[..., 1]
    k = k % NUM_ROTATIONS
    if k == 0:
        nx, ny = px, py
    elif k == 1:
        nx, ny = py, 1 - px
    elif k == 2:
        nx, ny = 1 - px, 1 - py
    else:
        nx, ny = 1 - py, px
    return with_coordinates(x, torch.stack([nx, ny], dim=-1), valid)


# Quarter turn k takes its (x, y) from columns _TURN_COLUMNS[k] of [px, py, 1 - px, 1 - py]:
# k = 1: (py, 1 - px); k = 2: (1 - px, 1 - py); k = 3: (1 - py, px) (see rotate_strokes).
_TURN_COLUMNS = ((0, 1), (1, 2), (2, 3), (3, 0))


@lru_cache(maxsize=16)
def _turn_index(device: torch.device) -> Tensor:
    """_TURN_COLUMNS flattened to an (8,) index tensor on device (made once per device)."""
    return torch.tensor(_TURN_COLUMNS, device=device).flatten()


def rotation_views_strokes(x: Tensor) -> Tensor:
    """``cat([rotate_strokes(x, k) for k in range(4)])`` in a fixed handful of operations.

    The four turns only pick two of ``px, py, 1 - px, 1 - py``: those four planes are
    built once (``strokes`` planar layout, padding zeroed), one ``index_select`` gathers
    every turn's coordinates, and they are written over four copies of x
    (``write_coordinates``). Bit-identical to the per-turn path (the same
    subtractions; the rest are moves) in about a tenth of its torch calls, which is what
    counts on these small tensors.

    Args:
        x: (B, L, 4) stroke batch.

    Returns:
        (4B, L, 4) views grouped by turn; pen columns kept, padding rows exactly zero.
    """
    if torch.is_grad_enabled() and x.requires_grad:
        return torch.cat([rotate_strokes(x, k) for k in range(NUM_ROTATIONS)], dim=0)
    valid = valid_weights(x)  # (B, L)
    four = torch.empty((4, *x.shape[:2]), dtype=x.dtype, device=x.device)
    four[:2] = x[..., :2].permute(2, 0, 1)  # px, py
    torch.sub(1, four[:2], out=four[2:])  # 1 - px, 1 - py
    four.mul_(valid).add_(constants(x.dtype, x.device)[0])  # padding rows to +0.0
    turned = four.index_select(0, _turn_index(x.device)).unflatten(0, (NUM_ROTATIONS, 2))  # (4, 2, B, L)
    return write_coordinates(torch.cat([x] * NUM_ROTATIONS), turned)


class RotationAlgorithm(PretextAlgorithm):
    """4-way rotation prediction; takes no parameters.

    ``views`` stacks the batch four times, turned 0, 1, 2, 3 quarter turns, and labels
    each copy with its number of turns.
    """

    name: ClassVar[str] = "rotation"
    num_pretext_classes: ClassVar[int] = NUM_ROTATIONS

    def __init__(self, modality: str) -> None:
        super().__init__(modality)

    @property
    def takes_ink_levels(self) -> bool:
        """Rasters: yes (:func:`rotation_views_raster`)."""
        return self.modality == "raster"

    def views(self, x: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Build the four rotated copies.

        Args:
            x: (B, C, H, W) raster batch with H == W (float, or uint8 ink levels), or
                (B, L, 4) stroke batch.
            y: class labels (B,), unused.

        Returns:
            inputs: (4B, ...) = cat([rot_0(x), rot_1(x), rot_2(x), rot_3(x)]).
            targets: (4B,) int64 = [0]*B + [1]*B + [2]*B + [3]*B, on x.device.
        """
        self.check_input(x)
        if self.modality == "raster":
            if x.shape[-1] != x.shape[-2]:
                raise ValueError(
                    f"rotation: raster views need square images, got H, W = {tuple(x.shape[-2:])}"
                )
            inputs = rotation_views_raster(x)
        else:
            inputs = rotation_views_strokes(x)
        targets = view_targets(NUM_ROTATIONS, x.shape[0], x.device)
        return inputs, targets

    def describe(self) -> dict[str, Any]:
        """Name, modality and the turn convention."""
        return {
            **super().describe(),
            "num_rotations": NUM_ROTATIONS,
            "label_meaning": "k counter-clockwise quarter turns as displayed (y down)",
        }
