"""Small batched operations on stroke tensors (B, L, 4) = rows [x, y, p1, p2].

A row is valid when p1 + p2 > 0; padding rows are all zero and every function here keeps
them exactly zero.
"""

from __future__ import annotations

import torch
from torch import Tensor


def check_strokes(x: Tensor) -> None:
    """Raise ValueError unless x is a stroke batch of shape (B, L, 4)."""
    if x.dim() != 3 or x.shape[-1] != 4:
        raise ValueError(f"stroke batch must have shape (B, L, 4), got {tuple(x.shape)}")


def valid_rows(x: Tensor) -> Tensor:
    """Boolean mask (B, L) of the rows that carry a point (p1 + p2 > 0)."""
    check_strokes(x)
    return (x[..., 2] + x[..., 3]) > 0


def with_coordinates(x: Tensor, xy: Tensor, valid: Tensor) -> Tensor:
    """Replace the coordinates of valid rows, keep pen columns, zero padding rows.

    Args:
        x: (B, L, 4) stroke batch whose pen columns are kept.
        xy: (B, L, 2) new coordinates (values on padding rows are ignored).
        valid: (B, L) mask from ``valid_rows(x)``.

    Returns:
        (B, L, 4) new tensor, same dtype and device as x.
    """
    zero = torch.zeros((), dtype=x.dtype, device=x.device)
    xy = torch.where(valid.unsqueeze(-1), xy.to(x.dtype), zero)
    return torch.cat([xy, x[..., 2:]], dim=-1)


def normalize_strokes(x: Tensor, min_extent: float = 0.0) -> Tensor:
    """Re-centre and rescale each sketch's valid points into the unit square.

    Both axes are divided by the larger bounding-box extent (aspect ratio kept) and the
    box centre moves to (0.5, 0.5): the larger extent then spans exactly [0, 1] and the
    smaller one is centred inside it. This is the released ``center_norm`` rule, applied
    to valid rows only.

    A sketch whose larger extent is <= ``min_extent`` (all valid points equal) is not
    scaled, only moved so its points sit at (0.5, 0.5); a sketch with no valid row comes
    back unchanged (all zero). Nothing divides by zero.

    Args:
        x: (B, L, 4) stroke batch.
        min_extent: extents at or below this are treated as zero.

    Returns:
        (B, L, 4) new tensor; pen columns unchanged, padding rows exactly zero.
    """
    valid = valid_rows(x)
    xy = x[..., :2]
    mask = valid.unsqueeze(-1)  # (B, L, 1)
    inf = torch.tensor(float("inf"), dtype=x.dtype, device=x.device)
    lo = torch.where(mask, xy, inf).amin(dim=1)  # (B, 2)
    hi = torch.where(mask, xy, -inf).amax(dim=1)  # (B, 2)
    any_valid = valid.any(dim=1, keepdim=True)  # (B, 1)
    zero = torch.zeros((), dtype=x.dtype, device=x.device)
    lo = torch.where(any_valid, lo, zero)
    hi = torch.where(any_valid, hi, zero)
    centre = (lo + hi) / 2  # (B, 2)
    scale = (hi - lo).amax(dim=1, keepdim=True)  # (B, 1)
    scale = torch.where(scale > min_extent, scale, torch.ones_like(scale))
    new_xy = (xy - centre.unsqueeze(1)) / scale.unsqueeze(1) + 0.5
    return with_coordinates(x, new_xy, valid)
