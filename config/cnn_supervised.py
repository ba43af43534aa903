"""Baseline: AlexNet-BN trained on class labels (the upper reference for the pretext tasks)."""
from config._presets import CNN_OPTIM, CNN_TRAIN, RASTER_DATA

CONFIG = {
    "branch": "cnn",
    "description": "AlexNet-BN, supervised class labels on 224 px rasters",
    "data": dict(RASTER_DATA),
    "model": {"name": "alexnet", "num_classes": None},  # None: one output per data class
    "algorithm": {"name": "supervised"},
    "optim": dict(CNN_OPTIM),
    "train": dict(CNN_TRAIN),
    "eval": {"feature": "fc_block"},
}
