"""The doubling test of a QAT recipe: `python scripts/convergence.py runs/<E epochs>-* runs/<2E epochs>-* --out DIR`
(or `yoloq convergence ...`)."""

import sys

from yoloq.report.convergence import main

if __name__ == "__main__":
    sys.exit(main())
