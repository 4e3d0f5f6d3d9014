"""yoloq's own checkpoints: written atomically, read with `torch.load(weights_only=True)`, so a file crafted
to run code when unpickled is refused instead of run. They hold only tensors, numbers, strings and containers
of them (the random states included, engine/rng.py)."""

from __future__ import annotations

from pathlib import Path

import torch

from yoloq.atomic import write_atomic
from yoloq.errors import UserError


def save_atomic(obj, path: str | Path) -> Path:
    return write_atomic(path, lambda f: torch.save(obj, f), what="checkpoint")


def load_checkpoint(path: str | Path, hint: str = "give a .pt written by scripts/train.py") -> dict:
    """A yoloq checkpoint, or one line naming the file and what is wrong with it: missing, damaged, holding
    objects other than tensors and plain data (not ours, maybe unsafe), or not a dict."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist: {hint}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for a torn, foreign or unsafe file
        text = str(e)
        if "weights_only" in text or "Unsupported global" in text or "Unsupported operand" in text:
            raise UserError(f"checkpoint {path} holds Python objects other than tensors and plain data, so it was "
                            f"not loaded (loading could run code): it is not a yoloq checkpoint; {hint}") from None
        raise UserError(f"checkpoint {path} cannot be read ({type(e).__name__}: {text.splitlines()[0][:120] if text else ''}): "
                        f"it is damaged or not a PyTorch checkpoint; {hint}") from None
    if not isinstance(ckpt, dict):
        raise UserError(f"checkpoint {path} holds a {type(ckpt).__name__}, not a yoloq checkpoint: {hint}")
    return ckpt
