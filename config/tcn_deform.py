"""Paper: the TCN tells a stroke sequence as drawn from its deformed copy (2-way).

Both copies are re-centred and rescaled the same way (the released code normalised only the
deformed one, a shortcut). To reproduce the released stroke map, which reads the setting in
another argument order and folds, use
``--set algorithm.params.stroke_argument_order=released --set algorithm.params.allow_folding=True``.
"""
from config._presets import DEFORMATION_OUTPUTS, STROKE_DATA, TCN_OPTIM, TCN_TRAIN

CONFIG = {
    "branch": "tcn",
    "description": "TCN (released form), 2-way deformation ('released' module) on strokes",
    "data": dict(STROKE_DATA),
    "model": {"name": "tcn", "num_classes": DEFORMATION_OUTPUTS},
    "algorithm": {"name": "deformation", "params": {"module": "released"}},
    "optim": dict(TCN_OPTIM),
    "train": dict(TCN_TRAIN),
    "eval": {"feature": "fc"},
}
