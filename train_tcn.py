"""Pretrain a TCN on a stroke pretext task: ``python train_tcn.py --exp tcn_deform``."""
import sys

from engine.cli import train_main

if __name__ == "__main__":
    sys.exit(train_main("tcn"))
