"""Evaluate trained encoders: retrieval (mAP, P@K, per-class AP), kNN and linear-probe
recognition, fusion, baselines and pictures (docs/EVALUATION.md; the pipeline: evaluation/):

    python eval_retrieval.py --exp cnn_rotation --random-baseline --probe
    python eval_retrieval.py --fuse experiments/cnn_rotation/best.pt experiments/tcn_rotation/best.pt:fc@0.5
"""
import sys

from evaluation.run import eval_main

if __name__ == "__main__":
    sys.exit(eval_main())
