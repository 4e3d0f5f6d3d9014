"""The stage pipeline of one run: data -> FP model (cached) -> quantize + calibrate -> QAT (the method's
callbacks) -> [soft-rounding evaluation] -> [QC -> folded into BN] -> results.

`train(cfg)` is a plain function, so tests call it with a composed config; scripts/train.py is only
the Hydra entry point around it.
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
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from yoloq.config import quant_config, resolve_device, validate
from yoloq.data.loaders import build_loader
from yoloq.data.prepare import DatasetInfo, prepare_dataset
from yoloq.engine.checkpoint import load_checkpoint, save_atomic
from yoloq.engine.report import StageResult, print_table, write_results
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
from yoloq.track.run_log import RunLog
from yoloq.track.scale_history import ScaleHistory

log = logging.getLogger("yoloq")
FP_CACHE_VERSION = 1


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _setup_logging(run_dir: Path) -> None:
    log.setLevel(logging.INFO)
    log.propagate = False
    for h in list(log.handlers):
        log.removeHandler(h)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")
    for handler in (logging.StreamHandler(), logging.FileHandler(run_dir / "train.log")):
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

    def train_loader(self, fraction: float = 1.0, mosaic: bool = True):
        """A fresh augmenting loader for one stage: a stage that closes mosaic must not close it for the next."""
        return build_loader(self.info, self.hyp, self.info.train_split, self.batch, self.workers, train=True,
                            device=self.device, fraction=fraction, mosaic=mosaic)


def model_task(cfg) -> str:
    """detect, or segment for the -seg models (their conf/model file says so)."""
    return str(cfg.model.get("task", "detect"))


def build_data(cfg, device: torch.device) -> RunData:
    """Prepare the dataset and the pycocotools evaluator of its val split; train loaders are built per stage."""
    info = prepare_dataset(cfg.data, Path(cfg.cache_dir).expanduser() / "data")
    hyp = hyperparameters(imgsz=cfg.data.imgsz, task=model_task(cfg), **cfg.trainer.augment)
    b, w = cfg.trainer.batch, cfg.trainer.workers
    val_loader = build_loader(info, hyp, info.val_split, b * 2, w, train=False, device=device.type)
    evaluator = CocoEvaluator(val_loader, info.annotations(info.val_split), info.category_ids, device,
                              cfg.eval.conf, cfg.eval.iou, cfg.eval.max_det, progress=cfg.progress,
                              task=model_task(cfg))
    return RunData(info, hyp, evaluator, b, w, device.type)


def calibration_batches(cfg, data: RunData, device: torch.device) -> list[torch.Tensor]:
    """The first training images, without augmentation, for initialising the quantization scales."""
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


def fp_stage(cfg, data: RunData, device: torch.device, run_dir: Path,
             run_log: RunLog) -> tuple[torch.nn.Module, StageResult]:
    """The FP model every method starts from: trained once and cached, or loaded from model.weights."""
    model = build_model(cfg.model.yaml, data.info.names, data.hyp, model_task(cfg))
    cache = fp_cache_path(cfg, data.info)
    if cache.is_file():
        ckpt = load_checkpoint(cache)
        model.load_state_dict(ckpt["model"])
        log.info("FP: reusing the cached FP model %s (mAP50-95 %.4f)", cache, ckpt["metrics"]["mAP50-95"])
        run_log.log("fp-epoch", {**ckpt["metrics"], "cached": True})
        _link_or_copy(cache, run_dir / "fp.pt")
        return model.to(device), StageResult("fp", "fp", 32, 32, ckpt["metrics"], ckpt["wall_time"], str(cache),
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
    callbacks = ([EMACallback()] if cfg.trainer.fp.ema else []) + [LogMetrics(run_log, "fp")]
    trainer = Trainer("fp", model, data.train_loader(), data.evaluator, recipe, device, callbacks, data.hyp,
                      cfg.progress)
    metrics = trainer.fit()
    model.load_state_dict(trainer.eval_model.state_dict())  # the EMA copy is frozen; keep our trainable model
    save_atomic({"model": model.state_dict(), "metrics": metrics, "wall_time": trainer.wall_time,
                 "history": trainer.history, "config": OmegaConf.to_container(cfg, resolve=True)}, cache)
    log.info("FP: cached the FP model at %s", cache)
    _link_or_copy(cache, run_dir / "fp.pt")
    return model, StageResult("fp", "fp", 32, 32, metrics, trainer.wall_time, str(cache))


def qat_stage(cfg, data: RunData, model, calib_batches, device: torch.device, run_dir: Path, run_log: RunLog):
    """Quantize and calibrate a copy of the FP model, then QAT with the method's callbacks."""
    seed_everything(cfg.seed)  # the same QAT randomness whether or not the FP stage ran in this process
    qcfg = quant_config(cfg)
    model = copy.deepcopy(model).to(device)
    start = time.time()
    quantize_model(model, qcfg, calib_batches, high_precision=high_precision_layers(model))
    calib_time = time.time() - start
    callbacks = build_callbacks(cfg.method, qcfg.w_bits)
    tracking = callbacks[0]
    # recorders run after the method's callbacks: they see this step's trackers and EMA
    osc_history = OscillationHistory(tracking, cfg.logger.log_every)
    scale_history = ScaleHistory(cfg.logger.scale_window)
    callbacks += [osc_history, scale_history, LogMetrics(run_log, "qat")]
    recipe = Recipe.from_cfg(cfg.trainer.qat)
    trainer = Trainer("qat", model, data.train_loader(), data.evaluator, recipe, device, callbacks, data.hyp,
                      cfg.progress)
    metrics = trainer.fit()
    if cfg.logger.diagnostics:
        ema_model = None if trainer.eval_model is trainer.model else trainer.eval_model
        write_qat_diagnostics(run_dir, trainer.model, ema_model, osc_history, scale_history, run_log,
                              cfg.method.track.max_bits, cfg.method.track.threshold)
    oscillations = tracking.stats()
    (run_dir / "oscillations.json").write_text(json.dumps(oscillations, indent=2))
    log.info("QAT: %.2f%% of the tracked weights oscillate (f > %g), %.2f%% frozen", oscillations["oscillating_pct"],
             cfg.method.track.threshold, oscillations["frozen_pct"])
    path = save_atomic({"model": trainer.eval_model.state_dict(), "metrics": metrics, "history": trainer.history,
                        "callbacks": trainer.callback_states(), "config": OmegaConf.to_container(cfg, resolve=True)},
                       run_dir / "qat.pt")
    extra = {k: oscillations[k] for k in ("oscillating_pct", "frozen_pct")}
    return trainer.eval_model, StageResult("qat", cfg.method.name, qcfg.w_bits, qcfg.a_bits, metrics,
                                           trainer.wall_time + calib_time, str(path), extra=extra)


def soft_round_stage(cfg, data: RunData, model, source: StageResult, run_log: RunLog) -> StageResult:
    """The same model evaluated with soft rounding (PAPER.md §6): no training, a Table 1 analysis."""
    k = float(cfg.eval.soft_round)
    start = time.time()
    with soft_rounding(model, k):
        metrics = data.evaluator(model)
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


def qc_stage(cfg, data: RunData, model, calib_batches, device: torch.device, run_dir: Path,
             source: StageResult, run_log: RunLog) -> list[StageResult]:
    """Quantization correction (PAPER.md §4): learn a per-channel affine after each quantized conv for one
    epoch with everything else frozen, then fold it into BN and check the folded and deploy forms."""
    seed_everything(cfg.seed)
    qc, recipe_cfg = cfg.method.qc, cfg.trainer.qc
    model = copy.deepcopy(model).to(device)
    for p in model.parameters():
        p.requires_grad_(False)
    add_corrections(model, qc.per_channel, qc.scale, qc.shift)
    recipe = Recipe(epochs=recipe_cfg.epochs, optimizer="adamw", lr0=recipe_cfg.lr, lrf=1.0, momentum=0.9,
                    weight_decay=0.0, warmup_epochs=0, eval_every=recipe_cfg.epochs)
    loader = data.train_loader(fraction=float(recipe_cfg.fraction), mosaic=recipe_cfg.mosaic)
    callbacks = [FrozenBatchNorm(), LogMetrics(run_log, "qc")]
    trainer = Trainer("qc", model, loader, data.evaluator, recipe, device, callbacks, data.hyp, cfg.progress)
    metrics = trainer.fit()
    config = OmegaConf.to_container(cfg, resolve=True)
    path = save_atomic({"model": model.state_dict(), "metrics": metrics, "history": trainer.history,
                        "config": config}, run_dir / "qc.pt")
    qc_result = StageResult("qc", source.method, source.w_bits, source.a_bits, metrics, trainer.wall_time,
                            str(path))

    start = time.time()
    folded = copy.deepcopy(model).eval()
    n = fold_corrections(folded)
    imgs = calib_batches[0]
    deploy = to_deploy(copy.deepcopy(folded))
    fold_max, fold_mean = output_diff(model, folded, imgs)
    deploy_max, deploy_mean = output_diff(folded, deploy, imgs)
    log.info("QC: folded %d corrections; |output difference| folded vs QC: max %.3g mean %.3g; deploy form vs "
             "folded: max %.3g mean %.3g", n, fold_max, fold_mean, deploy_max, deploy_mean)
    folded_metrics = data.evaluator(folded)
    # a flip in one low-bit activation cascades through later layers, so judge the deploy form by its mAP too
    deploy_map = data.evaluator(deploy)["mAP50-95"]
    log.info("QC: mAP50-95 folded %.4f, integer deploy form %.4f", folded_metrics["mAP50-95"], deploy_map)
    path = save_atomic({"model": folded.state_dict(), "metrics": folded_metrics, "config": config},
                       run_dir / "folded.pt")
    extra = {"fold_max_diff": fold_max, "fold_mean_diff": fold_mean, "deploy_max_diff": deploy_max,
             "deploy_mean_diff": deploy_mean, "deploy_mAP50-95": deploy_map}
    run_log.log("folded", {**folded_metrics, **extra})
    folded_result = StageResult("folded", source.method, source.w_bits, source.a_bits, folded_metrics,
                                time.time() - start, str(path), extra=extra)
    return [qc_result, folded_result]


def train(cfg, run_dir: str | Path | None = None) -> list[StageResult]:
    validate(cfg)
    run_dir = Path(run_dir or cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    _setup_logging(run_dir)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    seed_everything(cfg.seed)
    device = resolve_device(str(cfg.device))
    log.info("run folder %s, device %s", run_dir, device)

    run_log = RunLog.from_cfg(cfg, run_dir)
    try:
        data = build_data(cfg, device)
        fp_model, fp_result = fp_stage(cfg, data, device, run_dir, run_log)
        calib = calibration_batches(cfg, data, device)
        qat_model, qat_result = qat_stage(cfg, data, fp_model, calib, device, run_dir, run_log)
        results = [fp_result, qat_result]
        if cfg.eval.soft_round is not None:
            results.append(soft_round_stage(cfg, data, qat_model, qat_result, run_log))
        if cfg.method.qc.enabled:
            results += qc_stage(cfg, data, qat_model, calib, device, run_dir, qat_result, run_log)

        write_results(results, run_dir / "results.json")
        run_log.summary(summary_of(results))
        if cfg.logger.wandb is not None and cfg.logger.wandb.log_checkpoint:
            run_log.artifact(Path(results[-1].checkpoint), f"{run_dir.name}-{results[-1].stage}")
    finally:
        run_log.close()
    print_table(results)
    return results


def summary_of(results: list[StageResult]) -> dict:
    """The final numbers of a run, flat: <stage>/mAP50-95, <stage>/mAP50, <stage>/<extra>."""
    out = {}
    for r in results:
        out.update({f"{r.stage}/{k}": v for k, v in r.metrics.items() if k in ("mAP50-95", "mAP50")})
        out.update({f"{r.stage}/{k}": v for k, v in r.extra.items()})
    return out
