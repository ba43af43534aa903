"""Pretrain a CNN and a TCN together on paired sketches: ``python train_dual.py --exp dual_crossmodal``."""
import sys

from engine.cli import train_main

if __name__ == "__main__":
    sys.exit(train_main("dual"))
