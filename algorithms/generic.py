"""What the generic self-supervised methods (SimCLR, BYOL, autoencoder) share.

They train an encoder through modules of their own (projector, predictor, decoder) from a
named encoder feature (``out_feat_keys``), never through its classifier: the classifier
is a frozen one-output placeholder, kept so that every checkpoint of an architecture has
the same layers and evaluation rebuilds it the one way it always does.
"""

from __future__ import annotations

from typing import Any, ClassVar, Mapping

import torch
from torch import Tensor, nn

from .augment import RasterAugment, StrokeAugment
from .base import Algorithm

#: Width of the unused, frozen classifier of an encoder trained by a generic method.
PLACEHOLDER_OUTPUTS = 1


def check_positive(owner: str, name: str, value: Any, kind: type = int) -> Any:
    """``value`` if it is a positive ``kind`` (ints accepted for floats; bools refused)."""
    ok = (not isinstance(value, bool) and isinstance(value, (int, float) if kind is float else int)
          and value > 0)
    if not ok:
        raise ValueError(f"{owner}: {name} must be a positive {kind.__name__}, got {value!r}")
    return kind(value)


@torch.no_grad()
def feature_width(encoder: nn.Module, feature: str, sample: Tensor) -> int:
    """Numbers per sample in ``encoder``'s feature ``feature`` (flattened), from one forward
    pass of ``sample`` in eval mode (batch-norm statistics are left untouched)."""
    was_training = encoder.training
    encoder.eval()
    try:
        h = encoder(sample, out_feat_keys=feature)
    finally:
        encoder.train(was_training)
    return int(h[0].numel())


class GenericMethod(Algorithm):
    """Base of the generic methods: the feature they read, their augmentation, no logits.

    Args:
        modality: "raster" or "stroke".
        feature: the encoder layer the method's loss reads; None (default) takes the layer
            evaluation reads (the config's ``eval.feature``, else the model's default), so the
            representation that is trained is the one that is evaluated.
        augment: overrides of the modality's augmentation defaults
            (:class:`~algorithms.augment.RasterAugment` / ``StrokeAugment`` fields).
    """

    uses_logits: ClassVar[bool] = False
    metric_names: ClassVar[tuple[str, ...]] = ()

    def __init__(self, modality: str, feature: str | None = None,
                 augment: Mapping[str, Any] | None = None) -> None:
        super().__init__(modality)
        if feature is not None and not isinstance(feature, str):
            raise ValueError(f"{self.name}: feature must be a layer name or None, got {feature!r}")
        if augment is not None and not isinstance(augment, Mapping):
            raise ValueError(f"{self.name}: augment must be a mapping of settings, got {augment!r}")
        self.requested_feature = feature
        self.feature: str | None = feature  # resolved by build_networks
        cls = RasterAugment if modality == "raster" else StrokeAugment
        try:
            self.augment = cls.from_params(augment)
        except ValueError as err:
            raise ValueError(f"{self.name}: {err}") from None

    def num_outputs(self, num_classes: int) -> int:
        """The width of the frozen placeholder classifier (the method does not use it)."""
        return PLACEHOLDER_OUTPUTS

    def views(self, x: Tensor, y: Tensor | None) -> tuple[Tensor, Tensor]:
        raise NotImplementedError(f"{self.name} has no fixed views; it draws random ones in prepare()")

    def encode(self, encoder: nn.Module, x: Tensor) -> Tensor:
        """The method's feature of x, flattened to (N, D)."""
        return encoder(x, out_feat_keys=self.feature).flatten(1)

    def two_views(self, x: Tensor, draws) -> tuple[Tensor, Tensor]:
        """Two independently augmented copies of the batch (first all of view 1's numbers
        are drawn, then view 2's)."""
        self.check_input(x)
        if draws is None:
            raise ValueError(f"{self.name}: prepare needs random draws (a Draws object)")
        return self.augment(x, draws), self.augment(x, draws)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "feature": self.feature or "evaluation layer",
                "augment": self.augment.describe()}
