"""Generic baseline: TCN (released form) pretrained with SimCLR on strokes.

Settings (SimCLR, Chen et al. 2020, where they transfer; stated where changed):

- two views per sketch from ``algorithms.augment``: each stroke dropped with probability 0.1
  (never all), each point but a stroke's last with probability 0.1 (sketch-rnn's point
  drop), a random rotation (+-15 degrees), shear (+-10) and per-axis scale (0.85-1.15,
  sketch-rnn's) of the coordinates, point jitter (sd 0.01), re-normalised (box centred,
  longest side kept) -- the stroke counterpart of SimCLR's crops, which a sequence has not;
- projector Linear-BN-ReLU-Linear, hidden 2048 (SimCLR: the representation's width, 2048 for
  its ResNet-50), output 128 (SimCLR); it reads the evaluated layer ``fc``;
- NT-Xent over both views of the global batch, temperature 0.5 (SimCLR's value for small
  batches; its ImageNet runs used 0.1 with batches of 4096);
- changed: batch 512 sketches (SimCLR: 4096), Adam, lr 1e-3 then 1e-4 (SimCLR: LARS, lr 0.3
  x B/256, weight decay 1e-6, 100-1000 epochs): the paper's TCN optimiser, schedule and 10
  epochs, so every method of the branch trains with the same budget;
- best.pt: the lowest validation NT-Xent (validation views drawn from a fixed seed).
"""
from config._presets import GENERIC_SELECTION, STROKE_DATA, TCN_OPTIM, TCN_TRAIN

CONFIG = {
    "branch": "tcn",
    "description": "TCN (released form), SimCLR (NT-Xent, temperature 0.5, projector 2048-128) on strokes",
    "data": dict(STROKE_DATA),
    "model": {"name": "tcn"},  # classifier: a frozen 1-output placeholder
    "algorithm": {"name": "simclr", "params": {"temperature": 0.5, "proj_hidden_dim": 2048, "proj_dim": 128}},
    "optim": dict(TCN_OPTIM),
    "train": {**TCN_TRAIN, **GENERIC_SELECTION},
    "eval": {"feature": "fc"},
}
