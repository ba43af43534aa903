"""Quick start: a small ResNet learns the rotation task on built-in synthetic sketches.

Sized to pretrain and evaluate in a few minutes on 2 CPU cores (README, first command):
64 px rasters, a 4-stage ResNet with one block per stage, 12 classes of synthetic sketches.
"""
from config._presets import ROTATION_OUTPUTS

CONFIG = {
    "branch": "cnn",
    "description": "small ResNet, 4-way rotation on 64 px synthetic rasters (quick start)",
    "data": {
        "modality": "raster",
        "image_size": 64,
        "line_width": 6.0,  # 2 px at 64 px
        "num_classes": 12,
        "train_per_class": 200,
        "val_per_class": 20,
        "query_per_class": 20,
        "gallery_per_class": 80,
    },
    "model": {
        "name": "resnet",
        "num_classes": ROTATION_OUTPUTS,
        "params": {"widths": [32, 64, 128, 256], "blocks": [1, 1, 1, 1], "stem": "imagenet"},
    },
    "algorithm": {"name": "rotation"},
    "optim": {
        "name": "sgd",
        "momentum": 0.9,
        "nesterov": True,
        "weight_decay": 5e-4,
        "lr_schedule": [[1, 0.05], [6, 0.005]],
    },
    # 2 threads on any machine: the README's numbers then do not depend on the core count.
    "train": {"epochs": 8, "batch_size": 64, "threads": 2},
    "eval": {"feature": "pool"},
}
