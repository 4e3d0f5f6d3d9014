"""The stages of one run in order: data -> FP model (cached) -> quantize + calibrate -> QAT (the method's
callbacks) -> [soft-rounding evaluation] -> [QC -> folded into BN] -> [ONNX export, checked] -> results.

`train(cfg)` is a plain function, so tests call it with a composed config; scripts/train.py is only the Hydra
entry point around it. Under torchrun every rank runs this pipeline; rank 0 alone reads and writes files and
evaluates (distributed.from_main). With resume, finished stages are loaded from their checkpoints and the
unfinished one continues from its `<stage>-last.pt` (engine/run_folder.py). Each stage is a file in stages/.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

from omegaconf import OmegaConf, open_dict

from yoloq.atomic import write_text_atomic
from yoloq.config import qat_batch, resolve_device, validate
from yoloq.engine import distributed
from yoloq.engine.cpu_threads import CpuThreads
from yoloq.engine.preemption import StopSignal
from yoloq.engine.report import StageResult, print_table, results_rows
from yoloq.engine.resume import has_progress, resume_target
from yoloq.engine.rng import seed_everything
from yoloq.engine.run import Run
from yoloq.engine.run_folder import RunFolder, check_fresh, lock_run_folder
from yoloq.engine.stages.export import export_stage
from yoloq.engine.stages.fp import fp_stage
from yoloq.engine.stages.qat import qat_stage
from yoloq.engine.stages.qc import qc_stage
from yoloq.engine.stages.soft_round import soft_round_stage
from yoloq.errors import UserError
from yoloq.factory import build_data, calibration_batches
from yoloq.mixed.plan import as_layers, read_plan
from yoloq.track.run_log import NullRunLog, RunLog

log = logging.getLogger("yoloq")


def _setup_logging(run_dir: Path) -> None:
    """Rank 0 logs to the console and <run>/train.log; other ranks only their warnings, to the console."""
    main = distributed.is_main()
    log.setLevel(logging.INFO if main else logging.WARNING)
    log.propagate = False
    for h in list(log.handlers):
        log.removeHandler(h)
    prefix = "" if main else f"[rank {distributed.rank()}] "
    fmt = logging.Formatter(f"%(asctime)s %(levelname)s {prefix}%(message)s", "%H:%M:%S")
    handlers = [logging.StreamHandler()] + ([logging.FileHandler(run_dir / "train.log")] if main else [])
    for handler in handlers:
        handler.setFormatter(fmt)
        log.addHandler(handler)


def train(cfg, run_dir: str | Path | None = None) -> list[StageResult]:
    """One run. `resume=true|PATH` continues the run in that folder (resume.resume_target); under torchrun
    every rank calls this with the same run folder. Rank 0 holds the folder's lock until the run ends."""
    validate(cfg)
    run_dir = Path(run_dir or cfg.run_dir)
    target = resume_target(cfg.get("resume"), str(run_dir))
    run_dir = target or run_dir
    with contextlib.ExitStack() as stack:
        if distributed.is_main():
            stack.callback(lock_run_folder(run_dir).release)
        resuming = distributed.broadcast_object(target is not None and has_progress(target))  # rank 0's view
        distributed.from_main(lambda: check_fresh(run_dir, resuming, target))
        return _train(cfg, run_dir, resuming)


def _train(cfg, run_dir: Path, resuming: bool) -> list[StageResult]:
    _setup_logging(run_dir)
    plan = read_plan(cfg.quant.get("layer_bits"))
    if plan is not None:  # the mapping itself goes into config.yaml and the checkpoints, not the file's path
        with open_dict(cfg):
            cfg.quant.layer_bits = {"layers": as_layers(plan)}
    if distributed.is_main():  # a resumed run keeps the run's config.yaml and records its own next to it
        name = "config-resumed.yaml" if resuming else "config.yaml"
        write_text_atomic(run_dir / name, OmegaConf.to_yaml(cfg, resolve=True))
    seed_everything(cfg.seed)
    device = distributed.local_device(resolve_device(str(cfg.device)))
    world = distributed.world_size()
    for key, batch in (("trainer.batch", cfg.trainer.batch), ("trainer.qat.batch", qat_batch(cfg))):
        if batch % world:
            raise UserError(f"{key}={batch} is the global batch and must divide among the {world} processes: "
                            f"use a multiple of {world}, e.g. {key}={world * max(batch // world, 1)}")
    log.info("run folder %s, device %s%s%s", run_dir, device,
             f", {world} processes (batch {cfg.trainer.batch // world} each)" if world > 1 else "",
             ", resuming" if resuming else "")

    run_log = RunLog.from_cfg(cfg, run_dir) if distributed.is_main() else NullRunLog(cfg.logger.log_every)
    threads = CpuThreads.from_cfg(cfg, device)
    with StopSignal() as stop:
        try:
            data = build_data(cfg, device)
            run = Run(cfg, data, device, RunFolder(run_dir, cfg, data.info.names, run_log, resuming), stop,
                      threads=threads)
            fp_model, fp_result = fp_stage(run)
            calib = calibration_batches(cfg, data, device)
            qat_model, qat_result = qat_stage(run, fp_model, calib)
            results = [fp_result, qat_result]
            if cfg.eval.soft_round is not None:
                results.append(soft_round_stage(run, qat_model, qat_result))
            final_model, final_result = qat_model, qat_result
            if cfg.method.qc.enabled:
                qc_results, final_model = qc_stage(run, qat_model, calib, qat_result)
                results += qc_results
                final_result = qc_results[-1]
            if cfg.export.onnx:
                results.append(distributed.from_main(lambda: export_stage(run, final_model, calib[0], final_result)))
            distributed.from_main(lambda: _finish(cfg, run, results))
        finally:
            run_log.close()
    if distributed.is_main():
        print_table(results)
    return results


def _finish(cfg, run: Run, results: list[StageResult]) -> None:
    """results.json last: resume and the multirun report read it as the sign that the run is complete."""
    if distributed.world_size() > 1:  # the evidence that DDP kept every rank's parameters identical
        run.folder.write_json("ddp_check.json", run.fingerprints)
    run.log.summary(summary_of(results))
    if cfg.logger.wandb is not None and cfg.logger.wandb.log_checkpoint:
        run.log.artifact(Path(results[-1].checkpoint), f"{run.run_dir.name}-{results[-1].stage}")
    run.folder.write_json("results.json", results_rows(results))


def summary_of(results: list[StageResult]) -> dict:
    """The final numbers of a run, flat: <stage>/mAP50-95, <stage>/mAP50, <stage>/<extra>."""
    out = {}
    for r in results:
        out.update({f"{r.stage}/{k}": v for k, v in r.metrics.items() if k in ("mAP50-95", "mAP50")})
        out.update({f"{r.stage}/{k}": v for k, v in r.extra.items()})
    return out
