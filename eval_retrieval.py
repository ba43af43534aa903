"""Evaluate a trained encoder by sketch retrieval:
``python eval_retrieval.py --exp cnn_rotation --random-baseline``."""
import sys

from engine.evaluate import eval_main

if __name__ == "__main__":
    sys.exit(eval_main())
