"""Pretext tasks (rotation, deformation), generic self-supervised methods (SimCLR, BYOL,
VICReg, autoencoder, denoising autoencoder), cross-modal methods that train a raster and a stroke encoder together
(crossmodal_contrastive, crossmodal_pretext) and the supervised baseline.

A leaf package: it works on tensors and ``torch.nn`` modules only and imports no other
project package. The trainer builds an algorithm by name and drives it through one
interface (``algorithms.base``)::

    algorithm = build_algorithm("simclr", "raster", temperature=0.5)
    encoder = ...                                   # a model, model(x, out_feat_keys)
    nets = algorithm.build_networks(encoder, "fc_block", sample)   # encoder + heads (+ target)
    views = algorithm.prepare(x, y, draws)          # pretext views / random augmentations
    out = nets(views)                               # StepOutput: loss, count, metrics
    out.loss.backward(); optimizer.step()
    algorithm.after_step(nets, step, total_steps)   # e.g. BYOL's EMA target update
"""

from __future__ import annotations

from typing import Any

from .augment import RasterAugment, StrokeAugment
from .autoencoder import AutoencoderAlgorithm
from .base import MODALITIES, PAIRED, Algorithm, Draws, Networks, PretextAlgorithm, StepOutput
from .crossmodal import CrossModalContrastive, CrossModalPretext
from .byol import BYOLAlgorithm, cosine_momentum, ema_update
from .denoising import DenoisingAutoencoderAlgorithm, mask_raster_cells, mask_stroke_points
from .deformation import (
    DeformationAlgorithm,
    deform_raster,
    deform_raster_reference,
    deform_strokes,
    destination_indices,
    erase_half,
)
from .generic import PLACEHOLDER_OUTPUTS, GenericMethod
from .losses import (
    VICREG_EPS,
    accuracy,
    cross_entropy,
    info_nce,
    info_nce_top1,
    normalized_mse,
    nt_xent,
    nt_xent_top1,
    vicreg_loss,
    vicreg_terms,
)
from .rotation import RotationAlgorithm, rotate_raster, rotate_strokes
from .simclr import SimCLRAlgorithm
from .strokes import normalize_strokes, valid_rows
from .supervised import SupervisedAlgorithm
from .vicreg import VICRegAlgorithm
from .warps import DEFORMATION_MODULES, FOLD_TOLERANCE, IDENTITY, AxisWarp, DeformationModule

ALGORITHMS: dict[str, type[Algorithm]] = {
    RotationAlgorithm.name: RotationAlgorithm,
    DeformationAlgorithm.name: DeformationAlgorithm,
    SupervisedAlgorithm.name: SupervisedAlgorithm,
    SimCLRAlgorithm.name: SimCLRAlgorithm,
    BYOLAlgorithm.name: BYOLAlgorithm,
    VICRegAlgorithm.name: VICRegAlgorithm,
    AutoencoderAlgorithm.name: AutoencoderAlgorithm,
    DenoisingAutoencoderAlgorithm.name: DenoisingAutoencoderAlgorithm,
    CrossModalContrastive.name: CrossModalContrastive,
    CrossModalPretext.name: CrossModalPretext,
}


def build_algorithm(name: str, modality: str, **params: Any) -> Algorithm:
    """Build the algorithm called ``name`` for ``modality`` ("raster", "stroke", or "paired"
    for the cross-modal algorithms).

    Raises:
        ValueError: unknown name (the message lists the known ones), bad modality, or an
            unknown / invalid parameter (one line naming the algorithm and parameter).
    """
    if name not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {name!r} (known: {sorted(ALGORITHMS)})")
    return ALGORITHMS[name].from_params(modality, params)


__all__ = [
    "ALGORITHMS",
    "AutoencoderAlgorithm",
    "BYOLAlgorithm",
    "CrossModalContrastive",
    "CrossModalPretext",
    "DenoisingAutoencoderAlgorithm",
    "PAIRED",
    "info_nce_top1",
    "Draws",
    "GenericMethod",
    "Networks",
    "PLACEHOLDER_OUTPUTS",
    "RasterAugment",
    "SimCLRAlgorithm",
    "StepOutput",
    "StrokeAugment",
    "VICREG_EPS",
    "VICRegAlgorithm",
    "cosine_momentum",
    "ema_update",
    "info_nce",
    "normalized_mse",
    "nt_xent",
    "nt_xent_top1",
    "DEFORMATION_MODULES",
    "FOLD_TOLERANCE",
    "IDENTITY",
    "MODALITIES",
    "Algorithm",
    "AxisWarp",
    "DeformationAlgorithm",
    "DeformationModule",
    "PretextAlgorithm",
    "RotationAlgorithm",
    "SupervisedAlgorithm",
    "accuracy",
    "build_algorithm",
    "cross_entropy",
    "deform_raster",
    "deform_raster_reference",
    "deform_strokes",
    "destination_indices",
    "erase_half",
    "mask_raster_cells",
    "mask_stroke_points",
    "normalize_strokes",
    "rotate_raster",
    "rotate_strokes",
    "valid_rows",
    "vicreg_loss",
    "vicreg_terms",
]
