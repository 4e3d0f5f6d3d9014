"""Checkpoints written atomically: a crash mid-write never replaces a good file with a torn one."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import torch

from yoloq.errors import UserError


def save_atomic(obj, path: str | Path) -> Path:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:  # torch's zip writer reports a full disk as a RuntimeError
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        reason = getattr(e, "strerror", None) or str(e).splitlines()[0]
        raise UserError(f"could not write checkpoint {path} ({reason}): free disk space or fix the folder's "
                        "permissions, then resume (the previous checkpoint, if any, is intact)") from None
    return path


def load_checkpoint(path: str | Path) -> dict:
    return torch.load(Path(path), map_location="cpu", weights_only=False)
