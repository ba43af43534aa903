"""Beyond the paper: the deformation task with a dilated residual TCN."""
from config._presets import DEFORMATION_OUTPUTS, STROKE_DATA, TCN_OPTIM, TCN_TRAIN

CONFIG = {
    "branch": "tcn",
    "description": "dilated residual TCN, 2-way deformation ('released' module) on strokes",
    "data": dict(STROKE_DATA),
    "model": {"name": "tcn_dilated", "num_classes": DEFORMATION_OUTPUTS},
    "algorithm": {"name": "deformation", "params": {"module": "released"}},
    "optim": dict(TCN_OPTIM),
    "train": dict(TCN_TRAIN),
    "eval": {"feature": "fc"},
}
