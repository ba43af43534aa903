"""Generic baseline: AlexNet-BN pretrained with an autoencoder on 224 px rasters.

Settings (the classic autoencoder; no paper defaults to take over):

- a convolutional decoder (Linear to 128 x 4 x 4, three stride-2 transposed convolutions
  with batch norm, a 3 x 3 convolution) from the evaluated layer ``fc_block`` to a 32 x 32
  raster; target: the input's ink coverage of each 7 x 7 cell (area average of the 224 px
  raster), loss: per-pixel binary cross-entropy; no augmentation;
- the paper's CNN optimiser, schedule, batch 256 and 10 epochs;
- best.pt: the lowest validation reconstruction loss.
"""
from config._presets import GENERIC_SELECTION, RASTER_DATA, CNN_OPTIM, CNN_TRAIN

CONFIG = {
    "branch": "cnn",
    "description": "AlexNet-BN, autoencoder (decoder to a 32 x 32 raster, BCE) on 224 px rasters",
    "data": dict(RASTER_DATA),
    "model": {"name": "alexnet"},  # classifier: a frozen 1-output placeholder
    "algorithm": {"name": "autoencoder", "params": {"recon_size": 32, "decoder_width": 128}},
    "optim": dict(CNN_OPTIM),
    "train": {**CNN_TRAIN, **GENERIC_SELECTION},
    "eval": {"feature": "fc_block"},
}
