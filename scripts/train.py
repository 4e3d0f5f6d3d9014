"""Train, quantize and evaluate: `python scripts/train.py model=yolov5n bits=3` (Hydra overrides)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from yoloq.cli import hydra_entry  # noqa: E402

if __name__ == "__main__":
    hydra_entry("train")
