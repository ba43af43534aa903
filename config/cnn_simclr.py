"""Generic baseline: AlexNet-BN pretrained with SimCLR on 224 px rasters.

Settings (SimCLR, Chen et al. 2020, where they transfer; stated where changed):

- two views per sketch from ``algorithms.augment`` (random resized crop, area 0.35-1 instead
  of SimCLR's 0.08-1; small rotation / shear / zoom / shift; horizontal flip 0.5 -- SimCLR's
  colour distortion and blur have no counterpart on a line drawing);
- projector Linear-BN-ReLU-Linear, hidden 2048 (SimCLR: the representation's width, 2048 for
  its ResNet-50), output 128 (SimCLR); it reads the evaluated layer ``fc_block``;
- NT-Xent over both views of the global batch, temperature 0.5 (SimCLR's value for small
  batches; its ImageNet runs used 0.1 with batches of 4096);
- changed: batch 256 sketches (SimCLR: 4096), SGD Nesterov 0.9, weight decay 5e-4, lr 0.01
  -> 1e-5 by epoch (SimCLR: LARS, lr 0.3 x B/256, weight decay 1e-6, 100-1000 epochs): the
  paper's CNN optimiser, schedule and 10 epochs, so every method of the branch trains with
  the same budget;
- best.pt: the lowest validation NT-Xent (validation views drawn from a fixed seed).
"""
from config._presets import GENERIC_SELECTION, RASTER_DATA, CNN_OPTIM, CNN_TRAIN

CONFIG = {
    "branch": "cnn",
    "description": "AlexNet-BN, SimCLR (NT-Xent, temperature 0.5, projector 2048-128) on 224 px rasters",
    "data": dict(RASTER_DATA),
    "model": {"name": "alexnet"},  # classifier: a frozen 1-output placeholder
    "algorithm": {"name": "simclr", "params": {"temperature": 0.5, "proj_hidden_dim": 2048, "proj_dim": 128}},
    "optim": dict(CNN_OPTIM),
    "train": {**CNN_TRAIN, **GENERIC_SELECTION},
    "eval": {"feature": "fc_block"},
}
