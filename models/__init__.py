"""Networks for raster sketches (CNNs) and stroke sequences (TCNs), and a name -> class table.

Every model has the class attributes ``modality`` (``"raster"``, ``"stroke"``, or
``"paired"`` for :class:`DualEncoder`, which holds one of each),
``feature_names`` (readable layers in forward order, last ``"classifier"``) and
``default_feature`` (the layer used for retrieval), takes ``num_classes`` as its first
constructor argument, and is called as ``model(x, out_feat_keys=None)``: None gives the logits
(B, num_classes), a name gives that feature, a list of names gives a list of features.

This package is a leaf: it imports nothing from the rest of the project.
"""

from __future__ import annotations

import inspect

from torch import nn

from .alexnet import AlexNetBN
from .base import FeatureModel
from .dilated_tcn import DilatedTCN
from .dual import BRANCHES, DEFAULT_MODELS, PAIRED, DualEncoder, split_feature
from .resnet import SketchResNet
from .tcn import TCNPaper, TCNReleased

MODELS: dict[str, type[nn.Module]] = {
    "alexnet": AlexNetBN,
    "resnet": SketchResNet,
    "tcn": TCNReleased,
    "tcn_paper": TCNPaper,
    "tcn_dilated": DilatedTCN,
    # A raster and a stroke model of this table in one module (modality "paired").
    "dual": DualEncoder,
}


def build_model(name: str, num_classes: int, **params: object) -> nn.Module:
    """Build the model registered as ``name``.

    Args:
        name: a key of :data:`MODELS`.
        num_classes: classifier outputs.
        **params: the class's other constructor arguments.

    Raises:
        ValueError: unknown ``name``, an unknown parameter, or a bad parameter value; the
            message names the model and the parameter.
    """
    try:
        cls = MODELS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown model {name!r}; known: {', '.join(MODELS)}") from None
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "num_classes")]
    for key in params:
        if key not in accepted:
            raise ValueError(
                f"model {name!r}: unknown parameter {key!r}; accepted: {', '.join(accepted) or 'none'}"
            )
    try:
        return cls(num_classes, **params)
    except (TypeError, ValueError) as err:
        # Constructors name the bad parameter; a TypeError from deeper down is a bad value too.
        raise ValueError(f"model {name!r}: {err}") from err


__all__ = [
    "MODELS",
    "build_model",
    "FeatureModel",
    "AlexNetBN",
    "SketchResNet",
    "TCNReleased",
    "TCNPaper",
    "DilatedTCN",
    "DualEncoder",
    "BRANCHES",
    "DEFAULT_MODELS",
    "PAIRED",
    "split_feature",
]
