"""Paper: AlexNet-BN tells a sketch raster as drawn from its deformed copy (2-way)."""
from config._presets import CNN_OPTIM, CNN_TRAIN, DEFORMATION_OUTPUTS, RASTER_DATA

CONFIG = {
    "branch": "cnn",
    "description": "AlexNet-BN, 2-way deformation ('released' module) on 224 px rasters",
    "data": dict(RASTER_DATA),
    "model": {"name": "alexnet", "num_classes": DEFORMATION_OUTPUTS},
    "algorithm": {"name": "deformation", "params": {"module": "released"}},
    "optim": dict(CNN_OPTIM),
    "train": dict(CNN_TRAIN),
    "eval": {"feature": "fc_block"},
}
