"""SimCLR (Chen et al., ICML 2020): two augmented views, an MLP projector, NT-Xent.

Settings from the paper where they transfer: a 2-layer projector (hidden width = the
representation's in the paper: 2048 for ResNet-50; 2048 here too, half of the 4096-d
AlexNet ``fc_block`` / TCN ``fc``) to 128 dimensions, with batch norm; the views of all
other sketches of the batch are the negatives. Temperature 0.5, the paper's value for
small batches (its CIFAR-10 runs; 0.1 with batches of 4096 on ImageNet). Colour distortion
and blur do not apply to line drawings: see :mod:`algorithms.augment`.

Under torchrun the projections of all processes are gathered (with gradients) before the
loss, so the negatives are the global batch's and the loss equals one process's.
"""

from __future__ import annotations

from typing import Any, ClassVar, Mapping

import torch
from torch import Tensor, nn

from .base import Draws, Networks, StepOutput
from .generic import GenericMethod, check_positive, feature_width
from .heads import mlp_head
from .losses import nt_xent, nt_xent_top1


class SimCLRAlgorithm(GenericMethod):
    """Contrastive learning of the encoder feature through a projector.

    Metric ``top1``: how often an anchor's positive is the most similar of the other 2N - 1
    views (the contrastive accuracy).
    """

    name: ClassVar[str] = "simclr"
    metric_names: ClassVar[tuple[str, ...]] = ("top1",)
    randomized: ClassVar[bool] = True

    def __init__(self, modality: str, temperature: float = 0.5, proj_hidden_dim: int = 2048,
                 proj_dim: int = 128, feature: str | None = None,
                 augment: Mapping[str, Any] | None = None) -> None:
        super().__init__(modality, feature, augment)
        self.temperature = check_positive(self.name, "temperature", temperature, float)
        self.proj_hidden_dim = check_positive(self.name, "proj_hidden_dim", proj_hidden_dim)
        self.proj_dim = check_positive(self.name, "proj_dim", proj_dim)

    def prepare(self, x: Tensor, y: Tensor | None, draws: Draws | None = None) -> tuple[Tensor, Tensor]:
        """Two augmented views (B, ...) each."""
        return self.two_views(x, draws)

    def build_networks(self, encoder: nn.Module, feature: str, sample: Tensor) -> Networks:
        self.feature = feature
        width = feature_width(encoder, feature, sample)
        heads = nn.ModuleDict({"projector": mlp_head(width, self.proj_hidden_dim, self.proj_dim)})
        return Networks(self, encoder, heads.to(sample.device))

    def forward(self, nets: Networks, views: tuple[Tensor, Tensor]) -> StepOutput:
        v1, v2 = views
        n = v1.shape[0]
        z = nets.heads["projector"](self.encode(nets.encoder, torch.cat([v1, v2]))).float()
        z1, z2 = z[:n], z[n:]
        if nets.training:  # negatives from every process's batch
            z1, z2 = nets.gather(z1), nets.gather(z2)
        loss = nt_xent(z1, z2, self.temperature)
        return StepOutput(loss, 2 * n, {"top1": nt_xent_top1(z1.detach(), z2.detach())})

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "temperature": self.temperature, "proj_hidden_dim": self.proj_hidden_dim,
                "proj_dim": self.proj_dim, "loss": "NT-Xent over both views of the global batch"}
