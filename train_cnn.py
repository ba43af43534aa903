"""Pretrain a CNN on a raster pretext task: ``python train_cnn.py --exp cnn_rotation``."""
import sys

from engine.cli import train_main

if __name__ == "__main__":
    sys.exit(train_main("cnn"))
