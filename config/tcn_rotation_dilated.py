"""Beyond the paper: the rotation task with a dilated residual TCN."""
from config._presets import ROTATION_OUTPUTS, STROKE_DATA, TCN_OPTIM, TCN_TRAIN

CONFIG = {
    "branch": "tcn",
    "description": "dilated residual TCN, 4-way rotation on stroke sequences",
    "data": dict(STROKE_DATA),
    "model": {"name": "tcn_dilated", "num_classes": ROTATION_OUTPUTS},
    "algorithm": {"name": "rotation"},
    "optim": dict(TCN_OPTIM),
    "train": dict(TCN_TRAIN),
    "eval": {"feature": "fc"},
}
