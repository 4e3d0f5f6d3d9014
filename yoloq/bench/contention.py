"""FP and QAT training steps while one competing busy process runs on the machine, each against its own
time on a quiet machine; with the thread count the trainer uses (adapting) and, for reference, a fixed one."""

from __future__ import annotations

import copy
import statistics
import subprocess
import sys
import time

import torch

from yoloq.engine.cpu_threads import CpuThreads
from yoloq.models.build import build_model, high_precision_layers
from yoloq.quant import QuantConfig, quantize_model

from .measure import interleaved_times, median
from .train_step import StepRunner, random_batch

BUSY_LOOP = "while True: pass"


class BusyProcess:
    """A single-threaded Python loop in a child process, for the length of a with block."""

    def __enter__(self):
        self.proc = subprocess.Popen([sys.executable, "-c", BUSY_LOOP])
        time.sleep(0.5)  # let it reach its loop
        return self

    def __exit__(self, *exc):
        self.proc.kill()
        self.proc.wait()
        time.sleep(0.5)


def _spread(values: list[float]) -> dict:
    q = statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3
    return {"median_s": median(values), "q1_s": q[0], "q3_s": q[2], "mean_s": statistics.fmean(values)}


def _phase(runners: dict, threads: CpuThreads, repeats: int, warmup: int, device, busy: bool) -> dict:
    threads.start()
    if busy:
        with BusyProcess():
            times = interleaved_times(runners, repeats, warmup, device)
    else:
        times = interleaved_times(runners, repeats, warmup, device)
    out = {name: _spread(t) for name, t in times.items()}
    out["thread_changes"] = threads.changes
    return out


def bench_contention(model_yaml: str, batch: int, imgsz: int, bits: int, device: torch.device, repeats: int,
                     warmup: int, fixed_repeats: int = 5, num_classes: int = 80) -> dict:
    """Slowdown = median step time beside a busy process / median step time alone, for FP and QAT (per-tensor),
    with adapting threads (what training does) and with a fixed count (the behaviour before the fix)."""
    names = tuple(str(i) for i in range(num_classes))
    data = random_batch(batch, imgsz, num_classes, device)
    fp = build_model(model_yaml, names).to(device)
    qat = quantize_model(copy.deepcopy(fp), QuantConfig(w_bits=bits, a_bits=bits), calib_batches=[data["img"][:2]],
                         high_precision=high_precision_layers(fp))
    result = {"model": model_yaml, "batch": batch, "imgsz": imgsz, "bits": bits, "repeats": repeats,
              "busy_process": f"{sys.executable} -c '{BUSY_LOOP}'"}
    for mode, adapt, n in (("adaptive", True, repeats), ("fixed", False, fixed_repeats)):
        threads = CpuThreads(adapt=adapt and device.type == "cpu")
        runners = {"fp": StepRunner(fp, data, False, threads=threads),
                   "qat": StepRunner(qat, data, False, threads=threads)}
        alone = _phase(runners, threads, n, warmup, device, busy=False)
        busy = _phase(runners, threads, n, warmup, device, busy=True)
        r = {"threads": threads.target, "alone": alone, "busy": busy}
        for name in ("fp", "qat"):
            r[f"{name}_slowdown"] = busy[name]["median_s"] / alone[name]["median_s"]
        r["qat_over_fp_slowdown"] = r["qat_slowdown"] / r["fp_slowdown"]
        result[mode] = r
        torch.set_num_threads(threads.target)
    # The goal's figures are those of the trainer's own behaviour.
    result["fp_slowdown"] = result["adaptive"]["fp_slowdown"]
    result["qat_slowdown"] = result["adaptive"]["qat_slowdown"]
    return result
