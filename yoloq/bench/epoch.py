"""One FP training epoch against one QAT epoch of the default method, as the main command runs them: the
embedded data, the configured loader and workers, every per-step callback (FP: EMA; QAT: the method's
callbacks with oscillation tracking, the recorders and the metric log), the trainer's CPU threads. Evaluation
is left out (the stages section measures it). Epochs alternate FP, QAT, FP, QAT, ...; the ratio is the median
of the pairs'."""

from __future__ import annotations

import statistics
import time

from yoloq.config import qat_batch, resolve_device
from yoloq.engine.cpu_threads import CpuThreads
from yoloq.engine.stages.fp import fp_cache_path, load_fp_cache
from yoloq.engine.stages.qat import qat_callbacks
from yoloq.engine.trainer import Recipe, Trainer
from yoloq.factory import build_data, calibration_batches, float_model, quantized_copy
from yoloq.methods.ema import EMACallback
from yoloq.track.log_callback import LogMetrics
from yoloq.track.run_log import NullRunLog

from .stages import _no_evaluation


def bench_epoch(cfg, repeats: int, fraction: float = 1.0) -> dict:
    device = resolve_device(cfg.device)
    threads = CpuThreads.from_cfg(cfg, device)
    data = build_data(cfg, device)
    fp_model = float_model(cfg, data).to(device)
    cached = fp_cache_path(cfg, data.info)
    if cached.is_file():  # a trained model's gradients and loss targets are those of the real QAT stage
        fp_model.load_state_dict(load_fp_cache(cached)["model"])
    qat_model = quantized_copy(cfg, fp_model, calibration_batches(cfg, data, device))

    def epoch(stage: str, share: float) -> tuple[float, int]:
        section = cfg.trainer[stage]
        recipe = Recipe.from_cfg({**section, "epochs": 1, "close_mosaic": 0})
        if stage == "fp":
            model, callbacks = fp_model, ([EMACallback()] if section.ema else []) + [LogMetrics(NullRunLog(), "fp")]
        else:
            model, callbacks = qat_model, qat_callbacks(cfg, NullRunLog(), teacher=fp_model)
        loader = data.train_loader(cfg.seed, fraction=share, batch=qat_batch(cfg) if stage == "qat" else None)
        trainer = Trainer(stage, model, loader, _no_evaluation, recipe, device, callbacks, data.hyp, cfg.progress,
                          threads=threads)
        start = time.perf_counter()
        trainer.fit()
        changes[stage] = changes.get(stage, 0) + threads.changes
        return time.perf_counter() - start, trainer.step

    changes: dict[str, int] = {}  # thread count changes during each stage's timed epochs
    epoch("qat", 0.03)  # a few steps that compile the fake-quant kernels, which a real run does once
    times: dict[str, list[float]] = {"fp": [], "qat": []}
    changes.clear()
    steps = {}
    for _ in range(repeats):
        for stage in ("fp", "qat"):
            seconds, steps[stage] = epoch(stage, fraction)
            times[stage].append(seconds)
    ratios = [q / f for f, q in zip(times["fp"], times["qat"])]
    return {
        "model": cfg.model.name, "data": cfg.data.name, "batch": cfg.trainer.batch, "qat_batch": qat_batch(cfg),
        "workers": cfg.trainer.workers,
        "imgsz": cfg.data.imgsz, "bits": cfg.w_bits, "method": cfg.method.name, "fraction": fraction,
        "fp_trained": cached.is_file(), "threads": threads.target, "adapt_threads": threads.adapt,
        "repeats": repeats, "steps": steps, "thread_changes": changes, "fp_s": times["fp"], "qat_s": times["qat"],
        "fp_epoch_s": statistics.median(times["fp"]), "qat_epoch_s": statistics.median(times["qat"]),
        "ratio": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
    }
