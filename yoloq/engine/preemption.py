"""Preemption: SIGTERM (what `docker stop`, SLURM and Kubernetes send before killing) or SIGUSR1 (SLURM's
`--signal=USR1@N`) asks the run to stop. The trainer finishes its current step, writes a resumable checkpoint
and raises Preempted; the CLI turns that into one line and exit code 143 (128 + SIGTERM)."""

from __future__ import annotations

import signal
import threading

SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
EXIT_CODE = 128 + signal.SIGTERM


class Preempted(Exception):
    """Raised after a stop signal, once the run's state is safely on disk."""

    def __init__(self, message: str, checkpoint=None):
        super().__init__(message)
        self.checkpoint = checkpoint


class StopSignal:
    """A flag set by the handled signals while the block runs; the previous handlers come back after it.
    Only the main thread may install handlers, so elsewhere (e.g. a test's worker thread) it stays a flag."""

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else ""

    def _handle(self, signum, frame) -> None:
        self.signum = signum

    def __enter__(self) -> "StopSignal":
        if threading.current_thread() is threading.main_thread():
            for s in SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)  # None: set outside Python
        self._previous.clear()
