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
