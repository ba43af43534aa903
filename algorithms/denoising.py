"""Denoising autoencoder with masking noise: reconstruct the whole sketch from a masked copy.

The generic masked-modelling baseline (Vincent et al., "Extracting and composing robust
features with denoising autoencoders", ICML 2008; the masking corruption that masked image
and masked stroke modelling later made central). It is the :mod:`autoencoder` with one
change: the encoder sees a corrupted sketch, the decoder must still produce the clean one,
so the code has to infer what was hidden from what is left. Decoders, targets and losses
are the autoencoder's; evaluation reads the encoder on clean sketches, as for every method.

- Rasters: the image is cut into ``mask_grid`` x ``mask_grid`` cells and each cell is blanked
  (set to 0, the background) with probability ``mask_ratio`` (default 0.5: sketches are
  mostly background, so a cell holds little ink). Target: the clean raster's ink coverage.
- Strokes: each valid row (a drawn point) has its x and y set to 0 with probability
  ``mask_ratio`` (default 0.15, the masking rate of Sketch-BERT, Lin et al. CVPR 2020); its
  pen columns are kept, so the model knows where points are missing and must place them.
  Padding rows are never touched. Target: the clean 100 x 4 tensor. Metric ``masked_err``:
  the squared xy error on the masked rows alone (what the masking adds to the task).

The masks come from the batch's :class:`~algorithms.base.Draws`, so a resumed run and W
processes under torchrun mask each sketch as one uninterrupted process would.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from .autoencoder import AutoencoderAlgorithm, stroke_reconstruction_loss
from .base import Draws, Networks, StepOutput
from .generic import check_positive
from .strokes import valid_rows

#: Default masking probability per modality (module docstring).
DEFAULT_MASK_RATIO = {"raster": 0.5, "stroke": 0.15}


def mask_raster_cells(x: Tensor, keep: Tensor) -> Tensor:
    """``x`` (B, C, S, S) with every cell whose entry of ``keep`` (B, g, g) is false set to 0.

    Cell (i, j) covers rows ``floor(i S / g)`` to ``floor((i + 1) S / g) - 1`` (and the same
    for columns), so the cells tile the image even when g does not divide S."""
    size, grid = x.shape[-1], keep.shape[-1]
    cell = torch.arange(size, device=x.device) * grid // size  # which cell each row/column is in
    pixel_keep = keep[:, cell][:, :, cell]  # (B, S, S)
    return x * pixel_keep.unsqueeze(1).to(x.dtype)


def mask_stroke_points(x: Tensor, masked: Tensor) -> Tensor:
    """``x`` (B, L, 4) with x and y set to 0 on the rows where ``masked`` (B, L) is true
    (pen columns unchanged)."""
    out = x.clone()
    out[..., :2] = out[..., :2].masked_fill(masked.unsqueeze(-1), 0.0)
    return out


class DenoisingAutoencoderAlgorithm(AutoencoderAlgorithm):
    """Reconstruct the clean sketch from a masked copy (module docstring).

    Args:
        mask_ratio: probability that a raster cell or a stroke point is masked, in (0, 1);
            None takes the modality's default (:data:`DEFAULT_MASK_RATIO`).
        mask_grid: cells per side of the raster mask (rasters only).
        recon_size, decoder_width, decoder_hidden_dim, pen_weight, feature: as
            :class:`~algorithms.autoencoder.AutoencoderAlgorithm`.
    """

    name: ClassVar[str] = "denoising"

    def __init__(self, modality: str, mask_ratio: float | None = None, mask_grid: int = 8,
                 recon_size: int = 32, decoder_width: int = 128, decoder_hidden_dim: int = 1024,
                 pen_weight: float = 1.0, feature: str | None = None) -> None:
        super().__init__(modality, recon_size, decoder_width, decoder_hidden_dim, pen_weight, feature)
        ratio = DEFAULT_MASK_RATIO[modality] if mask_ratio is None else mask_ratio
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 < ratio < 1:
            raise ValueError(f"{self.name}: mask_ratio must be a number in (0, 1), got {mask_ratio!r}")
        self.mask_ratio = float(ratio)
        self.mask_grid = check_positive(self.name, "mask_grid", mask_grid)
        self.metric_names = ("pen_acc", "masked_err") if modality == "stroke" else ()

    def corrupt(self, x: Tensor, draws: Draws) -> tuple[Tensor, Tensor]:
        """(masked copy of x, mask): the mask is (B, g, g) cells kept for rasters and (B, L)
        rows masked for strokes. One uniform number per cell or row, in that order."""
        n = x.shape[0]
        if self.modality == "raster":
            keep = draws.uniform(n, self.mask_grid, self.mask_grid) >= self.mask_ratio
            return mask_raster_cells(x, keep), keep
        masked = (draws.uniform(n, x.shape[1]) < self.mask_ratio) & valid_rows(x)
        return mask_stroke_points(x, masked), masked

    def prepare(self, x: Tensor, y: Tensor | None, draws: Draws | None = None) -> tuple[Tensor, ...]:
        """(masked input, reconstruction target[, mask]): the target is the autoencoder's,
        from the clean batch; strokes also carry the mask for the ``masked_err`` metric."""
        clean, target = super().prepare(x, y)
        if draws is None:
            raise ValueError(f"{self.name}: prepare needs random draws (a Draws object)")
        with torch.no_grad():
            corrupted, mask = self.corrupt(clean, draws)
        return (corrupted, target) if self.modality == "raster" else (corrupted, target, mask)

    def forward(self, nets: Networks, views: tuple[Tensor, ...]) -> StepOutput:
        if self.modality == "raster":
            return super().forward(nets, views)
        x, target, masked = views
        coords, pen_logits = nets.heads["decoder"](self.encode(nets.encoder, x))
        loss, pen_acc = stroke_reconstruction_loss(coords, pen_logits, target, self.pen_weight)
        with torch.no_grad():
            error = ((coords.float() - target[..., :2].float()) ** 2).sum(dim=-1)
            masked_err = (error * masked).sum() / masked.sum().clamp(min=1)
        return StepOutput(loss, x.shape[0], {"pen_acc": pen_acc.item(), "masked_err": masked_err.item()})

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        if self.modality == "raster":
            out.update(mask=f"{self.mask_grid} x {self.mask_grid} cells, each blanked with p = {self.mask_ratio}")
        else:
            out.update(mask=f"x, y of each drawn point zeroed with p = {self.mask_ratio} (pen kept)")
        return out


__all__ = ["DEFAULT_MASK_RATIO", "DenoisingAutoencoderAlgorithm", "mask_raster_cells", "mask_stroke_points"]
