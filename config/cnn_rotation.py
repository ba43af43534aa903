"""Paper: AlexNet-BN predicts which of 4 quarter turns was applied to a sketch raster."""
from config._presets import CNN_OPTIM, CNN_TRAIN, RASTER_DATA, ROTATION_OUTPUTS

CONFIG = {
    "branch": "cnn",
    "description": "AlexNet-BN, 4-way rotation on 224 px rasters (paper, released schedule)",
    "data": dict(RASTER_DATA),
    "model": {"name": "alexnet", "num_classes": ROTATION_OUTPUTS},
    "algorithm": {"name": "rotation"},
    "optim": dict(CNN_OPTIM),
    "train": dict(CNN_TRAIN),
    "eval": {"feature": "fc_block"},
}
