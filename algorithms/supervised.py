"""Supervised baseline: the class labels themselves are the targets."""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from .base import Algorithm


class SupervisedAlgorithm(Algorithm):
    """Plain classification over the dataset's classes; takes no parameters."""

    name: ClassVar[str] = "supervised"

    def __init__(self, modality: str) -> None:
        super().__init__(modality)

    def num_outputs(self, num_classes: int) -> int:
        """The dataset's class count (must be >= 1)."""
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"supervised: num_classes must be a positive int, got {num_classes!r}")
        return num_classes

    def views(self, x: Tensor, y: Tensor | None) -> tuple[Tensor, Tensor]:
        """Return (x, y) unchanged.

        Args:
            x: (B, C, H, W) raster batch or (B, L, 4) stroke batch.
            y: (B,) int64 class labels.

        Returns:
            (x, y), the same tensor objects.
        """
        self.check_input(x)
        if y is None:
            raise ValueError("supervised: views need class labels y, got None")
        if y.dim() != 1 or y.shape[0] != x.shape[0]:
            raise ValueError(
                f"supervised: labels must have shape ({x.shape[0]},), got {tuple(y.shape)}"
            )
        return x, y
