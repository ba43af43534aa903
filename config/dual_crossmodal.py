"""Beyond the paper: AlexNet-BN (rasters) and the TCN (strokes) pretrained together with a
symmetric cross-modal InfoNCE (issue 18).

Settings (stated defaults; CLIP / CMC where they transfer):

- paired data: the paper's 224 px raster and 100-point stroke tensor of the same sketch;
- encoders: AlexNet-BN and the released TCN in one ``models.DualEncoder``; the projectors
  read the evaluated layers ``raster.fc_block`` and ``stroke.fc`` (4096-d each); each
  branch's classifier is a frozen 1-output placeholder;
- projectors Linear-BN-ReLU-Linear 4096 -> 2048 -> 128, one per branch (SimCLR's shape);
- loss: symmetric InfoNCE, raster and strokes of one sketch the positive pair, the other
  sketches of the global batch (in the other form) the negatives; temperature fixed at 0.1
  (not learned: ``algorithms.crossmodal``);
- no augmentation on either side (the other form is the second view); per-side
  augmentations are one override away: ``--set algorithm.params.raster_augment={}``;
- one optimiser over both branches and the projectors: the CNN's (SGD Nesterov 0.9, weight
  decay 5e-4, lr 0.01 -> 1e-5 over 10 epochs, batch 256 sketches), the TCN's Adam not used
  (docs/TRAINING.md says why);
- best.pt: the lowest validation loss (validation pairs of a fixed split, no augmentation).
"""
from config._presets import DUAL_MODEL, DUAL_OPTIM, DUAL_TRAIN, GENERIC_SELECTION, PAIRED_DATA

CONFIG = {
    "branch": "dual",
    "description": "AlexNet-BN + TCN pretrained together: symmetric raster <-> stroke InfoNCE "
                   "(temperature 0.1 fixed, projectors 2048-128)",
    "data": dict(PAIRED_DATA),
    "model": dict(DUAL_MODEL),  # classifiers: frozen 1-output placeholders
    "algorithm": {"name": "crossmodal_contrastive",
                  "params": {"temperature": 0.1, "proj_hidden_dim": 2048, "proj_dim": 128}},
    "optim": dict(DUAL_OPTIM),
    "train": {**DUAL_TRAIN, **GENERIC_SELECTION},
    "eval": {"feature": "raster.fc_block"},
}
