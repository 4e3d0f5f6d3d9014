"""How many CPU threads a training step uses, and fewer while other work competes for the cores.

Why: PyTorch's CPU kernels (and the compiled fake-quant kernels) run as OpenMP parallel regions that end
in a barrier, and libgomp's threads spin there before they sleep. With as many threads as cores, one more
runnable process (a second job, or this run's own loader workers) deschedules one of our threads; the
others spin at the barrier, holding their cores, until the scheduler gives the descheduled one a turn.
Every one of the thousands of parallel regions in a step then waits for a time slice: on 2 cores a
yolov5n step became 4-12x slower beside one busy process, not the 1.5x of a fair share. Passive waiting
(GOMP_SPINCOUNT=0) removes that but costs 1.4-1.6x on an idle machine; one thread is immune but 1.8x
slower when the cores are free.

So the count follows the machine: CpuThreads samples the scheduler's own account of this process's threads
(/proc/self/task/*/schedstat: the time each spent runnable but waiting for a CPU) over a window of steps.
When our threads wait for CPUs on average more than `max_waiting` thread-equivalents, it drops that many
threads; after a while it probes the full count again (backing off while the contention lasts).
Changing the thread count changes the order of float reductions, so runs that adapt are not bitwise
reproducible across machine load: `trainer.adapt_threads=false` keeps a fixed count.
"""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path

import torch

log = logging.getLogger("yoloq")


def _cgroup_cpu_limit(root: Path = Path("/sys/fs/cgroup"), proc_cgroup: Path = Path("/proc/self/cgroup")) -> float | None:
    """The CPU quota (in CPUs) of this process's cgroup or its ancestors, None without one (v2 cpu.max, v1
    cpu.cfs_quota_us / cpu.cfs_period_us)."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    limits = []
    for line in lines:
        hierarchy, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        v2 = hierarchy == "0" and controllers == ""
        if not v2 and "cpu" not in controllers.split(","):
            continue
        base = root if v2 else root / controllers
        if not v2 and not base.is_dir():
            base = root / "cpu"
        rel = Path(path.lstrip("/"))
        for folder in [base / rel, *(base / p for p in rel.parents)]:  # the cgroup and every ancestor
            try:
                if v2:
                    quota, period = (folder / "cpu.max").read_text().split()[:2]
                else:
                    quota = (folder / "cpu.cfs_quota_us").read_text().strip()
                    period = (folder / "cpu.cfs_period_us").read_text().strip()
            except (OSError, ValueError):
                continue
            if quota not in ("max", "-1") and int(period) > 0:
                limits.append(int(quota) / int(period))
    return min(limits) if limits else None


def usable_cpus() -> int:
    """The CPUs this process may really use: its affinity mask, capped by a cgroup CPU quota (a container's
    --cpus), never os.cpu_count() (the host's)."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    limit = _cgroup_cpu_limit()
    if limit is not None:
        n = min(n, max(1, math.floor(limit)))
    return max(n, 1)


def default_threads() -> int:
    """usable_cpus() shared among the processes torchrun starts on this machine."""
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    return max(1, usable_cpus() // max(local, 1))


def _waiting_seconds() -> float | None:
    """Summed time this process's threads have spent runnable but waiting for a CPU (None where the kernel
    keeps no schedstat)."""
    total, seen = 0, False
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return None
    for tid in tasks:
        try:
            with open(f"/proc/self/task/{tid}/schedstat") as f:
                total += int(f.read().split()[1])
            seen = True
        except (OSError, IndexError, ValueError):  # a thread that ended meanwhile
            continue
    return total / 1e9 if seen else None


class CpuThreads:
    """torch's intra-op thread count for a training loop: `threads` at the start; with `adapt`, fewer while
    our threads wait for CPUs (see the module docstring). Call start() before the loop and tick() after each
    step; both are cheap (tick reads /proc once per window)."""

    def __init__(self, threads: int | None = None, adapt: bool = True, window_s: float = 1.0,
                 max_waiting: float = 0.25, probe_s: float = 10.0, max_probe_s: float = 320.0,
                 clock=time.monotonic, waiting=_waiting_seconds, set_threads=torch.set_num_threads):
        if threads is not None and threads < 1:
            raise ValueError(f"threads={threads} must be a positive integer or None (the usable CPUs)")
        self.target = threads or default_threads()
        self.adapt = adapt
        self.window_s, self.max_waiting = window_s, max_waiting
        self.probe_s, self.max_probe_s = probe_s, max_probe_s
        self._clock, self._waiting, self._set = clock, waiting, set_threads
        self.current = self.target
        self.changes = 0  # how often the count changed (reported)
        self._window: tuple[float, float] | None = None  # (start time, waiting seconds at start)
        self._probe_at: float | None = None
        self._backoff = probe_s
        self._probing = False

    @classmethod
    def from_cfg(cls, cfg, device) -> "CpuThreads":
        """The run's threads (`trainer.threads`, `trainer.adapt_threads`), set now, for data building and evaluation
        too; adapted only while training on CPU."""
        threads = cls(cfg.trainer.get("threads"), adapt=cfg.trainer.get("adapt_threads", True) and device.type == "cpu")
        torch.set_num_threads(threads.target)
        return threads

    def start(self) -> None:
        self._apply(self.target)
        self.changes = 0
        self._probe_at, self._backoff, self._probing = None, self.probe_s, False
        self._open_window()

    def _open_window(self) -> None:
        waited = self._waiting() if self.adapt else None
        self._window = None if waited is None else (self._clock(), waited)

    def _apply(self, n: int) -> None:
        if n != self.current:
            self.changes += 1
            log.debug("cpu threads %d -> %d", self.current, n)
        self.current = n
        self._set(n)

    def tick(self) -> None:
        if self._window is None:
            return
        now = self._clock()
        started, waited_before = self._window
        if now - started < self.window_s:
            return
        waited = self._waiting()
        if waited is None:
            self._window = None
            return
        waiting = (waited - waited_before) / (now - started)  # mean number of our threads waiting for a CPU
        if waiting > self.max_waiting and self.current > 1:
            self._backoff = min(self._backoff * 2, self.max_probe_s) if self._probing else self.probe_s
            self._apply(max(1, self.current - math.ceil(waiting)))
            self._probe_at, self._probing = now + self._backoff, False
        elif self._probing:  # the full count ran without waiting: the contention is over
            self._probing, self._probe_at, self._backoff = False, None, self.probe_s
        elif self._probe_at is not None and now >= self._probe_at and self.current < self.target:
            self._apply(self.target)
            self._probing = True
        self._open_window()
