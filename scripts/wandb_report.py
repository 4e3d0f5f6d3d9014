"""The method comparison as a W&B report: `python scripts/wandb_report.py --project yoloq --group <group>` (or
`yoloq wandb-report ...`; --dry-run prints the spec without the network)."""

import sys

from yoloq.report.wandb_report import main

if __name__ == "__main__":
    sys.exit(main())
