"""Timing and memory meters: medians over interleaved repeats, peak memory on CPU and CUDA."""

from __future__ import annotations

import ctypes
import gc
import statistics
import sys
import time
from collections.abc import Callable

import torch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved_times(fns: dict[str, Callable[[], object]], repeats: int, warmup: int,
                      device: torch.device) -> dict[str, list[float]]:
    """Seconds per call of each fn, the fns taking turns so that drift in machine speed hits them alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            times[name].append(time.perf_counter() - start)
    return times


def median(values: list[float]) -> float:
    return statistics.median(values)


def median_ratio(num: list[float], den: list[float]) -> float:
    """The median of the per-repeat ratios (each pair ran back to back)."""
    return statistics.median(a / b for a, b in zip(num, den))


def ratio_spread(num: list[float], den: list[float]) -> list[float]:
    """The quartiles [q1, q3] of the per-repeat ratios: how far one repeat's ratio strays from the median."""
    ratios = [a / b for a, b in zip(num, den)]
    if len(ratios) < 2:
        return [ratios[0], ratios[0]]
    q = statistics.quantiles(ratios, n=4)
    return [q[0], q[2]]


def _release_free_memory() -> None:
    gc.collect()
    if sys.platform.startswith("linux"):
        try:  # glibc keeps freed heap pages; without this the peak below would miss reused memory
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except OSError:
            pass


def _status_mb(field: str) -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def peak_memory_mb(fn: Callable[[], object], device: torch.device) -> float | None:
    """How far memory rose above its level before fn, at its highest during fn (MiB).

    CUDA: the caching allocator's peak of allocated bytes. CPU (Linux): the process's peak resident
    set (VmHWM, reset through /proc/self/clear_refs) over the resident set before; None elsewhere.
    """
    _release_free_memory()
    if device.type == "cuda":
        _sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        _sync(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20
    before = _status_mb("VmRSS")
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return None
    fn()
    peak = _status_mb("VmHWM")
    return None if before is None or peak is None else peak - before


def saved_for_backward_mb(forward: Callable[[], object]) -> float:
    """MiB of distinct storages autograd keeps for backward during forward() (what a training step holds
    at its peak besides weights and gradients); device-independent."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = forward()
    del out
    return sum(storages.values()) / 2**20
