"""VICReg (Bardes, Ponce, LeCun, ICLR 2022): variance-invariance-covariance regularisation.

Two augmented views through the encoder and an MLP *expander*; the loss pulls the two
views' embeddings together (invariance: mean squared error), keeps every embedding
dimension's standard deviation over the batch at or above 1 (variance: a hinge), and
decorrelates the dimensions (covariance: the squared off-diagonal covariances). No
negatives, no momentum target, no predictor: collapse is prevented by the variance and
covariance terms alone (a non-contrastive method of another family than BYOL's).

Settings from the paper where they transfer: coefficients 25 (invariance), 25 (variance)
and 1 (covariance); a 3-layer expander (Linear-BN-ReLU twice, then Linear), width 8192 for
its ResNet-50 (2048 here: the expander reads a 4096-d AlexNet ``fc_block`` or a TCN ``fc``,
and three 8192-wide layers would hold ~170 M weights, three times the encoder). The terms
follow the authors' implementation: the variance term averages the two views, the
covariance term sums them (:func:`algorithms.losses.vicreg_terms`).

Under torchrun the embeddings of all processes are gathered (with gradients) before the
loss, as the authors' implementation does, so the variance and covariance are the global
batch's and the loss equals one process's.
"""

from __future__ import annotations

from typing import Any, ClassVar, Mapping

import torch
from torch import Tensor, nn

from .base import Draws, Networks, StepOutput
from .generic import GenericMethod, check_positive, feature_width
from .heads import mlp_head
from .losses import vicreg_terms

#: Fewest sketches a step (the global batch) measured to train VICReg: with 2 or 4 the
#: covariance penalty (rank 1 or 3 batches) starts near 76 or 21 and the CNN's SGD diverged
#: within four steps; with 8 it descends (docs/TRAINING.md).
MIN_GLOBAL_BATCH = 8


class VICRegAlgorithm(GenericMethod):
    """Variance-invariance-covariance regularisation of the encoder feature through an
    expander.

    Metrics (the unweighted terms of :func:`~algorithms.losses.vicreg_terms`): ``inv`` (mean
    squared difference of the two views' embeddings), ``var`` (the variance hinge: 0 when
    every dimension's standard deviation is at least 1) and ``cov`` (the off-diagonal
    covariance penalty).
    """

    name: ClassVar[str] = "vicreg"
    metric_names: ClassVar[tuple[str, ...]] = ("inv", "var", "cov")
    randomized: ClassVar[bool] = True

    def __init__(self, modality: str, sim_coeff: float = 25.0, std_coeff: float = 25.0, cov_coeff: float = 1.0,
                 proj_hidden_dim: int = 2048, proj_dim: int = 2048, proj_layers: int = 3,
                 feature: str | None = None, augment: Mapping[str, Any] | None = None) -> None:
        super().__init__(modality, feature, augment)
        self.sim_coeff = check_positive(self.name, "sim_coeff", sim_coeff, float)
        self.std_coeff = check_positive(self.name, "std_coeff", std_coeff, float)
        self.cov_coeff = check_positive(self.name, "cov_coeff", cov_coeff, float)
        self.proj_hidden_dim = check_positive(self.name, "proj_hidden_dim", proj_hidden_dim)
        self.proj_dim = check_positive(self.name, "proj_dim", proj_dim)
        self.proj_layers = check_positive(self.name, "proj_layers", proj_layers)
        if self.proj_layers < 2:
            raise ValueError(f"{self.name}: proj_layers must be at least 2, got {proj_layers!r}")

    def prepare(self, x: Tensor, y: Tensor | None, draws: Draws | None = None) -> tuple[Tensor, Tensor]:
        """Two augmented views (B, ...) each."""
        return self.two_views(x, draws)

    def build_networks(self, encoder: nn.Module, feature: str, sample: Tensor) -> Networks:
        self.feature = feature
        width = feature_width(encoder, feature, sample)
        expander = mlp_head(width, self.proj_hidden_dim, self.proj_dim, layers=self.proj_layers)
        return Networks(self, encoder, nn.ModuleDict({"expander": expander}).to(sample.device))

    def loss(self, z1: Tensor, z2: Tensor) -> tuple[Tensor, dict[str, float]]:
        """The weighted loss of two (N, D) embedding batches and its three terms."""
        terms = vicreg_terms(z1, z2)
        loss = self.sim_coeff * terms[0] + self.std_coeff * terms[1] + self.cov_coeff * terms[2]
        values = torch.stack([t.detach() for t in terms]).tolist()  # one host sync for the three
        return loss, dict(zip(self.metric_names, values))

    def forward(self, nets: Networks, views: tuple[Tensor, Tensor]) -> StepOutput:
        v1, v2 = views
        n = v1.shape[0]
        z = nets.heads["expander"](self.encode(nets.encoder, torch.cat([v1, v2]))).float()
        z1, z2 = z[:n], z[n:]
        if nets.training:  # the variance and covariance of every process's batch
            z1, z2 = nets.gather(z1), nets.gather(z2)
        loss, metrics = self.loss(z1, z2)
        return StepOutput(loss, 2 * n, metrics)

    def batch_warning(self, global_batch: int) -> str | None:
        if global_batch >= MIN_GLOBAL_BATCH:
            return None
        return (f"{self.name} with {global_batch} sketches a step: with 2 or 4 its covariance penalty made the "
                f"CNN's SGD diverge (measured; docs/TRAINING.md); use {MIN_GLOBAL_BATCH} or more")

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "sim_coeff": self.sim_coeff, "std_coeff": self.std_coeff,
                "cov_coeff": self.cov_coeff, "proj_hidden_dim": self.proj_hidden_dim, "proj_dim": self.proj_dim,
                "proj_layers": self.proj_layers,
                "loss": "invariance + variance + covariance over both views of the global batch"}
