"""Evaluate a checkpoint with pycocotools: `python scripts/eval.py +checkpoint=runs/<run>/qat.pt`.

A QAT checkpoint carries its own config (model, data, quantization); an FP checkpoint is read with
the model/data given on the command line.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from yoloq.cli import hydra_entry  # noqa: E402

if __name__ == "__main__":
    hydra_entry("eval")
