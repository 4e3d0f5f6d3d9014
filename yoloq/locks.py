"""Advisory file locks (flock) for what two processes must not do at once: train into one run folder, or build
one cache entry (the dataset, the FP model). The kernel drops a lock when its process dies, so a crashed run
never leaves a stale lock behind; the lock file keeps the holder's PID to name it in the message."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from pathlib import Path

from yoloq.errors import UserError

log = logging.getLogger("yoloq")


def _holder(fd: int) -> str:
    with contextlib.suppress(OSError, ValueError):
        pid = int(os.pread(fd, 32, 0).decode().strip() or "x")
        return f"process {pid}"
    return "another process"


_HELD: dict[Path, "FileLock"] = {}  # this process's locks: taking one again counts up, not a self-deadlock


class FileLock:
    """An exclusive lock on `path`: `acquire(wait=False)` refuses at once with one line naming the holder;
    `acquire(wait=True)` logs whom it waits for, then blocks until the holder is done. A process that already
    holds the lock (e.g. the command line took it before Hydra wrote into the folder) gets the same lock back,
    counted: the file is unlocked when every acquire has been released (or the process ends)."""

    def __init__(self, path: str | Path, what: str):
        self.path, self.what = Path(path).absolute(), what
        self.fd: int | None = None
        self.count = 0

    def acquire(self, wait: bool, refusal: str = "") -> "FileLock":
        held = _HELD.get(self.path)
        if held is not None:
            held.count += 1
            return held
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            if not wait:
                os.close(fd)
                raise UserError(f"{self.what} is in use by {holder} (lock {self.path}){refusal}") from None
            log.info("waiting for %s, which holds %s", holder, self.what)
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd, self.count = fd, 1
        _HELD[self.path] = self
        return self

    def release(self) -> None:
        if self.fd is None:
            return
        self.count -= 1
        if self.count > 0:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(self.fd, 0)
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd = None
        _HELD.pop(self.path, None)

    def __enter__(self) -> "FileLock":
        if self.fd is None:
            self.acquire(wait=True)
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def waiting_lock(path: str | Path, what: str) -> FileLock:
    """For caches: the second process waits, then finds the entry the first one built."""
    return FileLock(path, what).acquire(wait=True)
