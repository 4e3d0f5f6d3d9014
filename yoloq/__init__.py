"""yoloq: quantization-aware training for ultralytics YOLO detectors."""

import os

# ultralytics reaches for the network (online check, font and weight downloads, pip auto-install).
# yoloq must run offline and never install anything behind the user's back: set these before
# ultralytics is first imported. Users can still override them in their environment.
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "false")
os.environ.setdefault("YOLO_VERBOSE", "false")

__version__ = "0.1.0"
