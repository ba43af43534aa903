"""Modules the generic self-supervised methods own: MLP heads and the autoencoders' decoders.

They belong to the method, not to the encoder (solo-learn's layout): a checkpoint keeps
them apart from the encoder (``state["algorithm"]["heads"]``) and evaluation never builds
them. PyTorch's default initialisation throughout.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def mlp_head(in_dim: int, hidden_dim: int, out_dim: int, layers: int = 2) -> nn.Sequential:
    """``layers - 1`` blocks of Linear -> BatchNorm1d -> ReLU (width ``hidden_dim``), then a
    Linear to ``out_dim``: with 2 layers SimCLR's projector and BYOL's projector and
    predictor, with 3 VICReg's expander. (N, in_dim) -> (N, out_dim)."""
    if isinstance(layers, bool) or not isinstance(layers, int) or layers < 2:
        raise ValueError(f"mlp_head: layers must be an int >= 2, got {layers!r}")
    blocks: list[nn.Module] = []
    width = in_dim
    for _ in range(layers - 1):
        blocks += [nn.Linear(width, hidden_dim), nn.BatchNorm1d(hidden_dim), nn.ReLU(inplace=True)]
        width = hidden_dim
    return nn.Sequential(*blocks, nn.Linear(width, out_dim))


class RasterDecoder(nn.Module):
    """Flat feature (N, D) -> logits of a reduced raster (N, 1, size, size).

    A linear layer to a ``width`` x 4 x 4 map, then transposed convolutions (kernel 4,
    stride 2, each followed by batch norm and ReLU, halving the channels) up to size x size,
    and a 3 x 3 convolution to one channel of ink logits (DCGAN's generator shape).

    Args:
        in_dim: feature width D.
        size: output side; 4 * 2^k with k >= 1 (8, 16, 32, 64, ...).
        width: channels of the 4 x 4 map.
    """

    def __init__(self, in_dim: int, size: int = 32, width: int = 128) -> None:
        super().__init__()
        ups = math.log2(size / 4) if size >= 8 else 0
        if size < 8 or ups != int(ups):
            raise ValueError(f"autoencoder: recon_size must be 4 * 2^k >= 8 (8, 16, 32, 64, ...), got {size}")
        if width < 2 ** int(ups):
            raise ValueError(f"autoencoder: decoder_width {width} is too narrow for {int(ups)} upsamplings")
        self.size, self.width = size, width
        self.fc = nn.Sequential(nn.Linear(in_dim, width * 16), nn.BatchNorm1d(width * 16), nn.ReLU(inplace=True))
        layers: list[nn.Module] = []
        channels = width
        for _ in range(int(ups)):
            layers += [nn.ConvTranspose2d(channels, channels // 2, 4, stride=2, padding=1, bias=False),
                       nn.BatchNorm2d(channels // 2), nn.ReLU(inplace=True)]
            channels //= 2
        layers.append(nn.Conv2d(channels, 1, 3, padding=1))
        self.up = nn.Sequential(*layers)

    def forward(self, h: Tensor) -> Tensor:
        return self.up(self.fc(h).view(h.shape[0], self.width, 4, 4))


class StrokeDecoder(nn.Module):
    """Flat feature (N, D) -> a stroke sequence's (N, L, 2) coordinates and (N, L, 3) pen logits.

    An MLP (Linear -> BatchNorm1d -> ReLU -> Linear) to L x 5 numbers per sketch: x, y
    (regressed, through a sigmoid into [0, 1]) and three pen-state logits per row (point
    inside a stroke, last point of a stroke, padding: sketch-rnn's three states).
    """

    def __init__(self, in_dim: int, length: int, hidden_dim: int = 1024) -> None:
        super().__init__()
        self.length = length
        self.net = mlp_head(in_dim, hidden_dim, length * 5)

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor]:
        out = self.net(h).view(h.shape[0], self.length, 5)
        return torch.sigmoid(out[..., :2]), out[..., 2:]
