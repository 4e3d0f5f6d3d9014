"""Speed and memory of fake-quantized training: `python scripts/bench.py` (or `yoloq bench`; --help lists the
sections)."""

import sys

from yoloq.bench.command import main

if __name__ == "__main__":
    sys.exit(main())
