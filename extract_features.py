"""Features of your own sketch files from a trained encoder, and their ranking against the
gallery (evaluation/extract.py, docs/EVALUATION.md):

    python extract_features.py --ckpt experiments/tcn_rotation/best.pt my_sketches/ --out out/mine
    python extract_features.py --ckpt experiments/tcn_rotation/best.pt cat.ndjson --out out/cat --rank
"""
import sys

from evaluation.extract import extract_main

if __name__ == "__main__":
    sys.exit(extract_main())
