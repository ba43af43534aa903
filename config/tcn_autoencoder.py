"""Generic baseline: TCN (released form) pretrained with an autoencoder on strokes.

Settings (the classic autoencoder; no paper defaults to take over):

- an MLP decoder (Linear-BN-ReLU-Linear, hidden 1024) from the evaluated layer ``fc`` to the
  100 x 4 tensor: coordinates by regression on the valid rows (squared error), pen states by
  3-way classification of every row (inside a stroke / end of a stroke / padding, cross-
  entropy, weight 1); no augmentation;
- the paper's TCN optimiser, schedule, batch 512 and 10 epochs;
- best.pt: the lowest validation reconstruction loss.
"""
from config._presets import GENERIC_SELECTION, STROKE_DATA, TCN_OPTIM, TCN_TRAIN

CONFIG = {
    "branch": "tcn",
    "description": "TCN (released form), autoencoder (decoder to the 100 x 4 tensor) on strokes",
    "data": dict(STROKE_DATA),
    "model": {"name": "tcn"},  # classifier: a frozen 1-output placeholder
    "algorithm": {"name": "autoencoder", "params": {"decoder_hidden_dim": 1024, "pen_weight": 1.0}},
    "optim": dict(TCN_OPTIM),
    "train": {**TCN_TRAIN, **GENERIC_SELECTION},
    "eval": {"feature": "fc"},
}
