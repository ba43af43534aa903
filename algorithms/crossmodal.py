"""Cross-modal pretraining: a raster encoder and a stroke encoder trained together on the two
forms of the same sketches.

Every Quick, Draw! sketch comes as a drawing (raster) and as the pen movements that made it
(stroke sequence): two views of one content with different inductive biases, and no
hand-designed augmentation needed to make them differ. The paper trains its CNN and TCN
apart and fuses them only at evaluation; these algorithms train them at once (CMC and CLIP's
symmetric InfoNCE; Bhunia et al., CVPR 2021, pair vector and raster sketches too).

Both read a paired batch ``(raster (B, C, S, S), strokes (B, L, 4))`` and train a two-branch
encoder called as ``encoder((raster, strokes), ["raster.<layer>", "stroke.<layer>"])``
(``models.DualEncoder``; duck-typed here, this package imports no other):

- :class:`CrossModalContrastive` (``crossmodal_contrastive``): each branch's feature through
  its own projector into one shared space; symmetric InfoNCE
  (:func:`algorithms.losses.info_nce`): the raster and the strokes of one sketch are the
  positive pair, the other sketches of the (global) batch in the other modality the
  negatives. Temperature **fixed** (default 0.1), not learned: a learnable one (CLIP) is one
  more moving part whose value drifts with batch size and run length, and a fixed one keeps
  the loss a pure function that tests can compute by hand; 0.1 is the usual value of
  cross-modal contrastive methods at small batches (CMC: 0.07; CLIP learns its way to ~0.01
  with batches of 32k). Optional augmentations per side (``algorithms.augment``); none by
  default: the other modality is the "augmentation".
- :class:`CrossModalPretext` (``crossmodal_pretext``): the paper's rotation (or deformation)
  task on both branches at once, each with its own classifier, plus ``cross_weight`` times
  the same symmetric InfoNCE between the two branches' projected features of the same
  transformed sketch. With ``cross_weight=0`` each branch gets exactly the gradient its
  separate paper run would get (the loss is the sum of the two pretext losses).
"""

from __future__ import annotations

from typing import Any, ClassVar, Mapping

import torch
from torch import Tensor, nn

from .augment import RasterAugment, StrokeAugment
from .base import PAIRED, Algorithm, Draws, Networks, StepOutput
from .deformation import DeformationAlgorithm
from .generic import PLACEHOLDER_OUTPUTS, check_positive, feature_width
from .heads import mlp_head
from .losses import accuracy, info_nce, info_nce_top1
from .rotation import RotationAlgorithm

#: Branches of a paired batch, in order.
BRANCHES: tuple[str, str] = ("raster", "stroke")
#: The paper's tasks that ``crossmodal_pretext`` runs on both branches.
PRETEXT_TASKS = {RotationAlgorithm.name: RotationAlgorithm, DeformationAlgorithm.name: DeformationAlgorithm}


def check_pair(owner: str, x: Any) -> tuple[Tensor, Tensor]:
    """``x`` as (raster (B, C, H, W), strokes (B, L, 4)) of one batch size, else ValueError."""
    if not isinstance(x, (tuple, list)) or len(x) != 2:
        raise ValueError(f"{owner}: expected a paired batch (raster, strokes), got {type(x).__name__}")
    raster, strokes = x
    if raster.dim() != 4 or strokes.dim() != 3 or strokes.shape[-1] != 4 or len(raster) != len(strokes):
        raise ValueError(f"{owner}: expected raster (B, C, H, W) and strokes (B, L, 4) of one batch, got "
                         f"{tuple(raster.shape)} and {tuple(strokes.shape)}")
    return raster, strokes


class _CrossModal(Algorithm):
    """What both cross-modal algorithms share: paired input, the two features their
    contrastive term reads, the two projectors."""

    modalities: ClassVar[tuple[str, ...]] = (PAIRED,)

    def __init__(self, modality: str, temperature: float = 0.1, proj_hidden_dim: int = 2048, proj_dim: int = 128,
                 raster_feature: str | None = None, stroke_feature: str | None = None) -> None:
        super().__init__(modality)
        self.temperature = check_positive(self.name, "temperature", temperature, float)
        self.proj_hidden_dim = check_positive(self.name, "proj_hidden_dim", proj_hidden_dim)
        self.proj_dim = check_positive(self.name, "proj_dim", proj_dim)
        for side, value in (("raster", raster_feature), ("stroke", stroke_feature)):
            if value is not None and (not isinstance(value, str) or not value or "." in value):
                raise ValueError(f"{self.name}: {side}_feature must be a layer name of the {side} model "
                                 f"(e.g. 'fc_block') or None, got {value!r}")
        #: Layers of each branch the contrastive term reads, as given (None: the layer
        #: evaluation reads, the branch model's default); ``engine.build`` resolves them.
        self.requested_features: tuple[str | None, str | None] = (raster_feature, stroke_feature)
        self.features: tuple[str, str] | None = None  # "raster.<layer>", "stroke.<layer>"

    @property
    def contrastive(self) -> bool:
        """Whether the loss has the cross-modal term (and the networks its projectors)."""
        return True

    def views(self, x: Any, y: Tensor | None) -> Any:
        raise NotImplementedError(f"{self.name} prepares paired batches in prepare()")

    def build_networks(self, encoder: nn.Module, feature: Any, sample: Any) -> Networks:
        """``feature``: the pair ("raster.<layer>", "stroke.<layer>") the projectors read;
        ``sample``: a small paired batch for sizing them."""
        if not isinstance(feature, (tuple, list)) or len(feature) != 2:
            raise ValueError(f"{self.name}: needs one feature per branch, got {feature!r}")
        self.features = (str(feature[0]), str(feature[1]))
        heads = nn.ModuleDict()
        if self.contrastive:
            for side, layer in zip(BRANCHES, self.features):
                width = feature_width(encoder, layer, sample)
                heads[f"{side}_projector"] = mlp_head(width, self.proj_hidden_dim, self.proj_dim)
        device = sample[0].device
        return Networks(self, encoder, heads.to(device))

    def project(self, nets: Networks, h_raster: Tensor, h_stroke: Tensor) -> tuple[Tensor, Tensor]:
        """Both branches' features in the shared space (float32), gathered from every
        process in training (the negatives are the global batch's)."""
        z_r = nets.heads["raster_projector"](h_raster.flatten(1)).float()
        z_s = nets.heads["stroke_projector"](h_stroke.flatten(1)).float()
        if nets.training:
            z_r, z_s = nets.gather(z_r), nets.gather(z_s)
        return z_r, z_s

    def describe(self) -> dict[str, Any]:
        out = {**super().describe(), "features": list(self.features or self.requested_features)}
        if self.contrastive:
            out.update({"temperature": self.temperature, "temperature_learned": False,
                        "proj_hidden_dim": self.proj_hidden_dim, "proj_dim": self.proj_dim})
        return out


class CrossModalContrastive(_CrossModal):
    """Symmetric raster <-> stroke InfoNCE through one projector per branch.

    Parameters (besides ``modality`` = "paired"):
        temperature: fixed softmax temperature of the InfoNCE (default 0.1).
        proj_hidden_dim, proj_dim: each projector is Linear-BN-ReLU-Linear, feature ->
            hidden (2048) -> shared space (128), SimCLR's shape.
        raster_feature, stroke_feature: the branch layers projected (default: each branch
            model's evaluation layer, so what is trained is what is evaluated).
        raster_augment, stroke_augment: None (default) for no augmentation of that side,
            else a mapping of overrides of :class:`~algorithms.augment.RasterAugment` /
            ``StrokeAugment`` defaults (``{}``: the defaults the generic methods use).

    Metric ``top1``: how often a sketch's other form is the most similar of the batch's
    other-modality rows (both directions averaged): cross-modal retrieval at rank 1.
    """

    name: ClassVar[str] = "crossmodal_contrastive"
    metric_names: ClassVar[tuple[str, ...]] = ("top1",)
    uses_logits: ClassVar[bool] = False

    def __init__(self, modality: str, temperature: float = 0.1, proj_hidden_dim: int = 2048, proj_dim: int = 128,
                 raster_feature: str | None = None, stroke_feature: str | None = None,
                 raster_augment: Mapping[str, Any] | None = None,
                 stroke_augment: Mapping[str, Any] | None = None) -> None:
        super().__init__(modality, temperature, proj_hidden_dim, proj_dim, raster_feature, stroke_feature)
        self.augments: dict[str, RasterAugment | StrokeAugment | None] = {}
        for side, cls, params in (("raster", RasterAugment, raster_augment), ("stroke", StrokeAugment, stroke_augment)):
            if params is not None and not isinstance(params, Mapping):
                raise ValueError(f"{self.name}: {side}_augment must be None or a mapping of settings, got {params!r}")
            try:
                self.augments[side] = None if params is None else cls.from_params(params)
            except ValueError as err:
                raise ValueError(f"{self.name}: {side}_augment: {err}") from None
        # Draws random numbers only when a side is augmented.
        self.randomized = any(a is not None for a in self.augments.values())  # type: ignore[misc]

    def num_outputs(self, num_classes: int) -> int:
        """Width of each branch's frozen placeholder classifier (the loss never reads it)."""
        return PLACEHOLDER_OUTPUTS

    def prepare(self, x: Any, y: Tensor | None, draws: Draws | None = None) -> tuple[Tensor, Tensor]:
        """The pair, each side augmented when asked (the raster's numbers drawn first)."""
        raster, strokes = check_pair(self.name, x)
        if self.randomized and draws is None:
            raise ValueError(f"{self.name}: prepare needs random draws (a Draws object) to augment")
        if self.augments["raster"] is not None:
            raster = self.augments["raster"](raster, draws)
        if self.augments["stroke"] is not None:
            strokes = self.augments["stroke"](strokes, draws)
        return raster, strokes

    def forward(self, nets: Networks, views: tuple[Tensor, Tensor]) -> StepOutput:
        h_r, h_s = nets.encoder(tuple(views), list(self.features))
        z_r, z_s = self.project(nets, h_r, h_s)
        loss = info_nce(z_r, z_s, self.temperature)
        return StepOutput(loss, h_r.shape[0], {"top1": info_nce_top1(z_r.detach(), z_s.detach())})

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "loss": "symmetric InfoNCE raster <-> stroke over the global batch",
                "augment": {side: None if a is None else a.describe() for side, a in self.augments.items()}}


class CrossModalPretext(_CrossModal):
    """The paper's pretext task on both branches at once, plus a weighted cross-modal term.

    Loss = CE(raster classifier) + CE(stroke classifier) + ``cross_weight`` x symmetric
    InfoNCE between the projected branch features of the same transformed sketch (row i
    of the raster views and row i of the stroke views are one sketch under one rotation;
    the other rows, the same sketch under other rotations among them, are the negatives).

    Parameters (besides ``modality`` = "paired"):
        task: "rotation" (default) or "deformation", the paper's tasks.
        task_params: the task's own parameters (deformation: ``module`` ...), both branches.
        cross_weight: weight of the cross-modal term (default 1; 0 drops it and the
            projectors: the two paper tasks trained in one run).
        temperature, proj_hidden_dim, proj_dim, raster_feature, stroke_feature: as for
            ``crossmodal_contrastive``.

    Metrics: ``acc`` (mean of the two), ``raster_acc``, ``stroke_acc`` (pretext accuracy of
    each branch) and ``top1`` (the cross-modal term's rank-1 accuracy; 0 without it).
    """

    name: ClassVar[str] = "crossmodal_pretext"
    metric_names: ClassVar[tuple[str, ...]] = ("acc", "raster_acc", "stroke_acc", "top1")
    uses_logits: ClassVar[bool] = True

    def __init__(self, modality: str, task: str = "rotation", task_params: Mapping[str, Any] | None = None,
                 cross_weight: float = 1.0, temperature: float = 0.1, proj_hidden_dim: int = 2048,
                 proj_dim: int = 128, raster_feature: str | None = None, stroke_feature: str | None = None) -> None:
        super().__init__(modality, temperature, proj_hidden_dim, proj_dim, raster_feature, stroke_feature)
        if task not in PRETEXT_TASKS:
            raise ValueError(f"{self.name}: task must be one of {sorted(PRETEXT_TASKS)}, got {task!r}")
        if task_params is not None and not isinstance(task_params, Mapping):
            raise ValueError(f"{self.name}: task_params must be a mapping, got {task_params!r}")
        if isinstance(cross_weight, bool) or not isinstance(cross_weight, (int, float)) or not cross_weight >= 0:
            raise ValueError(f"{self.name}: cross_weight must be a number >= 0, got {cross_weight!r}")
        self.task = task
        self.cross_weight = float(cross_weight)
        cls = PRETEXT_TASKS[task]
        try:
            self.tasks = {side: cls.from_params(side, dict(task_params or {})) for side in BRANCHES}
        except ValueError as err:
            raise ValueError(f"{self.name}: {err}") from None

    @property
    def contrastive(self) -> bool:
        return self.cross_weight > 0

    def num_outputs(self, num_classes: int) -> int:
        """The task's class count: each branch's classifier is that wide."""
        return self.tasks["raster"].num_outputs(num_classes)

    def prepare(self, x: Any, y: Tensor | None, draws: Draws | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(raster views, stroke views, raster targets, stroke targets), row i of both views
        the same sketch under the same transformation."""
        raster, strokes = check_pair(self.name, x)
        rv, rt = self.tasks["raster"].views(raster, y)
        sv, st = self.tasks["stroke"].views(strokes, y)
        return rv, sv, rt, st

    def forward(self, nets: Networks, views: tuple[Tensor, Tensor, Tensor, Tensor]) -> StepOutput:
        rv, sv, rt, st = views
        keys = ["raster.classifier", "stroke.classifier"] + (list(self.features) if self.contrastive else [])
        out = nets.encoder((rv, sv), keys)
        logits_r, logits_s = out[0], out[1]
        loss_r = self.tasks["raster"].loss(logits_r.float(), rt)
        loss_s = self.tasks["stroke"].loss(logits_s.float(), st)
        loss = loss_r + loss_s
        top1 = 0.0
        if self.contrastive:
            z_r, z_s = self.project(nets, out[2], out[3])
            loss = loss + self.cross_weight * info_nce(z_r, z_s, self.temperature)
            top1 = info_nce_top1(z_r.detach(), z_s.detach())
        acc_r, acc_s = accuracy(logits_r.detach(), rt), accuracy(logits_s.detach(), st)
        return StepOutput(loss, len(rt), {"acc": (acc_r + acc_s) / 2, "raster_acc": acc_r, "stroke_acc": acc_s,
                                          "top1": top1})

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "task": self.task, "task_settings": self.tasks["raster"].describe(),
                "stroke_task_settings": self.tasks["stroke"].describe(), "cross_weight": self.cross_weight,
                "loss": "CE(raster) + CE(stroke) + cross_weight x symmetric InfoNCE raster <-> stroke"}
