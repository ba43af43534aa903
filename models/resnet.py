"""A ResNet-style CNN with basic residual blocks (He et al. 2016), sized by parameters.

The defaults give the ResNet-18 layout. Sizes at a 224 px input with the "imagenet" stem,
or at 64 px with the "small" stem (both end at (B, 512) after the pool):

==========  =====================================  ==================  ================
name        layers                                 224 px, imagenet    64 px, small
==========  =====================================  ==================  ================
stem        7x7/2 conv, BN, ReLU, 3x3/2 max-pool   64 x 56 x 56        64 x 64 x 64
            (imagenet) | 3x3/1 conv, BN, ReLU
            (small)
layer1      blocks[0] basic blocks, stride 1       64 x 56 x 56        64 x 64 x 64
layer2      blocks[1] basic blocks, first /2       128 x 28 x 28       128 x 32 x 32
layer3      ...                                    256 x 14 x 14       256 x 16 x 16
layer4      ...                                    512 x 7 x 7         512 x 8 x 8
pool        global average pool, flatten           512                 512
classifier  Linear widths[-1] -> num_classes       num_classes         num_classes
==========  =====================================  ==================  ================
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import ClassVar

from torch import Tensor, nn

from .base import RASTER, FeatureModel, check_positive_int, check_positive_ints, init_weights

STEMS = ("imagenet", "small")


class BasicBlock(nn.Module):
    """Two 3x3 conv + BN layers with an identity (or 1x1 conv + BN) shortcut.

    Input (B, in_channels, H, W) -> output (B, out_channels, ceil(H/stride), ceil(W/stride)).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        if stride != 1 or in_channels != out_channels:
            self.shortcut: nn.Module = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        # Not in place on x: x may be a feature the caller asked for.
        return self.relu(out + self.shortcut(x))


class SketchResNet(FeatureModel):
    """ResNet with basic blocks; depth and width set by ``widths`` and ``blocks``.

    Args:
        num_classes: classifier outputs.
        widths: channels of each stage; stage i > 0 halves the resolution.
        blocks: number of basic blocks in each stage (same length as ``widths``).
        in_channels: image channels; with 3 (default), 1-channel input is repeated to 3.
        stem: ``"imagenet"`` (7x7/2 conv + 3x3/2 max-pool, /4 overall, for 224 px) or
            ``"small"`` (3x3/1 conv, no pool, for inputs of 64 px or less).

    Input (B, in_channels or 1, H, W) in [0, 1]. Features: ``"stem"``, ``"layer1"`` ...
    ``"layerN"`` (N = len(widths); (B, widths[i], h, w)), ``"pool"`` (B, widths[-1]) and
    ``"classifier"`` (B, num_classes). ``feature_names`` is set per instance when N != 4.
    """

    modality: ClassVar[str] = RASTER
    feature_names: tuple[str, ...] = ("stem", "layer1", "layer2", "layer3", "layer4", "pool", "classifier")
    default_feature: ClassVar[str] = "pool"

    def __init__(
        self,
        num_classes: int,
        widths: Sequence[int] = (64, 128, 256, 512),
        blocks: Sequence[int] = (2, 2, 2, 2),
        in_channels: int = 3,
        stem: str = "imagenet",
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        check_positive_int(owner, "num_classes", num_classes)
        widths = check_positive_ints(owner, "widths", widths)
        blocks = check_positive_ints(owner, "blocks", blocks)
        if len(widths) != len(blocks):
            raise ValueError(f"{owner}: widths and blocks must have the same length, got {widths} and {blocks}")
        self.in_channels = check_positive_int(owner, "in_channels", in_channels)
        if stem not in STEMS:
            raise ValueError(f"{owner}: stem must be one of {', '.join(STEMS)}, got {stem!r}")
        self.num_classes = num_classes
        self.widths = widths
        self.blocks = blocks
        self.stem_kind = stem

        if stem == "imagenet":
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, widths[0], 7, stride=2, padding=3, bias=False),
                nn.BatchNorm2d(widths[0]),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(3, stride=2, padding=1),
            )
        else:
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False),
                nn.BatchNorm2d(widths[0]),
                nn.ReLU(inplace=True),
            )
        self.stage_names = tuple(f"layer{i + 1}" for i in range(len(widths)))
        cin = widths[0]
        for i, (width, depth) in enumerate(zip(widths, blocks)):
            stride = 1 if i == 0 else 2
            stage = [BasicBlock(cin, width, stride)]
            stage += [BasicBlock(width, width, 1) for _ in range(depth - 1)]
            self.add_module(self.stage_names[i], nn.Sequential(*stage))
            cin = width
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(widths[-1], num_classes)
        self.feature_names = ("stem", *self.stage_names, "pool", "classifier")

        init_weights(self)
        # Zero gamma on each residual branch's last BN: every block starts as the identity
        # (its branch outputs 0), so the initial network behaves like a shallow one and the
        # signal/gradient pass through the shortcuts unscaled; this trains faster and more
        # stably, notably with large batches (Goyal et al. 2017, "Accurate, Large Minibatch SGD").
        for m in self.modules():
            if isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)

    def _features(self, x: Tensor) -> Iterator[tuple[str, Tensor]]:
        """Yield stem, layer1..layerN (B, C, h, w), pool (B, widths[-1]), classifier (B, num_classes)."""
        x = self.stem(x)
        yield "stem", x
        for name in self.stage_names:
            x = getattr(self, name)(x)
            yield name, x
        x = self.pool(x)
        yield "pool", x
        yield "classifier", self.classifier(x)
