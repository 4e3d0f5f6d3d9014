"""Evaluate a checkpoint with pycocotools: `python scripts/eval.py +checkpoint=runs/<run>/qat.pt` (or
`yoloq eval ...`). A QAT checkpoint carries its own config (model, data, quantization); an FP checkpoint is
read with the model/data given on the command line."""

from yoloq.cli import hydra_entry

if __name__ == "__main__":
    hydra_entry("eval")
