"""Autoencoder: the classic generic unsupervised baseline. The encoder's feature is the code;
a decoder owned by the method reconstructs the sketch from it. No augmentation, no
randomness: every epoch sees the same inputs.

- Rasters: a convolutional decoder (:class:`~algorithms.heads.RasterDecoder`) from the
  feature to a reduced raster of ``recon_size`` x ``recon_size`` (32 by default): the
  input's first channel area-averaged to that size, i.e. the ink coverage of each cell in
  [0, 1]. Loss: per-pixel binary cross-entropy between the decoder's logits and that
  coverage (a soft target), mean over pixels.
- Strokes: an MLP decoder (:class:`~algorithms.heads.StrokeDecoder`) to the L x 4 tensor.
  Coordinates by regression on the valid rows (squared error summed over x and y, mean
  over valid rows); pen states by classification of every row into three states (point
  inside a stroke, last point of a stroke, padding), mean cross-entropy over all rows,
  weighted by ``pen_weight``. Metric ``pen_acc``: the fraction of rows whose state is right.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Draws, Networks, StepOutput
from .generic import GenericMethod, check_positive, feature_width
from .heads import RasterDecoder, StrokeDecoder
from .strokes import valid_rows

#: Pen-state classes of the stroke decoder.
PEN_INSIDE, PEN_END, PEN_PADDING = 0, 1, 2


def pen_states(x: Tensor) -> Tensor:
    """(B, L) int64 pen state of each row of a stroke batch: 0 inside a stroke, 1 last point
    of a stroke, 2 padding."""
    inside = torch.full(x.shape[:2], PEN_INSIDE, dtype=torch.long, device=x.device)
    states = torch.where(x[..., 3] > 0, torch.full_like(inside, PEN_END), inside)
    return torch.where(valid_rows(x), states, torch.full_like(inside, PEN_PADDING))


def stroke_reconstruction_loss(coords: Tensor, pen_logits: Tensor, x: Tensor,
                               pen_weight: float = 1.0) -> tuple[Tensor, Tensor]:
    """(loss, pen accuracy) of a decoded stroke batch against the input.

    Args:
        coords: (B, L, 2) decoded x, y.
        pen_logits: (B, L, 3) decoded pen-state logits.
        x: (B, L, 4) the input stroke batch.
        pen_weight: weight of the pen-state term.

    Returns:
        loss: squared coordinate error summed over x, y and averaged over valid rows, plus
            ``pen_weight`` x the mean pen-state cross-entropy over all rows.
        accuracy: fraction of rows whose arg-max pen state is right (a 0-dim tensor).
    """
    valid = valid_rows(x)
    error = ((coords.float() - x[..., :2].float()) ** 2).sum(dim=-1)  # (B, L)
    coord_loss = (error * valid).sum() / valid.sum().clamp(min=1)
    states = pen_states(x)
    pen_loss = F.cross_entropy(pen_logits.float().reshape(-1, 3), states.reshape(-1))
    accuracy = (pen_logits.detach().argmax(dim=-1) == states).float().mean()
    return coord_loss + pen_weight * pen_loss, accuracy


class AutoencoderAlgorithm(GenericMethod):
    """Reconstruct the sketch from the encoder feature (module docstring).

    Args:
        recon_size: side of the reduced raster the raster decoder produces (4 * 2^k).
        decoder_width: channels of the raster decoder's first 4 x 4 map.
        decoder_hidden_dim: hidden width of the stroke decoder's MLP.
        pen_weight: weight of the stroke pen-state term.
        feature: see :class:`~algorithms.generic.GenericMethod`.
    """

    name: ClassVar[str] = "autoencoder"

    def __init__(self, modality: str, recon_size: int = 32, decoder_width: int = 128,
                 decoder_hidden_dim: int = 1024, pen_weight: float = 1.0, feature: str | None = None) -> None:
        super().__init__(modality, feature, None)
        self.recon_size = check_positive(self.name, "recon_size", recon_size)
        self.decoder_width = check_positive(self.name, "decoder_width", decoder_width)
        self.decoder_hidden_dim = check_positive(self.name, "decoder_hidden_dim", decoder_hidden_dim)
        self.pen_weight = check_positive(self.name, "pen_weight", pen_weight, float)
        self.metric_names = ("pen_acc",) if modality == "stroke" else ()
        if modality == "raster":
            RasterDecoder(1, recon_size, decoder_width)  # refuse a bad size now, not at build time

    def prepare(self, x: Tensor, y: Tensor | None, draws: Draws | None = None) -> tuple[Tensor, Tensor]:
        """(input, reconstruction target): raster target (B, 1, r, r) ink coverage; the
        stroke target is the input itself."""
        self.check_input(x)
        if self.modality == "stroke":
            return x, x
        with torch.no_grad():
            return x, F.adaptive_avg_pool2d(x[:, :1], self.recon_size)

    def build_networks(self, encoder: nn.Module, feature: str, sample: Tensor) -> Networks:
        self.feature = feature
        width = feature_width(encoder, feature, sample)
        if self.modality == "raster":
            decoder = RasterDecoder(width, self.recon_size, self.decoder_width)
        else:
            decoder = StrokeDecoder(width, sample.shape[1], self.decoder_hidden_dim)
        return Networks(self, encoder, nn.ModuleDict({"decoder": decoder.to(sample.device)}))

    def forward(self, nets: Networks, views: tuple[Tensor, Tensor]) -> StepOutput:
        x, target = views
        decoded = nets.heads["decoder"](self.encode(nets.encoder, x))
        if self.modality == "raster":
            loss = F.binary_cross_entropy_with_logits(decoded.float(), target.float())
            return StepOutput(loss, x.shape[0])
        loss, pen_acc = stroke_reconstruction_loss(*decoded, target, self.pen_weight)
        return StepOutput(loss, x.shape[0], {"pen_acc": pen_acc.item()})

    def describe(self) -> dict[str, Any]:
        out = {k: v for k, v in super().describe().items() if k != "augment"}
        if self.modality == "raster":
            out.update(recon_size=self.recon_size, decoder_width=self.decoder_width,
                       loss="per-pixel BCE against the ink coverage of a recon_size^2 raster")
        else:
            out.update(decoder_hidden_dim=self.decoder_hidden_dim, pen_weight=self.pen_weight,
                       loss="squared xy error on valid rows + pen_weight * 3-state pen cross-entropy")
        return out
