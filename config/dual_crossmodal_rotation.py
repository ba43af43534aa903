"""Beyond the paper: the paper's rotation task on AlexNet-BN (rasters) and the TCN (strokes)
at once, plus the cross-modal InfoNCE between them, in one run (issue 18).

Settings (stated defaults):

- paired data, encoders and projectors as ``dual_crossmodal`` (224 px + 100 points;
  ``models.DualEncoder`` of AlexNet-BN and the released TCN; projectors 4096 -> 2048 -> 128
  on ``raster.fc_block`` / ``stroke.fc``);
- each branch: the paper's 4-way rotation of its own input, its own 4-way classifier;
- loss: CE(raster rotation) + CE(stroke rotation) + 1.0 x symmetric InfoNCE (temperature
  0.1, fixed) between the projected features of the same sketch under the same rotation
  (the other 4B - 1 rotated sketches of the batch are the negatives); ``cross_weight=0``
  gives the paper's two tasks trained in one run;
- one optimiser, the CNN's (SGD Nesterov 0.9, weight decay 5e-4, 0.01 -> 1e-5 over 10
  epochs, batch 256 sketches; docs/TRAINING.md);
- best.pt: the highest mean validation rotation accuracy of the two branches, as the
  paper's tasks pick theirs.
"""
from config._presets import DUAL_MODEL, DUAL_OPTIM, DUAL_TRAIN, PAIRED_DATA, ROTATION_OUTPUTS

CONFIG = {
    "branch": "dual",
    "description": "AlexNet-BN + TCN: rotation on both branches + 1.0 x raster <-> stroke InfoNCE "
                   "(temperature 0.1 fixed)",
    "data": dict(PAIRED_DATA),
    "model": {**DUAL_MODEL, "num_classes": ROTATION_OUTPUTS},
    "algorithm": {"name": "crossmodal_pretext",
                  "params": {"task": "rotation", "cross_weight": 1.0, "temperature": 0.1,
                             "proj_hidden_dim": 2048, "proj_dim": 128}},
    "optim": dict(DUAL_OPTIM),
    "train": dict(DUAL_TRAIN),
    "eval": {"feature": "raster.fc_block"},
}
