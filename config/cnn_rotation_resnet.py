"""Beyond the paper: the rotation task with a ResNet-18-style CNN in place of AlexNet."""
from config._presets import CNN_OPTIM, CNN_TRAIN, RASTER_DATA, ROTATION_OUTPUTS

CONFIG = {
    "branch": "cnn",
    "description": "ResNet-18-style CNN, 4-way rotation on 224 px rasters",
    "data": dict(RASTER_DATA),
    "model": {"name": "resnet", "num_classes": ROTATION_OUTPUTS},
    "algorithm": {"name": "rotation"},
    "optim": dict(CNN_OPTIM),
    "train": dict(CNN_TRAIN),
    "eval": {"feature": "pool"},
}
