"""BYOL (Grill et al., NeurIPS 2020): an online encoder + projector + predictor regresses
the projection of a momentum (EMA) target network, on two augmented views.

Settings from the paper: projector and predictor are 2-layer MLPs with batch norm (hidden
4096, output 256); the loss is ``2 - 2 cos`` between the online prediction of one view and
the target projection of the other, summed over both directions; the target's weights
follow ``xi <- tau xi + (1 - tau) theta`` after every step, with tau rising from
``momentum`` (0.996) to 1 on a cosine schedule over the run's steps. The target gets no
gradient and is not optimised; its batch-norm statistics come from its own forward passes.
"""

from __future__ import annotations

import copy
import math
from typing import Any, ClassVar, Mapping

import torch
from torch import Tensor, nn

from .base import Draws, Networks, StepOutput
from .generic import GenericMethod, check_positive, feature_width
from .heads import mlp_head
from .losses import normalized_mse


def cosine_momentum(base: float, step: int, total_steps: int) -> float:
    """BYOL's target momentum at step ``step`` (0-based) of ``total_steps``:
    ``1 - (1 - base) * (cos(pi * step / total_steps) + 1) / 2`` (base at step 0, 1 at the end)."""
    if total_steps <= 0:
        return 1.0
    progress = min(max(step / total_steps, 0.0), 1.0)
    return 1.0 - (1.0 - base) * (math.cos(math.pi * progress) + 1.0) / 2.0


@torch.no_grad()
def ema_update(target: list[Tensor], online: list[Tensor], tau: float) -> None:
    """``t <- tau * t + (1 - tau) * o`` for each pair, in place."""
    if len(target) != len(online):
        raise ValueError(f"ema_update: {len(target)} target tensors but {len(online)} online ones")
    torch._foreach_mul_(target, tau)
    torch._foreach_add_(target, online, alpha=1.0 - tau)


class BYOLAlgorithm(GenericMethod):
    """Bootstrap your own latent. Metric ``cos``: mean cosine similarity between the online
    predictions and the target projections (1 - loss / 4)."""

    name: ClassVar[str] = "byol"
    metric_names: ClassVar[tuple[str, ...]] = ("cos",)
    randomized: ClassVar[bool] = True

    def __init__(self, modality: str, proj_hidden_dim: int = 4096, proj_dim: int = 256,
                 pred_hidden_dim: int = 4096, momentum: float = 0.996, feature: str | None = None,
                 augment: Mapping[str, Any] | None = None) -> None:
        super().__init__(modality, feature, augment)
        self.proj_hidden_dim = check_positive(self.name, "proj_hidden_dim", proj_hidden_dim)
        self.proj_dim = check_positive(self.name, "proj_dim", proj_dim)
        self.pred_hidden_dim = check_positive(self.name, "pred_hidden_dim", pred_hidden_dim)
        if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not 0 <= momentum <= 1:
            raise ValueError(f"{self.name}: momentum must be a number in [0, 1], got {momentum!r}")
        self.momentum = float(momentum)

    def prepare(self, x: Tensor, y: Tensor | None, draws: Draws | None = None) -> tuple[Tensor, Tensor]:
        return self.two_views(x, draws)

    def build_networks(self, encoder: nn.Module, feature: str, sample: Tensor) -> Networks:
        self.feature = feature
        width = feature_width(encoder, feature, sample)
        projector = mlp_head(width, self.proj_hidden_dim, self.proj_dim).to(sample.device)
        predictor = mlp_head(self.proj_dim, self.pred_hidden_dim, self.proj_dim).to(sample.device)
        heads = nn.ModuleDict({"projector": projector, "predictor": predictor})
        # The target starts as a copy of the online encoder and projector.
        target = nn.ModuleDict({"encoder": copy.deepcopy(encoder), "projector": copy.deepcopy(projector)})
        return Networks(self, encoder, heads, target)

    @staticmethod
    def online_and_target(nets: Networks) -> tuple[list[Tensor], list[Tensor]]:
        """The online parameters (encoder, projector) and their target copies, paired up."""
        online = list(nets.encoder.parameters()) + list(nets.heads["projector"].parameters())
        target = list(nets.target["encoder"].parameters()) + list(nets.target["projector"].parameters())
        return online, target

    def forward(self, nets: Networks, views: tuple[Tensor, Tensor]) -> StepOutput:
        v1, v2 = views
        n = v1.shape[0]
        both = torch.cat([v1, v2])
        p = nets.heads["predictor"](nets.heads["projector"](self.encode(nets.encoder, both))).float()
        with torch.no_grad():
            z = nets.target["projector"](self.encode(nets.target["encoder"], both)).float()
        loss = normalized_mse(p[:n], z[n:]) + normalized_mse(p[n:], z[:n])
        return StepOutput(loss, 2 * n, {"cos": 1.0 - loss.item() / 4.0})

    def after_step(self, nets: Networks, step: int, total_steps: int) -> None:
        """The target's EMA update with this step's momentum."""
        online, target = self.online_and_target(nets)
        ema_update(target, [p.detach() for p in online], cosine_momentum(self.momentum, step, total_steps))

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "proj_hidden_dim": self.proj_hidden_dim, "proj_dim": self.proj_dim,
                "pred_hidden_dim": self.pred_hidden_dim, "momentum": self.momentum,
                "momentum_schedule": "cosine from momentum to 1 over the run's steps"}
