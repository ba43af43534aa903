"""AlexNet with batch norm, the CNN of the released code (RotNet's ``architectures/AlexNet.py``).

Layer table (PROTOCOL §3), sizes at a 224 x 224 input:

=========  ==========================================  ===============
name       layers                                      output
=========  ==========================================  ===============
conv1      conv 64 @ 11x11 /4 pad 2, BN, ReLU           64 x 55 x 55
pool1      max 3 /2                                    64 x 27 x 27
conv2      conv 192 @ 5x5 pad 2, BN, ReLU              192 x 27 x 27
pool2      max 3 /2                                    192 x 13 x 13
conv3      conv 384 @ 3x3 pad 1, BN, ReLU              384 x 13 x 13
conv4      conv 256 @ 3x3 pad 1, BN, ReLU              256 x 13 x 13
conv5      conv 256 @ 3x3 pad 1, BN, ReLU              256 x 13 x 13
pool5      max 3 /2                                    256 x 6 x 6
fc_block   (adaptive avg 6x6), flatten, Linear 9216->4096 no bias, BN, ReLU,
           Linear 4096->4096 no bias, BN, ReLU         4096
classifier Linear 4096 -> num_classes                  num_classes
=========  ==========================================  ===============
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar

from torch import Tensor, nn

from .base import RASTER, FeatureModel, check_positive_int, init_weights

#: Spatial size of pool5 at a 224 px input, and so the grid the fc_block expects.
POOL5_GRID = 6
FC_WIDTH = 4096
#: Smallest side for which pool5 still has at least one cell:
#: pool5 needs >= 3 px in -> pool2 out >= 3 -> pool2 in >= 7 -> pool1 out >= 7 -> pool1 in
#: >= 15 -> conv1 out >= 15 -> floor((H + 2*2 - 11) / 4) >= 14 -> H >= 63.
MIN_SIDE = 63


def _conv_bn_relu(cin: int, cout: int, kernel: int, stride: int, padding: int) -> nn.Sequential:
    # No conv bias: the batch norm's shift makes it redundant.
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class AlexNetBN(FeatureModel):
    """AlexNet with batch norm after every conv and hidden fc layer.

    Args:
        num_classes: outputs of the classifier (4 for rotation, 345 for supervised QuickDraw).
        in_channels: image channels; with 3 (default), 1-channel input is repeated to 3.

    Input (B, in_channels or 1, H, W) in [0, 1], H and W >= 63; 224 is the paper's size.
    An ``AdaptiveAvgPool2d((6, 6))`` between pool5 and fc_block lets other sizes reach the
    9216-wide fc layer; at 224 px pool5 is already 6 x 6 and the pool is the identity. The
    ``"pool5"`` read-out is the max-pool output before that resize.
    """

    modality: ClassVar[str] = RASTER
    feature_names: tuple[str, ...] = (
        "conv1", "pool1", "conv2", "pool2", "conv3", "conv4", "conv5", "pool5", "fc_block", "classifier",
    )
    default_feature: ClassVar[str] = "fc_block"
    min_side: ClassVar[int] = MIN_SIDE

    def __init__(self, num_classes: int, in_channels: int = 3) -> None:
        super().__init__()
        owner = type(self).__name__
        check_positive_int(owner, "num_classes", num_classes)
        self.in_channels = check_positive_int(owner, "in_channels", in_channels)
        self.num_classes = num_classes

        self.conv1 = _conv_bn_relu(in_channels, 64, 11, 4, 2)
        self.pool1 = nn.MaxPool2d(3, 2)
        self.conv2 = _conv_bn_relu(64, 192, 5, 1, 2)
        self.pool2 = nn.MaxPool2d(3, 2)
        self.conv3 = _conv_bn_relu(192, 384, 3, 1, 1)
        self.conv4 = _conv_bn_relu(384, 256, 3, 1, 1)
        self.conv5 = _conv_bn_relu(256, 256, 3, 1, 1)
        self.pool5 = nn.MaxPool2d(3, 2)
        self.resize = nn.AdaptiveAvgPool2d((POOL5_GRID, POOL5_GRID))
        self.fc_block = nn.Sequential(
            nn.Flatten(),
            nn.Linear(256 * POOL5_GRID * POOL5_GRID, FC_WIDTH, bias=False),
            nn.BatchNorm1d(FC_WIDTH),
            nn.ReLU(inplace=True),
            nn.Linear(FC_WIDTH, FC_WIDTH, bias=False),
            nn.BatchNorm1d(FC_WIDTH),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Linear(FC_WIDTH, num_classes)
        init_weights(self)

    def _check_input(self, x: Tensor) -> Tensor:
        x = super()._check_input(x)
        if min(x.shape[-2:]) < MIN_SIDE:
            raise ValueError(f"AlexNetBN: input side must be >= {MIN_SIDE} px, got {tuple(x.shape[-2:])}")
        return x

    def _features(self, x: Tensor) -> Iterator[tuple[str, Tensor]]:
        """Yield conv1 (B,64,55,55) ... pool5 (B,256,6,6), fc_block (B,4096),
        classifier (B,num_classes); spatial sizes as at 224 px."""
        for name in self.feature_names[:8]:  # conv1 .. pool5
            x = getattr(self, name)(x)
            yield name, x
        x = self.fc_block(self.resize(x))
        yield "fc_block", x
        yield "classifier", self.classifier(x)
