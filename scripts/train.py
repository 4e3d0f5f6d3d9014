"""Train, quantize and evaluate: `python scripts/train.py model=yolov5n bits=3` (Hydra overrides); the same as
`yoloq train ...`. Needs yoloq installed (`pip install -e .` in a checkout)."""

from yoloq.cli import hydra_entry

if __name__ == "__main__":
    hydra_entry("train")
