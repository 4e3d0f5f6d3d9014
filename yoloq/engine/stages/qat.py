"""The QAT stage: quantize and calibrate a copy of the FP model, then train it with the method's callbacks
(oscillation tracking, dampening, freezing, EMA) and the recorders behind the diagnostics."""

from __future__ import annotations

import logging
import time

from yoloq.config import qat_batch, quant_config
from yoloq.engine import distributed
from yoloq.engine.qat_from import load_source
from yoloq.engine.report import StageResult
from yoloq.engine.rng import seed_everything
from yoloq.engine.run import Run
from yoloq.engine.trainer import Recipe
from yoloq.eval.bn_refresh import refresh_bn_statistics
from yoloq.factory import quantized_copy
from yoloq.methods import build_callbacks
from yoloq.methods.distill import FeatureDistillation
from yoloq.methods.oscillation import TrackOscillations
from yoloq.mixed.cost import model_cost
from yoloq.track.diagnostics import write_qat_diagnostics
from yoloq.track.log_callback import LogMetrics
from yoloq.track.oscillation_history import OscillationHistory
from yoloq.track.run_log import RunLog
from yoloq.track.scale_history import ScaleHistory

log = logging.getLogger("yoloq")


def qat_callbacks(cfg, run_log: RunLog, teacher=None) -> list:
    """The method's callbacks, distillation from `teacher` (the FP model) when trainer.qat.distill is set, then the
    recorders (they see this step's trackers and EMA) and the metric log."""
    callbacks = build_callbacks(cfg.method, quant_config(cfg).w_bits)
    tracking = next(cb for cb in callbacks if isinstance(cb, TrackOscillations))
    weight = float(cfg.trainer.qat.get("distill") or 0)
    if weight > 0:
        if teacher is None:
            raise ValueError("trainer.qat.distill needs the FP model as the teacher")
        callbacks.append(FeatureDistillation(teacher, weight))  # after EMA, which copies the model before its hooks
    return callbacks + [OscillationHistory(tracking, cfg.logger.log_every), ScaleHistory(cfg.logger.scale_window),
                        LogMetrics(run_log, "qat")]


def refresh_bn_after_training(trainer, loader, batches: int, metrics: dict) -> tuple[dict, dict]:
    """trainer.qat.bn_refresh: the saved BN statistics are a moving average over weights that kept changing (and,
    at 3 bits, flipping between grid points), so they are re-estimated for the trained model as it is, from
    `batches` batches of the stage's own loader as it ended (without mosaic when close_mosaic closed it), and the
    model is scored again. Rank 0 re-estimates and broadcasts. Returns the new metrics and results.json's record
    of the change."""
    model = trainer.eval_model
    device = next(model.parameters()).device
    distributed.from_main(lambda: refresh_bn_statistics(model, loader, batches, device))
    distributed.broadcast_state(model, buffers_only=True)
    refreshed = distributed.from_main(lambda: trainer.evaluate(model))
    log.info("QAT: BatchNorm statistics re-estimated from %d batches: mAP50-95 %.4f -> %.4f", batches,
             metrics["mAP50-95"], refreshed["mAP50-95"])
    return refreshed, {"bn_refresh": batches, "mAP50-95_saved_bn": metrics["mAP50-95"]}


def qat_stage(run: Run, model, calib_batches):
    cfg, run_dir = run.cfg, run.run_dir
    run.check_stop()
    seed_everything(cfg.seed)  # the same QAT randomness whether or not the FP stage ran in this process
    qcfg = quant_config(cfg)
    start = time.time()
    fp_model = model.to(run.device)
    model = quantized_copy(cfg, fp_model, calib_batches)
    calib_time = time.time() - start
    cost = model_cost(model, int(cfg.data.imgsz))  # its compute and average bits, reported next to its mAP

    done, path = run.folder.finished("qat"), run_dir / "qat.pt"
    if done is None:  # qat_from: another run's QAT model, checked against this run (rank 0 reads it)
        source = distributed.from_main(lambda: load_source(cfg.get("qat_from"), run.folder.identity, cfg.seed))
        if source is not None:
            done, path = source
            log.info("QAT: the model of %s (mAP50-95 %.4f), not trained here (qat_from)", path,
                     done["metrics"]["mAP50-95"])
    if done is not None:
        model.load_state_dict(done["model"])
        return model, StageResult("qat", cfg.method.name, qcfg.w_bits, qcfg.a_bits, done["metrics"], done["wall_time"],
                                  str(path), extra={**done["extra"], **cost})

    recipe = Recipe.from_cfg(cfg.trainer.qat)
    loader = run.data.train_loader(cfg.seed, batch=qat_batch(cfg))
    trainer = run.trainer("qat", model, loader, recipe, qat_callbacks(cfg, run.log, teacher=fp_model))
    metrics = trainer.fit()
    refresh = int(cfg.trainer.qat.get("bn_refresh") or 0)
    bn_record = {}
    if refresh:
        metrics, bn_record = refresh_bn_after_training(trainer, loader, refresh, metrics)
    oscillations = trainer.callback(TrackOscillations).stats()
    extra = {**{k: oscillations[k] for k in ("oscillating_pct", "frozen_pct")}, **cost,  # steps: the run's length in
             "batch": qat_batch(cfg), "steps": trainer.step, **bn_record}  # optimizer steps, not only epochs
    wall_time = trainer.wall_time + calib_time

    def write_outputs() -> None:
        if cfg.logger.diagnostics:
            ema_model = None if trainer.eval_model is trainer.model else trainer.eval_model
            write_qat_diagnostics(run_dir, trainer.model, ema_model, trainer.callback(OscillationHistory),
                                  trainer.callback(ScaleHistory), run.log, cfg.method.track.max_bits,
                                  cfg.method.track.threshold)
        run.folder.write_json("oscillations.json", oscillations)

    distributed.from_main(write_outputs)
    log.info("QAT: %.2f%% of the tracked weights oscillate (f > %g), %.2f%% frozen", oscillations["oscillating_pct"],
             cfg.method.track.threshold, oscillations["frozen_pct"])
    path = run.folder.save_final("qat", {"model": trainer.eval_model.state_dict(), "metrics": metrics,
                                         "history": trainer.history, "callbacks": trainer.callback_states(),
                                         "wall_time": wall_time, "extra": extra})
    run.stage_done("qat", trainer)
    return trainer.eval_model, StageResult("qat", cfg.method.name, qcfg.w_bits, qcfg.a_bits, metrics, wall_time,
                                           str(path), extra=extra)
