"""Generic baseline: AlexNet-BN pretrained with BYOL on 224 px rasters.

Settings (BYOL, Grill et al. 2020, where they transfer; stated where changed):

- two views per sketch from ``algorithms.augment`` (as ``cnn_simclr``);
- projector and predictor Linear-BN-ReLU-Linear, hidden 4096, output 256 (BYOL); the
  projector reads the evaluated layer ``fc_block``;
- loss 2 - 2 cos(online prediction of one view, target projection of the other), summed over
  both directions; target = EMA of the online encoder and projector, momentum from 0.996 to
  1 on a cosine schedule over the run's steps (BYOL);
- changed: batch 256 sketches (BYOL: 4096), SGD Nesterov 0.9, weight decay 5e-4, lr 0.01 ->
  1e-5 by epoch (BYOL: LARS, lr 0.2 x B/256, weight decay 1.5e-6, 300-1000 epochs): the
  paper's CNN optimiser, schedule and 10 epochs, the same budget as the branch's other
  methods;
- best.pt: the lowest validation loss (against the target of that epoch).
"""
from config._presets import GENERIC_SELECTION, RASTER_DATA, CNN_OPTIM, CNN_TRAIN

CONFIG = {
    "branch": "cnn",
    "description": "AlexNet-BN, BYOL (EMA target 0.996 -> 1, projector/predictor 4096-256) on 224 px rasters",
    "data": dict(RASTER_DATA),
    "model": {"name": "alexnet"},  # classifier: a frozen 1-output placeholder
    "algorithm": {"name": "byol", "params": {"proj_hidden_dim": 4096, "proj_dim": 256, "pred_hidden_dim": 4096, "momentum": 0.996}},
    "optim": dict(CNN_OPTIM),
    "train": {**CNN_TRAIN, **GENERIC_SELECTION},
    "eval": {"feature": "fc_block"},
}
