"""Rotation prediction (4-way, after RotNet).

Label k means k counter-clockwise quarter turns *as displayed* (image y pointing down),
the same turn for rasters and for strokes. The released code turned rasters
counter-clockwise but stroke coordinates clockwise for label 1 (it forgot that y points
down); here one label is one picture in both branches, which
``tests/test_algorithms.py`` checks by plotting rotated strokes.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from .base import PretextAlgorithm
from .strokes import valid_rows, with_coordinates

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


class RotationAlgorithm(PretextAlgorithm):
    """4-way rotation prediction; takes no parameters.

    ``views`` stacks the batch four times, turned 0, 1, 2, 3 quarter turns, and labels
    each copy with its number of turns.
    """

    name: ClassVar[str] = "rotation"
    num_pretext_classes: ClassVar[int] = NUM_ROTATIONS

    def __init__(self, modality: str) -> None:
        super().__init__(modality)

    def views(self, x: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Build the four rotated copies.

        Args:
            x: (B, C, H, W) raster batch with H == W, or (B, L, 4) stroke batch.
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
            rotate = rotate_raster
        else:
            rotate = rotate_strokes
        inputs = torch.cat([rotate(x, k) for k in range(NUM_ROTATIONS)], dim=0)
        targets = torch.arange(NUM_ROTATIONS, device=x.device).repeat_interleave(x.shape[0])
        return inputs, targets

    def describe(self) -> dict[str, Any]:
        """Name, modality and the turn convention."""
        return {
            **super().describe(),
            "num_rotations": NUM_ROTATIONS,
            "label_meaning": "k counter-clockwise quarter turns as displayed (y down)",
        }
