"""Per-layer precision within a compute budget: `python scripts/mixed_precision.py search=eagl high=4 low=2
budget=3` (or `yoloq mixed ...`; search=alps|random, bits=[4,3,2], budget_bops=, +checkpoint=runs/<run>/qat.pt).
Writes <run folder>/layer_bits.yaml; train it with `python scripts/train.py quant.layer_bits=<that file>`."""

from yoloq.cli import hydra_entry

if __name__ == "__main__":
    hydra_entry("mixed")
