"""Generic baseline: TCN (released form) pretrained as a denoising autoencoder (masking noise) on strokes.

Settings (the autoencoder's, ``tcn_autoencoder``, plus the corruption; no paper defaults to take over):

- input: x and y of each drawn point set to 0 with probability 0.15 (Sketch-BERT's masking
  rate), pen columns and padding kept; target: the clean 100 x 4 tensor through the
  autoencoder's MLP decoder from the evaluated layer ``fc`` (squared xy error on the valid
  rows, 3-way pen-state cross-entropy, weight 1); no other augmentation;
- the paper's TCN optimiser, schedule, batch 512 and 10 epochs;
- best.pt: the lowest validation reconstruction loss (validation masks are drawn from a
  fixed seed, the same every epoch).
"""
from config._presets import GENERIC_SELECTION, STROKE_DATA, TCN_OPTIM, TCN_TRAIN

CONFIG = {
    "branch": "tcn",
    "description": "TCN (released form), denoising autoencoder (15% of points masked, clean 100 x 4 target) on strokes",
    "data": dict(STROKE_DATA),
    "model": {"name": "tcn"},  # classifier: a frozen 1-output placeholder
    "algorithm": {"name": "denoising", "params": {"mask_ratio": 0.15, "decoder_hidden_dim": 1024,
                                                  "pen_weight": 1.0}},
    "optim": dict(TCN_OPTIM),
    "train": {**TCN_TRAIN, **GENERIC_SELECTION},
    "eval": {"feature": "fc"},
}
