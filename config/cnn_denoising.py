"""Generic baseline: AlexNet-BN pretrained as a denoising autoencoder (masking noise) on 224 px rasters.

Settings (the autoencoder's, ``cnn_autoencoder``, plus the corruption; no paper defaults to take over):

- input: the raster cut into 8 x 8 cells (28 px at 224 px), each blanked with probability
  0.5; target: the clean raster's ink coverage of each 7 x 7 cell (32 x 32), per-pixel
  binary cross-entropy, from the evaluated layer ``fc_block`` through the autoencoder's
  convolutional decoder; no other augmentation;
- the paper's CNN optimiser, schedule, batch 256 and 10 epochs;
- best.pt: the lowest validation reconstruction loss (validation masks are drawn from a
  fixed seed, the same every epoch).
"""
from config._presets import GENERIC_SELECTION, RASTER_DATA, CNN_OPTIM, CNN_TRAIN

CONFIG = {
    "branch": "cnn",
    "description": "AlexNet-BN, denoising autoencoder (8 x 8 cells masked with p 0.5, clean 32 x 32 target) on 224 px rasters",
    "data": dict(RASTER_DATA),
    "model": {"name": "alexnet"},  # classifier: a frozen 1-output placeholder
    "algorithm": {"name": "denoising", "params": {"mask_ratio": 0.5, "mask_grid": 8,
                                                  "recon_size": 32, "decoder_width": 128}},
    "optim": dict(CNN_OPTIM),
    "train": {**CNN_TRAIN, **GENERIC_SELECTION},
    "eval": {"feature": "fc_block"},
}
