"""Hydra entry points for scripts/: bad input becomes one line on stderr and exit code 2."""

from __future__ import annotations

import sys

import hydra
from hydra.core.hydra_config import HydraConfig

from yoloq.config import CONF_DIR, check_group_overrides
from yoloq.errors import UserError


def _fail(e: UserError) -> None:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


def hydra_entry(command: str) -> None:
    if command == "eval" and not any(a.startswith("run_dir=") for a in sys.argv[1:]):
        sys.argv.append("run_dir=runs/eval-${now:%Y%m%d-%H%M%S}")  # not named like a training run
    try:
        check_group_overrides(sys.argv[1:])
    except UserError as e:
        _fail(e)

    @hydra.main(config_path=str(CONF_DIR), config_name="config", version_base=None)
    def main(cfg) -> None:
        run_dir = HydraConfig.get().runtime.output_dir
        try:
            if command == "train":
                from yoloq.engine.pipeline import train

                train(cfg, run_dir)
            else:
                from yoloq.eval.checkpoint_eval import evaluate_checkpoint

                evaluate_checkpoint(cfg, run_dir)
        except UserError as e:
            _fail(e)

    main()
