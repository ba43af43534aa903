"""Generic baseline: TCN (released form) pretrained with BYOL on strokes.

Settings (BYOL, Grill et al. 2020, where they transfer; stated where changed):

- two views per sketch from ``algorithms.augment`` (as ``tcn_simclr``);
- projector and predictor Linear-BN-ReLU-Linear, hidden 4096, output 256 (BYOL); the
  projector reads the evaluated layer ``fc``;
- loss 2 - 2 cos(online prediction of one view, target projection of the other), summed over
  both directions; target = EMA of the online encoder and projector, momentum from 0.996 to
  1 on a cosine schedule over the run's steps (BYOL);
- changed: batch 512 sketches (BYOL: 4096), Adam, lr 1e-3 then 1e-4 (BYOL: LARS, lr 0.2 x
  B/256, weight decay 1.5e-6, 300-1000 epochs): the paper's TCN optimiser, schedule and 10
  epochs, the same budget as the branch's other methods;
- best.pt: the lowest validation loss (against the target of that epoch).
"""
from config._presets import GENERIC_SELECTION, STROKE_DATA, TCN_OPTIM, TCN_TRAIN

CONFIG = {
    "branch": "tcn",
    "description": "TCN (released form), BYOL (EMA target 0.996 -> 1, projector/predictor 4096-256) on strokes",
    "data": dict(STROKE_DATA),
    "model": {"name": "tcn"},  # classifier: a frozen 1-output placeholder
    "algorithm": {"name": "byol", "params": {"proj_hidden_dim": 4096, "proj_dim": 256, "pred_hidden_dim": 4096, "momentum": 0.996}},
    "optim": dict(TCN_OPTIM),
    "train": {**TCN_TRAIN, **GENERIC_SELECTION},
    "eval": {"feature": "fc"},
}
