"""Tabulate finished runs: `python scripts/compare.py runs/multirun-*/*` (or `yoloq compare ...`)."""

from yoloq.report.command import main

if __name__ == "__main__":
    main()
