"""Pretext tasks (rotation, deformation) and the supervised baseline.

A leaf package: it works on tensors only and imports no other project package. The
trainer builds an algorithm by name::

    algorithm = build_algorithm("deformation", "raster", module="released")
    head_width = algorithm.num_outputs(num_classes)
    inputs, targets = algorithm.views(x, y)
    loss = algorithm.loss(model(inputs), targets)
"""

from __future__ import annotations

from typing import Any

from .base import MODALITIES, Algorithm, PretextAlgorithm
from .deformation import (
    DeformationAlgorithm,
    deform_raster,
    deform_raster_reference,
    deform_strokes,
    destination_indices,
    erase_half,
)
from .losses import accuracy, cross_entropy
from .rotation import RotationAlgorithm, rotate_raster, rotate_strokes
from .strokes import normalize_strokes, valid_rows
from .supervised import SupervisedAlgorithm
from .warps import DEFORMATION_MODULES, FOLD_TOLERANCE, IDENTITY, AxisWarp, DeformationModule

ALGORITHMS: dict[str, type[Algorithm]] = {
    RotationAlgorithm.name: RotationAlgorithm,
    DeformationAlgorithm.name: DeformationAlgorithm,
    SupervisedAlgorithm.name: SupervisedAlgorithm,
}


def build_algorithm(name: str, modality: str, **params: Any) -> Algorithm:
    """Build the algorithm called ``name`` for ``modality`` ("raster" or "stroke").

    Raises:
        ValueError: unknown name (the message lists the known ones), bad modality, or an
            unknown / invalid parameter (one line naming the algorithm and parameter).
    """
    if name not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {name!r} (known: {sorted(ALGORITHMS)})")
    return ALGORITHMS[name].from_params(modality, params)


__all__ = [
    "ALGORITHMS",
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
    "normalize_strokes",
    "rotate_raster",
    "rotate_strokes",
    "valid_rows",
]
