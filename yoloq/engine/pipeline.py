"""The stage pipeline of one run: data -> FP model (cached) -> quantize + calibrate -> QAT (the method's
callbacks) -> [soft-rounding evaluation] -> [QC -> folded into BN] -> results.

`train(cfg)` is a plain function, so tests call it with a composed config; scripts/train.py is only
the Hydra entry point around it. Under torchrun every rank runs this pipeline; rank 0 alone reads and writes
files and evaluates (distributed.from_main). With resume, finished stages are loaded from their checkpoints
and the unfinished one continues from its `<stage>-last.pt` (engine/resume.py).
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import random
import shutil
import time
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from yoloq.config import quant_config, resolve_device, validate
from yoloq.errors import UserError
from yoloq.data.loaders import build_loader
from yoloq.data.prepare import DatasetInfo, prepare_dataset
from yoloq.engine import distributed
from yoloq.engine.checkpoint import save_atomic
from yoloq.engine.cpu_threads import CpuThreads
from yoloq.engine.preemption import Preempted, StopSignal
from yoloq.engine.report import StageResult, print_table, write_results
from yoloq.engine.resume import (STATE_FORMAT, STATE_VERSION, check_identity, has_progress, read_checkpoint,
                                 resume_target, run_identity, state_path)
from yoloq.engine.trainer import Recipe, Trainer
from yoloq.eval.coco_eval import CocoEvaluator
from yoloq.methods import build_callbacks
from yoloq.methods.correction import FrozenBatchNorm
from yoloq.methods.ema import EMACallback
from yoloq.models.build import build_model, high_precision_layers, hyperparameters, load_weights, our_yaml_file
from yoloq.quant import quantize_model
from yoloq.quant.correction import add_corrections, fold_corrections
from yoloq.quant.deploy import to_deploy
from yoloq.quant.prepare import soft_rounding
from yoloq.track.diagnostics import write_qat_diagnostics
from yoloq.track.log_callback import LogMetrics
from yoloq.track.oscillation_history import OscillationHistory
from yoloq.track.run_log import NullRunLog, RunLog
from yoloq.track.scale_history import ScaleHistory

log = logging.getLogger("yoloq")
FP_CACHE_VERSION = 3  # 2: the resumable training loader; 3: its mosaic buffer starts full each epoch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


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


@dataclass
class RunData:
    info: DatasetInfo
    hyp: object  # ultralytics' hyperparameter namespace (augmentation, loss gains)
    evaluator: CocoEvaluator
    batch: int
    workers: int
    device: str

    def train_loader(self, seed, fraction: float = 1.0, mosaic: bool = True):
        """A fresh augmenting loader for one stage (a stage that closes mosaic must not close it for the next),
        its epochs shuffled by `seed`."""
        return build_loader(self.info, self.hyp, self.info.train_split, self.batch, self.workers, train=True,
                            device=self.device, fraction=fraction, mosaic=mosaic, seed=seed)


def model_task(cfg) -> str:
    """detect, or segment for the -seg models (their conf/model file says so)."""
    return str(cfg.model.get("task", "detect"))


def build_data(cfg, device: torch.device) -> RunData:
    """Prepare the dataset and the pycocotools evaluator of its val split; train loaders are built per stage.
    Under torchrun rank 0 goes first, so the others find the generated data and ultralytics' label caches."""
    b, w = cfg.trainer.batch, cfg.trainer.workers
    with distributed.main_first():
        info = prepare_dataset(cfg.data, Path(cfg.cache_dir).expanduser() / "data")
        hyp = hyperparameters(imgsz=cfg.data.imgsz, task=model_task(cfg), **cfg.trainer.augment)
        val_loader = build_loader(info, hyp, info.val_split, b * 2, w, train=False, device=device.type)
        build_loader(info, hyp, info.train_split, b, 0, train=False, device=device.type)  # the label cache
    evaluator = CocoEvaluator(val_loader, info.annotations(info.val_split), info.category_ids, device,
                              cfg.eval.conf, cfg.eval.iou, cfg.eval.max_det, progress=cfg.progress,
                              task=model_task(cfg))
    return RunData(info, hyp, evaluator, b, w, device.type)


def cpu_threads(cfg, device: torch.device) -> CpuThreads:
    """The run's CPU thread count (set now, for data building and evaluation too), adapted while training on CPU."""
    threads = CpuThreads(cfg.trainer.get("threads"), adapt=cfg.trainer.get("adapt_threads", True) and device.type == "cpu")
    torch.set_num_threads(threads.target)
    return threads


def calibration_batches(cfg, data: RunData, device: torch.device) -> list[torch.Tensor]:
    """The first training images, without augmentation, for initialising the quantization scales (the same
    images on every rank)."""
    loader = build_loader(data.info, data.hyp, data.info.train_split, cfg.trainer.batch, 0, train=False,
                          device=device.type)
    return [batch["img"].to(device).float() / 255 for batch in islice(loader, cfg.quant.calib_batches)]


def _file_stamp(path: str | None) -> list | None:
    if not path:
        return None
    p = Path(path).expanduser().resolve()
    return [str(p), p.stat().st_size, p.stat().st_mtime_ns]


def fp_cache_path(cfg, info: DatasetInfo) -> Path:
    """The cached FP model's file: keyed by model, data, FP recipe (with its seed), augmentation, size, weights."""
    key_fields = {
        "version": FP_CACHE_VERSION, "model": cfg.model.yaml, "weights": _file_stamp(cfg.model.weights),
        "data": info.fingerprint, "names": list(info.names), "imgsz": cfg.data.imgsz, "batch": cfg.trainer.batch,
        "fp": OmegaConf.to_container(cfg.trainer.fp), "augment": OmegaConf.to_container(cfg.trainer.augment),
    }
    ours = our_yaml_file(cfg.model.yaml)
    if ours is not None:  # a YAML we ship (YOLOv7, -seg): editing it must not reuse a model of the old one
        key_fields["model_def"] = hashlib.sha1(ours.read_bytes()).hexdigest()
    key = hashlib.sha1(json.dumps(key_fields, sort_keys=True).encode()).hexdigest()[:12]
    return Path(cfg.cache_dir).expanduser() / "fp" / f"{cfg.model.name}-{info.fingerprint}-{key}.pt"


def _link_or_copy(src: Path, dst: Path) -> None:
    """The run folder's view of the cached FP checkpoint: a hard link where possible, else a copy."""
    dst.unlink(missing_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


@dataclass
class Run:
    """What the stages of one run share, and their checkpoints: `<stage>-last.pt` while a stage trains,
    its final checkpoint when done; with `resuming`, both are read back instead of redoing the work."""

    cfg: object
    data: RunData
    device: torch.device
    run_dir: Path
    log: RunLog
    stop: StopSignal
    resuming: bool = False
    fingerprints: dict = field(default_factory=dict)  # stage -> every rank's parameter hash (DDP)
    threads: CpuThreads | None = None  # the training steps' CPU threads

    @property
    def identity(self) -> dict:
        return run_identity(self.cfg, self.data.info.names)

    def config(self) -> dict:
        return OmegaConf.to_container(self.cfg, resolve=True)

    def check_stop(self) -> None:
        """Between stages: a stop signal ends the run here (finished stages are on disk)."""
        if distributed.any_rank(self.stop.requested)[0]:
            raise Preempted(f"stopped by {self.stop.name or 'a signal'} between stages; the finished stages are "
                            f"saved in {self.run_dir}")

    def _provenance(self) -> dict:
        """What every checkpoint of the run carries: whose it is, and where the log stood."""
        return {"identity": self.identity, "config": self.config(), "log_step": self.log.step,
                "log_records": self.log.records}

    def save_final(self, name: str, payload: dict) -> Path:
        """A stage's final checkpoint, with what resuming needs to skip it (rank 0 writes)."""
        path = self.run_dir / f"{name}.pt"
        record = {**payload, **self._provenance()}
        distributed.from_main(lambda: save_atomic(record, path))
        return path

    def saver(self, stage: str):
        """The trainer's per-epoch (and on-signal) checkpoint writer for `stage`."""
        def save(trainer: Trainer) -> Path:
            return save_atomic({"format": STATE_FORMAT, "version": STATE_VERSION, "stage": stage,
                                "trainer": trainer.state_dict(), **self._provenance()},
                               state_path(self.run_dir, stage))
        return save

    def _read(self, path: Path) -> dict | None:
        if not (self.resuming and path.is_file()):
            return None
        ckpt = read_checkpoint(path)
        check_identity(ckpt.get("identity"), self.identity, path)
        return ckpt

    def finished(self, name: str) -> dict | None:
        """When resuming: the final checkpoint of a finished stage (rank 0 reads it; every rank gets it)."""
        ckpt = distributed.from_main(lambda: self._read(self.run_dir / f"{name}.pt"))
        if ckpt is not None:
            self.log.rewind(ckpt["log_step"], ckpt["log_records"])
            log.info("%s: finished before, loaded from %s", name, self.run_dir / f"{name}.pt")
        return ckpt

    def unfinished(self, stage: str) -> dict | None:
        """When resuming: the trainer state of a stage that was interrupted."""
        path = state_path(self.run_dir, stage)
        ckpt = distributed.from_main(lambda: self._read(path))
        if ckpt is None:
            return None
        if ckpt.get("version") != STATE_VERSION:
            raise UserError(f"{path} holds stage state version {ckpt.get('version')}, this yoloq reads version "
                            f"{STATE_VERSION}: finish the run with the yoloq that wrote it, or start a new run")
        t = ckpt["trainer"]
        self.log.rewind(ckpt["log_step"], ckpt["log_records"])
        log.info("%s: resuming after %d epoch(s) and %d batch(es) from %s", stage, t["epoch"], t["batch"],
                 state_path(self.run_dir, stage))
        return t

    def trainer(self, stage: str, model, loader, recipe: Recipe, callbacks, state: dict | None) -> Trainer:
        return Trainer(stage, model, loader, self.data.evaluator, recipe, self.device, callbacks, self.data.hyp,
                       self.cfg.progress, checkpoint=self.saver(stage), stop=self.stop, state=state,
                       threads=self.threads)

    def stage_done(self, stage: str, trainer: Trainer) -> None:
        """The stage's final checkpoint is written: its per-epoch state is no longer needed."""
        self.fingerprints[stage] = trainer.replica_fingerprints
        if distributed.is_main():
            state_path(self.run_dir, stage).unlink(missing_ok=True)


def fp_stage(run: Run) -> tuple[torch.nn.Module, StageResult]:
    """The FP model every method starts from: trained once and cached, or loaded from model.weights."""
    cfg, data, device, run_dir = run.cfg, run.data, run.device, run.run_dir
    model = build_model(cfg.model.yaml, data.info.names, data.hyp, model_task(cfg)).to(device)
    cache = fp_cache_path(cfg, data.info)

    def load_cached() -> dict | None:
        # a resumed run prefers its own copy: the shared cache may have been cleared since
        for path in ([run_dir / "fp.pt"] if run.resuming else []) + [cache]:
            if path.is_file():
                ckpt = read_checkpoint(path)
                model.load_state_dict(ckpt["model"])
                if path == cache:
                    _link_or_copy(cache, run_dir / "fp.pt")
                return {"metrics": ckpt["metrics"], "wall_time": ckpt["wall_time"], "path": str(path)}
        return None

    cached = distributed.from_main(load_cached)
    if cached is not None:
        distributed.broadcast_state(model)
        log.info("FP: reusing the cached FP model %s (mAP50-95 %.4f)", cached["path"], cached["metrics"]["mAP50-95"])
        run.log.log("fp-epoch", {**cached["metrics"], "cached": True})
        return model, StageResult("fp", "fp", 32, 32, cached["metrics"], cached["wall_time"], cached["path"],
                                  cached=True)

    epochs = cfg.trainer.fp.epochs
    if cfg.model.weights:
        done, total = load_weights(model, cfg.model.weights)
        log.info("FP: transferred %d/%d tensors from %s", done, total, cfg.model.weights)
        if done == total:
            epochs = 0  # a complete pretrained model needs no FP training here
        else:
            log.info("FP: %d tensors did not match (e.g. nc differs): fine-tuning for %d epochs", total - done,
                     epochs)
    seed_everything(cfg.trainer.fp.seed)  # its own seed: `seed=` varies QAT runs on one cached FP model
    recipe = Recipe.from_cfg({**cfg.trainer.fp, "epochs": epochs})
    callbacks = ([EMACallback()] if cfg.trainer.fp.ema else []) + [LogMetrics(run.log, "fp")]
    trainer = run.trainer("fp", model, data.train_loader(cfg.trainer.fp.seed), recipe, callbacks, run.unfinished("fp"))
    metrics = trainer.fit()
    model.load_state_dict(trainer.eval_model.state_dict())  # the EMA copy is frozen; keep our trainable model

    def write_cache() -> None:
        save_atomic({"model": model.state_dict(), "metrics": metrics, "wall_time": trainer.wall_time,
                     "history": trainer.history, "config": run.config()}, cache)
        log.info("FP: cached the FP model at %s", cache)
        _link_or_copy(cache, run_dir / "fp.pt")

    distributed.from_main(write_cache)
    run.stage_done("fp", trainer)
    return model, StageResult("fp", "fp", 32, 32, metrics, trainer.wall_time, str(cache))


def quantized_copy(cfg, model, calib_batches) -> torch.nn.Module:
    """A copy of the FP model with quantized convs, scales calibrated on rank 0's batches (then broadcast, so
    every rank starts QAT from the same quantizers)."""
    model = copy.deepcopy(model)
    quantize_model(model, quant_config(cfg), calib_batches, high_precision=high_precision_layers(model))
    distributed.broadcast_state(model)
    return model


def qat_callbacks(cfg, run_log: RunLog) -> list:
    """The method's callbacks (its oscillation tracker first), then the recorders and the metric log."""
    callbacks = build_callbacks(cfg.method, quant_config(cfg).w_bits)
    # recorders run after the method's callbacks: they see this step's trackers and EMA
    osc_history = OscillationHistory(callbacks[0], cfg.logger.log_every)
    return callbacks + [osc_history, ScaleHistory(cfg.logger.scale_window), LogMetrics(run_log, "qat")]


def qat_stage(run: Run, model, calib_batches):
    """Quantize and calibrate a copy of the FP model, then QAT with the method's callbacks."""
    cfg, data, device, run_dir = run.cfg, run.data, run.device, run.run_dir
    run.check_stop()
    seed_everything(cfg.seed)  # the same QAT randomness whether or not the FP stage ran in this process
    qcfg = quant_config(cfg)
    start = time.time()
    model = quantized_copy(cfg, model.to(device), calib_batches)
    calib_time = time.time() - start

    done = run.finished("qat")
    if done is not None:
        model.load_state_dict(done["model"])
        return model, StageResult("qat", cfg.method.name, qcfg.w_bits, qcfg.a_bits, done["metrics"], done["wall_time"],
                                  str(run_dir / "qat.pt"), extra=done["extra"])

    callbacks = qat_callbacks(cfg, run.log)
    tracking, osc_history, scale_history = callbacks[0], callbacks[-3], callbacks[-2]
    recipe = Recipe.from_cfg(cfg.trainer.qat)
    trainer = run.trainer("qat", model, data.train_loader(cfg.seed), recipe, callbacks, run.unfinished("qat"))
    metrics = trainer.fit()
    oscillations = tracking.stats()
    extra = {k: oscillations[k] for k in ("oscillating_pct", "frozen_pct")}
    wall_time = trainer.wall_time + calib_time

    def write_outputs() -> None:
        if cfg.logger.diagnostics:
            ema_model = None if trainer.eval_model is trainer.model else trainer.eval_model
            write_qat_diagnostics(run_dir, trainer.model, ema_model, osc_history, scale_history, run.log,
                                  cfg.method.track.max_bits, cfg.method.track.threshold)
        (run_dir / "oscillations.json").write_text(json.dumps(oscillations, indent=2))

    distributed.from_main(write_outputs)
    log.info("QAT: %.2f%% of the tracked weights oscillate (f > %g), %.2f%% frozen", oscillations["oscillating_pct"],
             cfg.method.track.threshold, oscillations["frozen_pct"])
    path = run.save_final("qat", {"model": trainer.eval_model.state_dict(), "metrics": metrics,
                                  "history": trainer.history, "callbacks": trainer.callback_states(),
                                  "wall_time": wall_time, "extra": extra})
    run.stage_done("qat", trainer)
    return trainer.eval_model, StageResult("qat", cfg.method.name, qcfg.w_bits, qcfg.a_bits, metrics, wall_time,
                                           str(path), extra=extra)


def soft_round_stage(cfg, data: RunData, model, source: StageResult, run_log: RunLog) -> StageResult:
    """The same model evaluated with soft rounding (PAPER.md §6): no training, a Table 1 analysis."""
    k = float(cfg.eval.soft_round)
    start = time.time()
    with soft_rounding(model, k):
        metrics = distributed.from_main(lambda: data.evaluator(model))
    log.info("soft rounding k=%g: mAP50-95 %.4f (hard %.4f)", k, metrics["mAP50-95"], source.metrics["mAP50-95"])
    run_log.log(f"{source.stage}-soft", {**metrics, "soft_round": k})
    return StageResult(f"{source.stage}-soft", source.method, source.w_bits, source.a_bits, metrics,
                       time.time() - start, source.checkpoint, extra={"soft_round": k})


def decoded(out) -> torch.Tensor:
    """The decoded predictions in an eval-mode output: (y, raw) for detection, ((y, protos), raw) for
    segmentation (there the mask coefficients are part of y)."""
    while isinstance(out, (tuple, list)):
        out = out[0]
    return out


@torch.no_grad()
def output_diff(a: torch.nn.Module, b: torch.nn.Module, imgs: torch.Tensor) -> tuple[float, float]:
    """(max, mean) absolute difference of two models' decoded predictions (boxes in pixels, class scores).

    Equal in exact arithmetic, the two can differ where float rounding moves an activation across a
    rounding threshold of the next quantizer: rare, but one such flip changes that activation by a whole
    step and the change cascades through the later low-bit layers (on the default W3A3 model the deploy
    form differs by > 1e-3 in half of the last layers' outputs, yet its mAP is the same to 0.001). The max
    is an outlier measure; the mean and the mAP say how much it matters.
    """
    outs = []
    for m in (a, b):
        m.eval()
        outs.append(decoded(m(imgs)))
    diff = (outs[0] - outs[1]).abs()
    return float(diff.max()), float(diff.mean())


def qc_model(cfg, model, device: torch.device):
    """A copy of the QAT model with everything frozen and a trainable correction after each quantized conv."""
    qc = cfg.method.qc
    model = copy.deepcopy(model).to(device)
    for p in model.parameters():
        p.requires_grad_(False)
    add_corrections(model, qc.per_channel, qc.scale, qc.shift)
    return model


def qc_recipe(cfg) -> Recipe:
    r = cfg.trainer.qc
    return Recipe(epochs=r.epochs, optimizer="adamw", lr0=r.lr, lrf=1.0, momentum=0.9, weight_decay=0.0,
                  warmup_epochs=0, eval_every=r.epochs)


def qc_stage(run: Run, model, calib_batches, source: StageResult) -> list[StageResult]:
    """Quantization correction (PAPER.md §4): learn a per-channel affine after each quantized conv for one
    epoch with everything else frozen, then fold it into BN and check the folded and deploy forms."""
    cfg, data, device, run_dir = run.cfg, run.data, run.device, run.run_dir
    run.check_stop()
    seed_everything(cfg.seed)
    model = qc_model(cfg, model, device)
    done = run.finished("qc")
    if done is not None:
        model.load_state_dict(done["model"])
        metrics, wall_time = done["metrics"], done["wall_time"]
    else:
        recipe_cfg = cfg.trainer.qc
        loader = data.train_loader(f"{cfg.seed}-qc", fraction=float(recipe_cfg.fraction), mosaic=recipe_cfg.mosaic)
        callbacks = [FrozenBatchNorm(), LogMetrics(run.log, "qc")]
        trainer = run.trainer("qc", model, loader, qc_recipe(cfg), callbacks, run.unfinished("qc"))
        metrics = trainer.fit()
        wall_time = trainer.wall_time
        run.save_final("qc", {"model": model.state_dict(), "metrics": metrics, "history": trainer.history,
                              "wall_time": wall_time})
        run.stage_done("qc", trainer)
    qc_result = StageResult("qc", source.method, source.w_bits, source.a_bits, metrics, wall_time,
                            str(run_dir / "qc.pt"))
    folded_result = distributed.from_main(lambda: fold_and_check(run, model, calib_batches[0], source))
    return [qc_result, folded_result]


def fold_and_check(run: Run, model, imgs: torch.Tensor, source: StageResult) -> StageResult:
    """Fold the corrections into BN; compare the folded and integer deploy forms with the QC model."""
    start = time.time()
    folded = copy.deepcopy(model).eval()
    n = fold_corrections(folded)
    deploy = to_deploy(copy.deepcopy(folded))
    fold_max, fold_mean = output_diff(model, folded, imgs)
    deploy_max, deploy_mean = output_diff(folded, deploy, imgs)
    log.info("QC: folded %d corrections; |output difference| folded vs QC: max %.3g mean %.3g; deploy form vs "
             "folded: max %.3g mean %.3g", n, fold_max, fold_mean, deploy_max, deploy_mean)
    folded_metrics = run.data.evaluator(folded)
    # a flip in one low-bit activation cascades through later layers, so judge the deploy form by its mAP too
    deploy_map = run.data.evaluator(deploy)["mAP50-95"]
    log.info("QC: mAP50-95 folded %.4f, integer deploy form %.4f", folded_metrics["mAP50-95"], deploy_map)
    path = save_atomic({"model": folded.state_dict(), "metrics": folded_metrics, "config": run.config()},
                       run.run_dir / "folded.pt")
    extra = {"fold_max_diff": fold_max, "fold_mean_diff": fold_mean, "deploy_max_diff": deploy_max,
             "deploy_mean_diff": deploy_mean, "deploy_mAP50-95": deploy_map}
    run.log.log("folded", {**folded_metrics, **extra})
    return StageResult("folded", source.method, source.w_bits, source.a_bits, folded_metrics, time.time() - start,
                       str(path), extra=extra)


def train(cfg, run_dir: str | Path | None = None) -> list[StageResult]:
    """One run. `resume=true|PATH` continues the run in that folder (resume.resume_target); under torchrun
    every rank calls this with the same run folder."""
    validate(cfg)
    run_dir = Path(run_dir or cfg.run_dir)
    target = resume_target(cfg.get("resume"), str(run_dir))
    resuming = distributed.broadcast_object(target is not None and has_progress(target))  # rank 0's view
    run_dir = target or run_dir
    def check_fresh() -> None:
        if not resuming and has_progress(run_dir):
            raise UserError(f"run_dir={run_dir} already holds a run: add resume=true to continue it, or choose "
                            "another run_dir")
        if target is not None and not resuming:  # stopped before its first checkpoint: start the log over
            for name in ("metrics.jsonl", "wandb-run-id.txt"):
                (run_dir / name).unlink(missing_ok=True)

    distributed.from_main(check_fresh)
    run_dir.mkdir(parents=True, exist_ok=True)
    _setup_logging(run_dir)
    if distributed.is_main():  # a resumed run keeps the run's config.yaml and records its own next to it
        name = "config-resumed.yaml" if resuming else "config.yaml"
        (run_dir / name).write_text(OmegaConf.to_yaml(cfg, resolve=True))
    seed_everything(cfg.seed)
    device = distributed.local_device(resolve_device(str(cfg.device)))
    world = distributed.world_size()
    if cfg.trainer.batch % world:
        raise UserError(f"trainer.batch={cfg.trainer.batch} is the global batch and must divide among the {world} "
                        f"processes: use a multiple of {world}, e.g. trainer.batch={world * max(cfg.trainer.batch // world, 1)}")
    log.info("run folder %s, device %s%s%s", run_dir, device,
             f", {world} processes (batch {cfg.trainer.batch // world} each)" if world > 1 else "",
             ", resuming" if resuming else "")

    run_log = RunLog.from_cfg(cfg, run_dir) if distributed.is_main() else NullRunLog(cfg.logger.log_every)
    threads = cpu_threads(cfg, device)
    with StopSignal() as stop:
        try:
            run = Run(cfg, build_data(cfg, device), device, run_dir, run_log, stop, resuming, threads=threads)
            fp_model, fp_result = fp_stage(run)
            calib = calibration_batches(cfg, run.data, device)
            qat_model, qat_result = qat_stage(run, fp_model, calib)
            results = [fp_result, qat_result]
            if cfg.eval.soft_round is not None:
                results.append(soft_round_stage(cfg, run.data, qat_model, qat_result, run_log))
            if cfg.method.qc.enabled:
                results += qc_stage(run, qat_model, calib, qat_result)
            distributed.from_main(lambda: _finish(cfg, run, results))
        finally:
            run_log.close()
    if distributed.is_main():
        print_table(results)
    return results


def _finish(cfg, run: Run, results: list[StageResult]) -> None:
    write_results(results, run.run_dir / "results.json")
    if distributed.world_size() > 1:  # the evidence that DDP kept every rank's parameters identical
        (run.run_dir / "ddp_check.json").write_text(json.dumps(run.fingerprints, indent=2))
    run.log.summary(summary_of(results))
    if cfg.logger.wandb is not None and cfg.logger.wandb.log_checkpoint:
        run.log.artifact(Path(results[-1].checkpoint), f"{run.run_dir.name}-{results[-1].stage}")


def summary_of(results: list[StageResult]) -> dict:
    """The final numbers of a run, flat: <stage>/mAP50-95, <stage>/mAP50, <stage>/<extra>."""
    out = {}
    for r in results:
        out.update({f"{r.stage}/{k}": v for k, v in r.metrics.items() if k in ("mAP50-95", "mAP50")})
        out.update({f"{r.stage}/{k}": v for k, v in r.extra.items()})
    return out
