"""A raster network and a stroke network in one module, for training the two branches together.

The paper trains its CNN (rasters) and its TCN (stroke sequences) apart and fuses their
features only at evaluation. :class:`DualEncoder` holds one registered raster model and one
registered stroke model (any of ``models.MODELS``, each with its own constructor
parameters) so that one run can train both on the two forms of the same sketches (the
cross-modal algorithms). It is called like every model, ``model(x, out_feat_keys)``, where
``x`` is a pair ``(raster (B, C, S, S), strokes (B, L, 4))`` (``data.SketchPair`` or any
2-tuple) and the features are named ``raster.<layer>`` / ``stroke.<layer>`` after the
branch models' own layers:

    dual = DualEncoder(4, raster="alexnet", stroke="tcn")
    h_r, h_s = dual((raster, strokes), ["raster.fc_block", "stroke.fc"])
    logits_r, logits_s = dual((raster, strokes))          # None: both branches' logits

A requested feature runs only its branch (and that branch only up to the layer, as every
model does), so ``dual.raster`` / ``dual.stroke`` are also plain single-branch models
(the algorithms call them directly on their views). The state dict is the two branches'
under the prefixes ``raster.`` and ``stroke.``: the ``raster.`` entries, prefix removed, are
exactly the state dict of the raster model built alone (evaluation reads a branch that way).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from torch import Tensor, nn

from .base import RASTER, STROKE, FeatureKeys

#: The modality of a dual model's input: both forms of each sketch.
PAIRED = "paired"
#: Branch names, in the order of the input pair and of ``feature_names``.
BRANCHES: tuple[str, str] = (RASTER, STROKE)
#: The branch models when a config names none: the paper's AlexNet-BN and released TCN.
DEFAULT_MODELS: dict[str, str] = {RASTER: "alexnet", STROKE: "tcn"}


def split_feature(name: str) -> tuple[str, str]:
    """``"raster.fc_block"`` -> ``("raster", "fc_block")``; ValueError unless the prefix is a branch."""
    branch, sep, layer = name.partition(".")
    if not sep or branch not in BRANCHES or not layer:
        raise ValueError(f"DualEncoder: feature {name!r} must be 'raster.<layer>' or 'stroke.<layer>'")
    return branch, layer


class DualEncoder(nn.Module):
    """A raster model (``.raster``) and a stroke model (``.stroke``) with branch-named features.

    Args:
        num_classes: classifier outputs of *each* branch (the task's head: 4 for rotation on
            both branches; a frozen 1-output placeholder for a method that reads features).
        raster, stroke: names in ``models.MODELS`` of a raster and a stroke model.
        raster_params, stroke_params: their other constructor arguments.

    Attributes:
        feature_names: ``raster.<name>`` for every raster layer, then ``stroke.<name>``.
        default_feature: ``raster.<the raster model's default>``.
        branch_names: ``{"raster": model name, "stroke": model name}``.
        min_side: the raster model's smallest raster side.
    """

    modality: ClassVar[str] = PAIRED
    feature_names: tuple[str, ...]
    default_feature: str
    min_side: int = 1

    def __init__(self, num_classes: int, raster: str = DEFAULT_MODELS[RASTER], stroke: str = DEFAULT_MODELS[STROKE],
                 raster_params: Mapping[str, Any] | None = None,
                 stroke_params: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        from . import MODELS, build_model  # the table lives in the package (built after this module)

        for branch, name, params in ((RASTER, raster, raster_params), (STROKE, stroke, stroke_params)):
            cls = MODELS.get(name) if isinstance(name, str) else None
            if cls is None or getattr(cls, "modality", None) != branch:
                known = sorted(n for n, c in MODELS.items() if getattr(c, "modality", None) == branch)
                raise ValueError(f"{branch} must name a {branch} model ({', '.join(known)}), got {name!r}")
            if params is not None and not isinstance(params, Mapping):
                raise ValueError(f"{branch}_params must be a mapping of {name}'s parameters, got {params!r}")
        self.raster = build_model(raster, num_classes, **dict(raster_params or {}))
        self.stroke = build_model(stroke, num_classes, **dict(stroke_params or {}))
        self.branch_names = {RASTER: raster, STROKE: stroke}
        self.feature_names = tuple(f"{b}.{n}" for b in BRANCHES for n in self.branch(b).feature_names)
        self.default_feature = f"{RASTER}.{self.raster.default_feature}"
        self.min_side = self.raster.min_side

    def branch(self, name: str) -> nn.Module:
        """The raster or the stroke model."""
        if name not in BRANCHES:
            raise ValueError(f"DualEncoder: branch must be one of {list(BRANCHES)}, got {name!r}")
        return self.raster if name == RASTER else self.stroke

    def forward(self, x: Sequence[Tensor], out_feat_keys: FeatureKeys = None) -> Tensor | list[Tensor] | tuple:
        """Features of a pair of batches.

        Args:
            x: ``(raster (B, C, S, S), strokes (B, L, 4))``.
            out_feat_keys: None -> ``(raster logits, stroke logits)``; one name
                (``"raster.fc_block"``) -> that tensor; a list of names -> a list in that order.
        """
        if not isinstance(x, (tuple, list)) or len(x) != 2:
            raise ValueError(f"DualEncoder: expected a pair (raster batch, stroke batch), got {type(x).__name__}")
        inputs = dict(zip(BRANCHES, x))
        if out_feat_keys is None:
            return tuple(self.branch(b)(inputs[b]) for b in BRANCHES)
        single = isinstance(out_feat_keys, str)
        keys = [out_feat_keys] if single else list(out_feat_keys)
        if not keys:
            raise ValueError("DualEncoder: out_feat_keys is empty")
        wanted: dict[str, list[str]] = {}
        for key in keys:
            if not isinstance(key, str) or key not in self.feature_names:
                raise ValueError(f"DualEncoder: unknown feature {key!r}; valid: {', '.join(self.feature_names)}")
            branch, layer = split_feature(key)
            wanted.setdefault(branch, []).append(layer)
        found: dict[str, Tensor] = {}
        for branch, layers in wanted.items():
            for layer, feat in zip(layers, self.branch(branch)(inputs[branch], layers)):
                found[f"{branch}.{layer}"] = feat
        return found[keys[0]] if single else [found[k] for k in keys]
