"""A dilated temporal convolutional network over stroke sequences (the brief's sequence encoder).

Residual blocks of dilated 1-D convolutions in the style of Bai et al. 2018 ("An Empirical
Evaluation of Generic Convolutional and Recurrent Networks"), but non-causal: the whole
sketch is available at once, so each step may look both ways.

Padding (rows with p1 + p2 == 0) is kept out of everything a valid step computes:

- activations at padding steps are set to zero after the stem, after every ReLU inside a
  block and after every block, so a convolution reading past the end of the sketch sees
  exactly what the convolution's own zero padding would give;
- the batch norms inside the blocks compute their batch statistics over valid steps only
  (:class:`MaskedBatchNorm1d`);
- the pool takes the max and the mean over valid steps only.

Consequently the features of a sketch do not depend on how many padding rows follow it,
in train and in eval mode (up to float rounding in the batch statistics).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import (
    STROKE,
    STROKE_COLUMNS,
    FeatureModel,
    check_positive_int,
    init_weights,
    masked_amax,
    stroke_valid_mask,
)


def receptive_field(kernel_size: int, num_blocks: int) -> int:
    """Input steps seen by one output step of the last block of :class:`DilatedTCN`.

    The stem is 1 x 1; block i (i = 0 .. N-1) has two convolutions of size k with dilation
    2**i, each widening the field by (k - 1) * 2**i. Hence
    ``1 + 2 * (k - 1) * (2**N - 1)``: 253 steps for k = 3, N = 6, i.e. 126 either side,
    more than the 100 steps of a sketch.
    """
    return 1 + 2 * (kernel_size - 1) * (2**num_blocks - 1)


class MaskedBatchNorm1d(nn.Module):
    """Batch norm over (B, C, L) whose batch statistics use only the masked-in steps.

    Same parameters, buffers and update rule as ``nn.BatchNorm1d`` (affine, running
    statistics with ``momentum``, unbiased running variance). If a training batch has no
    valid step at all, the running statistics are used and left unchanged.

    Not a subclass of torch's ``_BatchNorm``: its forward needs the mask, so it must not be
    swapped for ``SyncBatchNorm`` by ``convert_sync_batchnorm``.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """Normalise ``x`` (B, C, L) with statistics over the steps where ``mask`` (B, L) is True.

        Returns (B, C, L); values at masked-out steps are normalised too but meaningless.
        """
        # Statistics in float32, as torch's batch norm does under autocast.
        xf = x.float()
        if self.training:
            m = mask.unsqueeze(1).float()  # (B, 1, L)
            count = m.sum()
            n = count.clamp(min=1.0)
            mean = (xf * m).sum(dim=(0, 2)) / n
            var = ((xf - mean[:, None]).square() * m).sum(dim=(0, 2)) / n
            # torch.where rather than `if count > 0` avoids a host-device sync per layer.
            has = count > 0
            with torch.no_grad():
                unbiased = var * n / (n - 1.0).clamp(min=1.0)
                self.running_mean.copy_(torch.where(has, torch.lerp(self.running_mean, mean, self.momentum), self.running_mean))
                self.running_var.copy_(torch.where(has, torch.lerp(self.running_var, unbiased, self.momentum), self.running_var))
                self.num_batches_tracked.add_(1)
            mean = torch.where(has, mean, self.running_mean)
            var = torch.where(has, var, self.running_var)
        else:
            mean, var = self.running_mean, self.running_var
        scale = self.weight * torch.rsqrt(var + self.eps)
        y = (xf - mean[:, None]) * scale[:, None] + self.bias[:, None]
        return y.to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"


class DilatedBlock(nn.Module):
    """conv(k, dilation d) -> BN -> ReLU -> conv(k, d) -> BN, + input, ReLU; length kept.

    Input (B, C, L) (zero at padding steps) and mask (B, L) bool -> (B, C, L), zero at
    padding steps.
    """

    def __init__(self, channels: int, kernel_size: int, dilation: int) -> None:
        super().__init__()
        padding = dilation * (kernel_size - 1) // 2  # kernel_size is odd: length is kept
        self.conv1 = nn.Conv1d(channels, channels, kernel_size, padding=padding, dilation=dilation, bias=False)
        self.bn1 = MaskedBatchNorm1d(channels)
        self.conv2 = nn.Conv1d(channels, channels, kernel_size, padding=padding, dilation=dilation, bias=False)
        self.bn2 = MaskedBatchNorm1d(channels)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        keep = mask.unsqueeze(1).to(x.dtype)  # (B, 1, L)
        h = F.relu(self.bn1(self.conv1(x), mask)) * keep
        h = self.bn2(self.conv2(h), mask)
        return F.relu(h + x) * keep


class DilatedTCN(FeatureModel):
    """Residual dilated TCN: 1x1 stem, N dilated blocks, masked max+mean pool, FC embedding.

    Block i (1-based name ``"block{i}"``) uses dilation 2**(i-1). The receptive field of one
    step of the last block is ``1 + 2 * (kernel_size - 1) * (2**num_blocks - 1)`` steps
    (:func:`receptive_field`): 253 with the defaults (k = 3, N = 6), so every step sees the
    whole 100-step sketch.

    Args:
        num_classes: classifier outputs.
        channels: width C of the stem and the blocks.
        num_blocks: number N of residual blocks.
        kernel_size: odd temporal kernel size of the block convolutions.
        embed_dim: width of the ``"fc"`` feature.

    Input (B, L, 4) (x, y, p1, p2; rows with p1 + p2 == 0 are padding, anywhere).
    Features: ``"stem"`` and ``"block1"`` ... ``"blockN"`` (B, C, L), zero at padding steps;
    ``"pool"`` (B, 2C): max over valid steps, then mean over valid steps (all zero for a
    sketch without valid rows); ``"fc"`` (B, embed_dim); ``"classifier"`` (B, num_classes).
    ``feature_names`` is set per instance when N != 6.
    """

    modality: ClassVar[str] = STROKE
    feature_names: tuple[str, ...] = (
        "stem", "block1", "block2", "block3", "block4", "block5", "block6", "pool", "fc", "classifier",
    )
    default_feature: ClassVar[str] = "fc"

    def __init__(
        self,
        num_classes: int,
        channels: int = 128,
        num_blocks: int = 6,
        kernel_size: int = 3,
        embed_dim: int = 4096,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        check_positive_int(owner, "num_classes", num_classes)
        check_positive_int(owner, "channels", channels)
        check_positive_int(owner, "num_blocks", num_blocks)
        check_positive_int(owner, "kernel_size", kernel_size)
        if kernel_size % 2 == 0:
            raise ValueError(f"{owner}: kernel_size must be odd to keep the length, got {kernel_size}")
        check_positive_int(owner, "embed_dim", embed_dim)
        self.num_classes = num_classes
        self.kernel_size = kernel_size
        self.num_blocks = num_blocks

        self.stem = nn.Conv1d(STROKE_COLUMNS, channels, 1)
        self.block_names = tuple(f"block{i + 1}" for i in range(num_blocks))
        for i, name in enumerate(self.block_names):
            self.add_module(name, DilatedBlock(channels, kernel_size, 2**i))
        self.fc = nn.Sequential(
            nn.Linear(2 * channels, embed_dim, bias=False),
            nn.BatchNorm1d(embed_dim),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Linear(embed_dim, num_classes)
        self.feature_names = ("stem", *self.block_names, "pool", "fc", "classifier")
        # No zero-gamma trick here (unlike SketchResNet): with six blocks the plain init
        # trains fine, and it keeps every block's receptive field live from the start.
        init_weights(self)

    def _features(self, x: Tensor) -> Iterator[tuple[str, Tensor]]:
        """Yield stem, block1..blockN (B, C, L), pool (B, 2C), fc (B, embed_dim), classifier."""
        valid = stroke_valid_mask(x)  # (B, L)
        h = self.stem(x.transpose(1, 2))  # (B, C, L)
        h = h * valid.unsqueeze(1).to(h.dtype)  # the stem's bias would make padding non-zero
        yield "stem", h
        for name in self.block_names:
            h = getattr(self, name)(h, valid)
            yield name, h
        count = valid.sum(dim=1, keepdim=True).to(h.dtype)  # (B, 1)
        mean = h.sum(dim=2) / count.clamp(min=1.0)  # h is zero at padding steps
        x = torch.cat([masked_amax(h, valid), mean], dim=1)
        yield "pool", x
        x = self.fc(x)
        yield "fc", x
        yield "classifier", self.classifier(x)
