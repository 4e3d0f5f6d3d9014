"""Files written atomically: a reader (or a resumed run) sees the old file or the new one, never a torn one.
The bytes go to a temporary file in the same folder, are flushed to disk, and replace the target in one rename."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Callable, IO

from yoloq.errors import UserError


def write_atomic(path: str | Path, write: Callable[[IO[bytes]], None], what: str = "file") -> Path:
    """`write(f)` fills a temporary file that then replaces `path`; a failure leaves `path` as it was."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:  # torch's zip writer reports a full disk as a RuntimeError
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        reason = getattr(e, "strerror", None) or str(e).splitlines()[0]
        raise UserError(f"could not write {what} {path} ({reason}): free disk space or fix the folder's "
                        "permissions, then resume (the previous file, if any, is intact)") from None
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    return write_atomic(path, lambda f: f.write(text.encode()))


def write_json_atomic(path: str | Path, obj, indent: int | None = 2) -> Path:
    return write_text_atomic(path, json.dumps(obj, indent=indent) + "\n")
