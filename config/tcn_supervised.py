"""Baseline: the TCN trained on class labels."""
from config._presets import STROKE_DATA, TCN_OPTIM, TCN_TRAIN

CONFIG = {
    "branch": "tcn",
    "description": "TCN (released form), supervised class labels on stroke sequences",
    "data": dict(STROKE_DATA),
    "model": {"name": "tcn", "num_classes": None},  # None: one output per data class
    "algorithm": {"name": "supervised"},
    "optim": dict(TCN_OPTIM),
    "train": dict(TCN_TRAIN),
    "eval": {"feature": "fc"},
}
