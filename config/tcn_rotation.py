"""Paper: the TCN predicts which of 4 quarter turns was applied to a stroke sequence."""
from config._presets import ROTATION_OUTPUTS, STROKE_DATA, TCN_OPTIM, TCN_TRAIN

CONFIG = {
    "branch": "tcn",
    "description": "TCN (released form), 4-way rotation on 100 x 4 stroke sequences",
    "data": dict(STROKE_DATA),
    "model": {"name": "tcn", "num_classes": ROTATION_OUTPUTS},
    "algorithm": {"name": "rotation"},
    "optim": dict(TCN_OPTIM),
    "train": dict(TCN_TRAIN),
    "eval": {"feature": "fc"},
}
