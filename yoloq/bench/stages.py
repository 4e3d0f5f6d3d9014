"""Stage-level timings on the configured dataset: the QC stage against one QAT epoch, and evaluation
throughput (pycocotools included) of the FP and the fake-quantized model."""

from __future__ import annotations

import time

from yoloq.config import qat_batch, resolve_device
from yoloq.engine.stages.fp import fp_cache_path, load_fp_cache
from yoloq.engine.stages.qat import qat_callbacks
from yoloq.engine.stages.qc import qc_model, qc_recipe
from yoloq.engine.trainer import Recipe, Trainer
from yoloq.factory import build_data, calibration_batches, float_model, quantized_copy
from yoloq.methods.correction import FrozenBatchNorm
from yoloq.track.run_log import NullRunLog


def _no_evaluation(model) -> dict:
    """Stage timings leave evaluation out (it is measured on its own)."""
    return {"mAP50-95": float("nan"), "mAP50": float("nan")}


def _timed_fit(trainer: Trainer) -> tuple[float, int]:
    start = time.perf_counter()
    trainer.fit()
    return time.perf_counter() - start, trainer.step


def bench_stages(cfg, fraction: float) -> dict:
    """Seconds for one QAT epoch and for the QC stage over `fraction` of the training set (the same share
    for both), and images/s of the evaluator on the val split."""
    device = resolve_device(cfg.device)
    data = build_data(cfg, device)
    model = float_model(cfg, data).to(device)
    cached = fp_cache_path(cfg, data.info)
    trained = cached.is_file()
    if trained:  # an untrained model's outputs make NMS and pycocotools unrepresentatively cheap
        model.load_state_dict(load_fp_cache(cached)["model"])
    calib = calibration_batches(cfg, data, device)
    qat_model = quantized_copy(cfg, model, calib)

    recipe = Recipe.from_cfg({**cfg.trainer.qat, "epochs": 1, "close_mosaic": 0})
    loader = data.train_loader(cfg.seed, fraction=fraction, batch=qat_batch(cfg))
    qat = Trainer("qat", qat_model, loader, _no_evaluation, recipe, device,
                  qat_callbacks(cfg, NullRunLog(), teacher=model), data.hyp, cfg.progress)
    qat_s, qat_steps = _timed_fit(qat)

    qc_fraction = fraction * float(cfg.trainer.qc.fraction)
    qc_loader = data.train_loader(f"{cfg.seed}-qc", fraction=qc_fraction, mosaic=cfg.trainer.qc.mosaic)
    qc = Trainer("qc", qc_model(cfg, qat.model, device), qc_loader, _no_evaluation, qc_recipe(cfg), device,
                 [FrozenBatchNorm()], data.hyp, cfg.progress)
    qc_s, qc_steps = _timed_fit(qc)

    evaluation = {}
    images = len(data.evaluator.loader.dataset)
    for name, m in (("fp", model), ("qat", qat.eval_model)):
        start = time.perf_counter()
        data.evaluator(m)
        evaluation[name] = {"images": images, "seconds": time.perf_counter() - start}
        evaluation[name]["images_per_s"] = images / evaluation[name]["seconds"]
    return {
        "model": cfg.model.name, "data": cfg.data.name, "batch": cfg.trainer.batch, "qat_batch": qat_batch(cfg),
        "fraction": fraction,
        "fp_trained": trained, "device": str(device),
        "qat_epoch": {"seconds": qat_s, "steps": qat_steps, "epochs": cfg.trainer.qat.epochs},
        "qc_stage": {"seconds": qc_s, "steps": qc_steps, "epochs": cfg.trainer.qc.epochs},
        "qc_over_qat_epoch": qc_s / qat_s,
        "eval": evaluation,
    }
