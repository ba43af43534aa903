"""Generic baseline: TCN (released form) pretrained with VICReg on strokes.

Settings (VICReg, Bardes et al. 2022, where they transfer; stated where changed):

- two views per sketch from ``algorithms.augment`` (as ``tcn_simclr``: stroke and point
  drop, small rotation / shear / scale, jitter, re-normalised);
- loss 25 x invariance + 25 x variance + 1 x covariance over both views of the global batch
  (VICReg's coefficients and terms; see ``cnn_vicreg``);
- expander Linear-BN-ReLU-Linear-BN-ReLU-Linear reading the evaluated layer ``fc``;
  changed: width 2048 throughout (VICReg: 8192);
- changed: batch 512 sketches (VICReg: 2048), Adam, lr 1e-3 then 1e-4 (VICReg: LARS, 1000
  epochs): the paper's TCN optimiser, schedule and 10 epochs, so every method of the branch
  trains with the same budget;
- best.pt: the lowest validation loss (validation views drawn from a fixed seed).
"""
from config._presets import GENERIC_SELECTION, STROKE_DATA, TCN_OPTIM, TCN_TRAIN

CONFIG = {
    "branch": "tcn",
    "description": "TCN (released form), VICReg (25/25/1, expander 2048-2048-2048) on strokes",
    "data": dict(STROKE_DATA),
    "model": {"name": "tcn"},  # classifier: a frozen 1-output placeholder
    "algorithm": {"name": "vicreg", "params": {"sim_coeff": 25.0, "std_coeff": 25.0, "cov_coeff": 1.0,
                                               "proj_hidden_dim": 2048, "proj_dim": 2048, "proj_layers": 3}},
    "optim": dict(TCN_OPTIM),
    "train": {**TCN_TRAIN, **GENERIC_SELECTION},
    "eval": {"feature": "fc"},
}
