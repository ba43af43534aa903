"""Small batched operations on stroke tensors (B, L, 4) = rows [x, y, p1, p2].

A row is valid when p1 + p2 > 0; padding rows are all zero and every function here keeps
them exactly zero.

The batched views compute on a planar layout: the x and y columns of a batch (or of V
views of it) as contiguous (..., 2, B, L) planes, so reductions over a sketch's points
and elementwise maths run over contiguous memory (on the interleaved (B, L, 4) layout
torch takes its strided paths, several times slower on these small tensors); the result
is written back interleaved once (``write_coordinates``).
"""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import Tensor


@lru_cache(maxsize=32)
def constants(dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(0, 1/2, 1, the dtype's largest value) as 0-dim tensors, made once per dtype and device.

    In-place operations with a Python number convert it to the tensor's dtype on every call
    (an extra ``aten::to``, ~1 us, a tenth of these small operations); these are read-only.
    """
    return tuple(torch.tensor(v, dtype=dtype, device=device) for v in (0.0, 0.5, 1.0, torch.finfo(dtype).max))


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


def valid_weights(x: Tensor) -> Tensor:
    """(B, L) contiguous tensor of x's dtype: 1 on rows that carry a point (p1 + p2 > 0),
    0 on padding rows."""
    check_strokes(x)
    return torch.add(x[..., 2], x[..., 3]).gt_(constants(x.dtype, x.device)[0])


def normalize_planar(coords: Tensor, valid: Tensor, min_extent: float = 0.0, out: Tensor | None = None) -> Tensor:
    """``normalize_strokes`` on planar coordinates, any number of views at once.

    The same arithmetic as ``normalize_strokes`` (bit-identical): per view and sketch,
    lo/hi are the min/max over valid points, the box centre moves to 0.5 and both axes
    are divided by the larger extent (1 where it is <= min_extent).

    Written in few operations (on these small tensors each torch call costs about as much
    as its arithmetic), every step exact or rounded as in the plain formula:

    - lo and -hi come from one reduction, the min over [c + hide, hide - c] (one
      ``addcmul`` with the signs +1/-1: the products are exact), hide being 0 on valid
      points and the dtype's largest value on padding;
    - with -hi the formulas take negated terms: centre = (lo - (-hi)) / 2, -scale = the
      min over axes of lo + (-hi), and (centre - c) / -scale = (c - centre) / scale
      (rounding is symmetric in sign);
    - padding is zeroed by multiplying (centre - c) by valid before the division and
      adding valid / 2 instead of 1/2: valid points get the same operations, padding gets
      +-0 / -scale + 0 = +0.

    The in-place steps only touch fresh intermediates, so autograd can follow.

    Args:
        coords: (..., 2, B, L) x and y planes (e.g. (V, 2, B, L) for V views of a batch).
        valid: (B, L) weights from ``valid_weights`` (1 valid, 0 padding).
        min_extent: extents at or below this are treated as zero.
        out: optional tensor (any strides) shaped like coords to copy the result into.

    Returns:
        The result, shaped like coords; padding entries exactly +0.0. Padding entries are
        kept out of the min and max by adding the dtype's largest value, so they must be
        finite and small next to it (a stroke batch holds zeros there).
    """
    zero, half, one, big = constants(coords.dtype, coords.device)
    neg_one, signs = _negated_constants(coords.dtype, coords.device, coords.dim() + 1)
    neg_min_extent = zero if min_extent == 0 else torch.tensor(-min_extent, dtype=coords.dtype, device=coords.device)
    hide = torch.sub(one, valid).mul_(big)  # (B, L): 0 valid, max padding
    ends = torch.addcmul(hide, coords, signs).amin(dim=-1, keepdim=True)  # (2, ..., 2, B, 1)
    lo, neg_hi = ends[0], ends[1]
    # A sketch with no valid row gets lo = -hi = max: centre 0 and -extent inf, so it is
    # moved by 0 and scaled by 1 (its rows are all padding and come back zero).
    centre = torch.sub(lo, neg_hi).mul_(half)  # (lo + hi) / 2, the same bits
    neg_scale = torch.add(lo, neg_hi).amin(dim=-3, keepdim=True)  # -(larger extent): (..., 1, B, 1)
    neg_scale = torch.where(neg_scale < neg_min_extent, neg_scale, neg_one)
    half_valid = torch.mul(valid, half)
    result = torch.sub(centre, coords).mul_(valid).div_(neg_scale).add_(half_valid)  # (c - centre) / scale + 0.5
    return result if out is None else out.copy_(result)


@lru_cache(maxsize=32)
def _negated_constants(dtype: torch.dtype, device: torch.device, dims: int) -> tuple[Tensor, Tensor]:
    """(-1 as a 0-dim tensor, the signs [+1, -1] as a (2, 1, ..., 1) tensor with dims dims),
    read-only, made once (see ``constants``)."""
    signs = torch.tensor([1.0, -1.0], dtype=dtype, device=device).view(2, *[1] * (dims - 1))
    return torch.tensor(-1.0, dtype=dtype, device=device), signs


def write_coordinates(out: Tensor, planes: Tensor) -> Tensor:
    """Write planes (V, 2, B, L) into the x and y columns of out (V * B, L, 4); return out.

    A strided copy into the interleaved rows is torch's slow path here (its innermost loop
    runs over the two columns). For float32 and float64 without a gradient to track, each
    row's (x, y) pair is viewed as one complex number instead and ``torch.complex`` writes
    the pairs in one pass: a move, bit for bit, in about two thirds of the time.

    Args:
        out: contiguous (V * B, L, 4) stroke tensor of planes' dtype; its pen columns are
            left alone.
        planes: (V, 2, B, L) x and y planes of each view.
    """
    views, _, batch, length = planes.shape
    if out.dtype in (torch.float32, torch.float64) and not (torch.is_grad_enabled() and planes.requires_grad):
        pairs = torch.view_as_complex(out.view(views, batch, length, 2, 2))[..., 0]  # (V, B, L): x + iy
        torch.complex(planes[:, 0], planes[:, 1], out=pairs)
    else:
        out.view(views, batch, length, 4)[..., :2].permute(0, 3, 1, 2).copy_(planes)
    return out


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
    coords = x[..., :2].permute(2, 0, 1).unsqueeze(0)  # (1, 2, B, L) view
    normalized = normalize_planar(coords, valid_weights(x), min_extent)
    return write_coordinates(x.clone(memory_format=torch.contiguous_format), normalized)
