"""The two published forms of the paper's stroke TCN, which disagree (PROTOCOL §3).

Both read a stroke tensor (B, L, 4) (columns x, y, p1, p2; all-zero rows are padding) as a
one-channel L x 4 image, so the first convolution of every branch spans all four columns and
slides only over time. Each branch is max-pooled over time and the branches are concatenated.

- :class:`TCNReleased`: the released code, one wide zero-padded Conv2d per window.
- :class:`TCNPaper`: the paper's table, four stacked "valid" convolutions per window.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import (
    STROKE,
    STROKE_COLUMNS,
    FeatureModel,
    check_positive_int,
    check_positive_ints,
    init_weights,
    masked_amax,
    stroke_valid_mask,
)

#: The paper's temporal windows: 2, 4, ..., 20.
DEFAULT_WINDOWS: tuple[int, ...] = tuple(range(2, 21, 2))


def _embedding(in_features: int, embed_dim: int) -> nn.Sequential:
    # No Linear bias: the batch norm's shift makes it redundant.
    return nn.Sequential(
        nn.Linear(in_features, embed_dim, bias=False),
        nn.BatchNorm1d(embed_dim),
        nn.ReLU(inplace=True),
    )


class TCNReleased(FeatureModel):
    """The released code's TCN: one Conv2d per window, max over time, FC embedding.

    For each window w: Conv2d(1 -> channels, kernel (w, 4), padding (w - 1, 0)) on
    x.unsqueeze(1) (B, 1, L, 4) -> (B, channels, L + w - 1, 1); ReLU; max over time ->
    (B, channels). Output step t reads input rows t - w + 1 ... t (rows outside 0 ... L-1
    are the conv's zero padding).

    Args:
        num_classes: classifier outputs.
        windows: temporal kernel sizes, one branch each.
        channels: filters per branch.
        embed_dim: width of the ``"fc"`` feature.
        mask_padding: False (default) reproduces the released code: the max runs over all
            L + w - 1 output steps, including steps that see only the conv's zero padding or
            the sketch's all-zero padding rows (those steps output ReLU(bias)). True takes
            the max only over output steps whose window contains at least one valid row
            (p1 + p2 > 0), so the amount of trailing padding cannot change the result; a
            sketch with no valid row gets 0 for every branch.

    Features: ``"branches"`` (B, len(windows) * channels) = (B, 320) by default,
    ``"fc"`` (B, embed_dim), ``"classifier"`` (B, num_classes).
    """

    modality: ClassVar[str] = STROKE
    feature_names: tuple[str, ...] = ("branches", "fc", "classifier")
    default_feature: ClassVar[str] = "fc"

    def __init__(
        self,
        num_classes: int,
        windows: Sequence[int] = DEFAULT_WINDOWS,
        channels: int = 32,
        embed_dim: int = 4096,
        mask_padding: bool = False,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        check_positive_int(owner, "num_classes", num_classes)
        self.windows = check_positive_ints(owner, "windows", windows)
        check_positive_int(owner, "channels", channels)
        check_positive_int(owner, "embed_dim", embed_dim)
        if not isinstance(mask_padding, bool):
            raise ValueError(f"{owner}: mask_padding must be a bool, got {mask_padding!r}")
        self.num_classes = num_classes
        self.mask_padding = mask_padding

        self.branches = nn.ModuleList(
            nn.Conv2d(1, channels, (w, STROKE_COLUMNS), padding=(w - 1, 0)) for w in self.windows
        )
        self.fc = _embedding(len(self.windows) * channels, embed_dim)
        self.classifier = nn.Linear(embed_dim, num_classes)
        init_weights(self)

    def _branch_features(self, x: Tensor) -> Tensor:
        """(B, L, 4) -> (B, len(windows) * channels)."""
        image = x.unsqueeze(1)  # (B, 1, L, 4)
        if self.mask_padding:
            valid = stroke_valid_mask(x).unsqueeze(1).to(x.dtype)  # (B, 1, L)
        pooled = []
        for w, conv in zip(self.windows, self.branches):
            h = F.relu(conv(image)).squeeze(3)  # (B, C, L + w - 1)
            if self.mask_padding:
                # Step t covers input rows t-w+1..t: a width-w running max over the valid
                # mask, zero-padded by w-1 on both sides like the conv, marks those steps.
                covers = F.max_pool1d(F.pad(valid, (w - 1, w - 1)), w, stride=1).squeeze(1) > 0
                pooled.append(masked_amax(h, covers))
            else:
                pooled.append(h.amax(dim=2))
        return torch.cat(pooled, dim=1)

    def _features(self, x: Tensor) -> Iterator[tuple[str, Tensor]]:
        """Yield branches (B, 320), fc (B, embed_dim), classifier (B, num_classes)."""
        x = self._branch_features(x)
        yield "branches", x
        x = self.fc(x)
        yield "fc", x
        yield "classifier", self.classifier(x)


class PaperBranch(nn.Module):
    """One window of the paper's TCN: Conv2d (K x 4) then Conv1d (K) layers, all "valid".

    Input (B, L, 4) -> (B, widths[-1]); needs L >= len(widths) * (K - 1) + 1.
    """

    def __init__(self, window: int, widths: Sequence[int]) -> None:
        super().__init__()
        self.window = window
        self.min_length = len(widths) * (window - 1) + 1
        self.conv_in = nn.Conv2d(1, widths[0], (window, STROKE_COLUMNS))
        self.convs = nn.ModuleList(nn.Conv1d(a, b, window) for a, b in zip(widths[:-1], widths[1:]))

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu(self.conv_in(x.unsqueeze(1))).squeeze(3)  # (B, widths[0], L - K + 1)
        for conv in self.convs:
            h = F.relu(conv(h))  # length shrinks by K - 1 per layer
        return h.amax(dim=2)


class TCNPaper(FeatureModel):
    """The paper's table TCN: per window K, Conv2d_Kx4 (16) then Conv1d_K (32, 64, 128).

    Every convolution has stride 1 and no padding, with a ReLU after it; each branch is
    max-pooled over time. Padding rows are read as content (as in the paper). At L = 100 the
    largest window (K = 20) leaves 100 - 4 * 19 = 24 steps.

    Args:
        num_classes: classifier outputs (the table draws 345, the supervised setting).
        windows: temporal kernel sizes K, one branch each.
        widths: channels of the branch's layers; the first is the K x 4 Conv2d.
        embed_dim: width of the ``"fc"`` feature.

    Input (B, L, 4) with L >= len(widths) * (max(windows) - 1) + 1 (77 by default).
    Features: ``"branches"`` (B, len(windows) * widths[-1]) = (B, 1280) by default,
    ``"fc"`` (B, embed_dim), ``"classifier"`` (B, num_classes).
    """

    modality: ClassVar[str] = STROKE
    feature_names: tuple[str, ...] = ("branches", "fc", "classifier")
    default_feature: ClassVar[str] = "fc"

    def __init__(
        self,
        num_classes: int,
        windows: Sequence[int] = DEFAULT_WINDOWS,
        widths: Sequence[int] = (16, 32, 64, 128),
        embed_dim: int = 4096,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        check_positive_int(owner, "num_classes", num_classes)
        self.windows = check_positive_ints(owner, "windows", windows)
        self.widths = check_positive_ints(owner, "widths", widths)
        check_positive_int(owner, "embed_dim", embed_dim)
        self.num_classes = num_classes

        self.branches = nn.ModuleList(PaperBranch(k, self.widths) for k in self.windows)
        self.min_length = max(b.min_length for b in self.branches)
        self.fc = _embedding(len(self.windows) * self.widths[-1], embed_dim)
        self.classifier = nn.Linear(embed_dim, num_classes)
        init_weights(self)

    def _check_input(self, x: Tensor) -> Tensor:
        x = super()._check_input(x)
        if x.shape[1] < self.min_length:
            raise ValueError(
                f"TCNPaper: sequence length {x.shape[1]} is too short; windows up to "
                f"{max(self.windows)} with {len(self.widths)} layers need L >= {self.min_length}"
            )
        return x

    def _features(self, x: Tensor) -> Iterator[tuple[str, Tensor]]:
        """Yield branches (B, 1280), fc (B, embed_dim), classifier (B, num_classes)."""
        x = torch.cat([branch(x) for branch in self.branches], dim=1)
        yield "branches", x
        x = self.fc(x)
        yield "fc", x
        yield "classifier", self.classifier(x)
