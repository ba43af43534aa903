"""Pure loss and metric functions shared by every algorithm.

No state, no configuration: each function maps tensors to a tensor or a number, so the
trainer and the tests can call them directly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _check_classification_pair(logits: Tensor, targets: Tensor) -> None:
    """Raise ValueError unless logits (N, K) and targets (N,) fit together."""
    if logits.dim() != 2:
        raise ValueError(f"logits must have shape (N, K), got {tuple(logits.shape)}")
    if targets.dim() != 1 or targets.shape[0] != logits.shape[0]:
        raise ValueError(
            f"targets must have shape (N,) = ({logits.shape[0]},), got {tuple(targets.shape)}"
        )


def cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean softmax cross-entropy.

    Args:
        logits: (N, K) unnormalised class scores.
        targets: (N,) int64 class indices in [0, K).

    Returns:
        Scalar tensor: the mean over the N rows.
    """
    _check_classification_pair(logits, targets)
    return F.cross_entropy(logits, targets, reduction="mean")


@torch.no_grad()
def accuracy(logits: Tensor, targets: Tensor) -> float:
    """Fraction of rows whose arg-max class equals the target.

    Args:
        logits: (N, K) class scores, N >= 1.
        targets: (N,) int64 class indices.

    Returns:
        A float in [0, 1]. Ties in the arg-max go to the lowest index (torch.argmax).
    """
    _check_classification_pair(logits, targets)
    if logits.shape[0] == 0:
        raise ValueError("accuracy of an empty batch is undefined")
    correct = (logits.argmax(dim=1) == targets).sum().item()
    return correct / logits.shape[0]


# --------------------------------------------------------------------------- embeddings
def _pair_check(a: Tensor, b: Tensor, what: str) -> None:
    if a.dim() != 2 or a.shape != b.shape or a.shape[0] < 1:
        raise ValueError(f"{what}: expected two (N, D) tensors of the same shape with N >= 1, "
                         f"got {tuple(a.shape)} and {tuple(b.shape)}")


def _nt_xent_logits(z1: Tensor, z2: Tensor, temperature: float) -> tuple[Tensor, Tensor]:
    """Cosine similarities / temperature of the 2N rows of [z1; z2] (self-pairs masked out
    with -inf) and the index of each row's positive."""
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)  # (2N, D)
    n = z1.shape[0]
    logits = (z @ z.t()) / temperature
    self_pairs = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_pairs, float("-inf"))
    positives = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return logits, positives


def nt_xent(z1: Tensor, z2: Tensor, temperature: float) -> Tensor:
    """SimCLR's normalised temperature-scaled cross-entropy (NT-Xent, an InfoNCE).

    Row i of ``z1`` and row i of ``z2`` are two views of one sample (a positive pair). Each
    of the 2N rows is an anchor: with cosine similarities s, its loss is
    ``-log(exp(s(i, pos) / t) / sum_{k != i} exp(s(i, k) / t))`` over the other 2N - 1 rows
    (its positive and 2N - 2 negatives, both views of every other sample).

    Args:
        z1, z2: (N, D) embeddings of the two views (any scale: rows are L2-normalised here).
        temperature: t > 0.

    Returns:
        Scalar float32 tensor: the mean over the 2N anchors.
    """
    _pair_check(z1, z2, "nt_xent")
    if temperature <= 0:
        raise ValueError(f"nt_xent: temperature must be > 0, got {temperature}")
    logits, positives = _nt_xent_logits(z1, z2, temperature)
    return F.cross_entropy(logits, positives)


@torch.no_grad()
def nt_xent_top1(z1: Tensor, z2: Tensor) -> float:
    """Fraction of the 2N anchors of :func:`nt_xent` whose most similar other row is their
    positive (ties go to the lowest index)."""
    _pair_check(z1, z2, "nt_xent_top1")
    logits, positives = _nt_xent_logits(z1, z2, 1.0)
    return (logits.argmax(dim=1) == positives).float().mean().item()


def info_nce(a: Tensor, b: Tensor, temperature: float, symmetric: bool = True) -> Tensor:
    """InfoNCE between two sets of embeddings whose rows pair up (CLIP's form).

    Row i of ``a`` and row i of ``b`` are a positive pair; the other rows of the *other* set
    are the negatives (no negatives within a set, unlike :func:`nt_xent`). With cosine
    similarities s: ``l_a(i) = -log(exp(s(a_i, b_i) / t) / sum_j exp(s(a_i, b_j) / t))``.
    Symmetric: the mean of the a -> b and b -> a directions (e.g. raster -> stroke and
    stroke -> raster for two encoders of one sketch).

    Args:
        a, b: (N, D) embeddings (rows are L2-normalised here).
        temperature: t > 0.
        symmetric: average both directions (else a -> b only).

    Returns:
        Scalar float32 tensor.
    """
    _pair_check(a, b, "info_nce")
    if temperature <= 0:
        raise ValueError(f"info_nce: temperature must be > 0, got {temperature}")
    logits = F.normalize(a.float(), dim=1) @ F.normalize(b.float(), dim=1).t() / temperature
    targets = torch.arange(a.shape[0], device=a.device)
    loss = F.cross_entropy(logits, targets)
    if symmetric:
        loss = (loss + F.cross_entropy(logits.t(), targets)) / 2
    return loss


@torch.no_grad()
def info_nce_top1(a: Tensor, b: Tensor) -> float:
    """Rank-1 accuracy of :func:`info_nce`'s symmetric form: the fraction of the 2N anchors
    (each row of ``a`` against the rows of ``b``, and each row of ``b`` against those of
    ``a``) whose most similar row of the other set is their own pair (ties go to the lowest
    index)."""
    _pair_check(a, b, "info_nce_top1")
    sim = F.normalize(a.float(), dim=1) @ F.normalize(b.float(), dim=1).t()
    targets = torch.arange(a.shape[0], device=a.device)
    hits = (sim.argmax(dim=1) == targets).sum() + (sim.t().argmax(dim=1) == targets).sum()
    return hits.item() / (2 * a.shape[0])


def normalized_mse(p: Tensor, z: Tensor) -> Tensor:
    """BYOL's regression loss: ``||p/|p| - z/|z|||^2 = 2 - 2 cos(p, z)``, mean over rows.

    Args:
        p: (N, D) predictions of the online network.
        z: (N, D) targets (the caller detaches them: BYOL's target gets no gradient).

    Returns:
        Scalar float32 tensor in [0, 4]; 0 when every row of p points the way z's does.
    """
    _pair_check(p, z, "normalized_mse")
    cos = (F.normalize(p.float(), dim=1) * F.normalize(z.float(), dim=1)).sum(dim=1)
    return (2 - 2 * cos).mean()


#: VICReg's epsilon under the square root of each dimension's variance (Bardes et al. 2022).
VICREG_EPS = 1e-4


def vicreg_terms(z1: Tensor, z2: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """VICReg's three terms for two batches of embeddings whose rows pair up (two views of
    one sample), as the authors' implementation computes them (Bardes, Ponce, LeCun, ICLR
    2022):

    - invariance: the mean squared difference ``mean((z1 - z2)^2)`` over all N x D numbers;
    - variance: for each view, the mean over the D dimensions of
      ``relu(1 - sqrt(var_j + eps))`` (``var_j``: the unbiased variance of dimension j over
      the batch, eps = :data:`VICREG_EPS`), averaged over the two views;
    - covariance: for each view, the sum of the squared off-diagonal entries of the
      (D, D) covariance matrix (unbiased, of the centred batch) divided by D, summed over
      the two views.

    Args:
        z1, z2: (N, D) embeddings, N >= 2 (a variance needs two rows).

    Returns:
        Three scalar float32 tensors: (invariance, variance, covariance).
    """
    _pair_check(z1, z2, "vicreg")
    n, d = z1.shape
    if n < 2:
        raise ValueError(f"vicreg: the variance and covariance need a batch of at least 2 rows, got {n}")
    z1, z2 = z1.float(), z2.float()
    invariance = F.mse_loss(z1, z2)
    variance = z1.new_zeros(())
    covariance = z1.new_zeros(())
    diagonal = torch.eye(d, dtype=torch.bool, device=z1.device)
    for z in (z1, z2):
        z = z - z.mean(dim=0)
        std = torch.sqrt(z.var(dim=0) + VICREG_EPS)
        variance = variance + F.relu(1 - std).mean() / 2
        cov = (z.t() @ z) / (n - 1)
        covariance = covariance + cov.masked_fill(diagonal, 0.0).pow(2).sum() / d
    return invariance, variance, covariance


def vicreg_loss(z1: Tensor, z2: Tensor, sim_coeff: float = 25.0, std_coeff: float = 25.0,
                cov_coeff: float = 1.0) -> Tensor:
    """VICReg's loss: ``sim_coeff * invariance + std_coeff * variance + cov_coeff *
    covariance`` of :func:`vicreg_terms` (the paper's coefficients 25, 25 and 1 by default).
    Scalar float32 tensor."""
    invariance, variance, covariance = vicreg_terms(z1, z2)
    return sim_coeff * invariance + std_coeff * variance + cov_coeff * covariance
