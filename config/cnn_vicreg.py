"""Generic baseline: AlexNet-BN pretrained with VICReg on 224 px rasters.

Settings (VICReg, Bardes et al. 2022, where they transfer; stated where changed):

- two views per sketch from ``algorithms.augment`` (as ``cnn_simclr``);
- loss 25 x invariance (mean squared error of the two views' embeddings) + 25 x variance
  (hinge keeping each dimension's standard deviation over the batch at 1 or more) + 1 x
  covariance (squared off-diagonal covariances / dimension), over both views of the global
  batch (VICReg's coefficients and terms);
- expander Linear-BN-ReLU-Linear-BN-ReLU-Linear reading the evaluated layer ``fc_block``;
  changed: width 2048 throughout (VICReg: 8192, for a 2048-d ResNet-50 feature);
- changed: batch 256 sketches (VICReg: 2048), SGD Nesterov 0.9, weight decay 5e-4, lr 0.01
  -> 1e-5 by epoch (VICReg: LARS, base lr 0.2 x B/256, weight decay 1e-6, 1000 epochs): the
  paper's CNN optimiser, schedule and 10 epochs, the same budget as the branch's other
  methods;
- best.pt: the lowest validation loss (validation views drawn from a fixed seed).
"""
from config._presets import GENERIC_SELECTION, RASTER_DATA, CNN_OPTIM, CNN_TRAIN

CONFIG = {
    "branch": "cnn",
    "description": "AlexNet-BN, VICReg (25/25/1, expander 2048-2048-2048) on 224 px rasters",
    "data": dict(RASTER_DATA),
    "model": {"name": "alexnet"},  # classifier: a frozen 1-output placeholder
    "algorithm": {"name": "vicreg", "params": {"sim_coeff": 25.0, "std_coeff": 25.0, "cov_coeff": 1.0,
                                               "proj_hidden_dim": 2048, "proj_dim": 2048, "proj_layers": 3}},
    "optim": dict(CNN_OPTIM),
    "train": {**CNN_TRAIN, **GENERIC_SELECTION},
    "eval": {"feature": "fc_block"},
}
