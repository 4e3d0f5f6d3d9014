"""The stage pipeline of one run: data -> FP model (cached) -> quantize + calibrate -> QAT -> results.

`train(cfg)` is a plain function, so tests call it with a composed config; scripts/train.py is only
the Hydra entry point around it.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import random
import time
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
from yoloq.methods.ema import EMACallback
from yoloq.models.build import build_model, high_precision_layers, hyperparameters, load_weights
from yoloq.quant import quantize_model

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


def _file_stamp(path: str | None) -> list | None:
    if not path:
        return None
    p = Path(path).expanduser().resolve()
    return [str(p), p.stat().st_size, p.stat().st_mtime_ns]


def fp_cache_path(cfg, info: DatasetInfo) -> Path:
    """The cached FP model's file: keyed by model, data, FP recipe, augmentation, size, seed and weights."""
    key_fields = {
        "version": FP_CACHE_VERSION, "model": cfg.model.yaml, "weights": _file_stamp(cfg.model.weights),
        "data": info.fingerprint, "names": list(info.names), "imgsz": cfg.data.imgsz, "batch": cfg.trainer.batch,
        "fp": OmegaConf.to_container(cfg.trainer.fp), "augment": OmegaConf.to_container(cfg.trainer.augment),
        "seed": cfg.seed,
    }
    key = hashlib.sha1(json.dumps(key_fields, sort_keys=True).encode()).hexdigest()[:12]
    return Path(cfg.cache_dir).expanduser() / "fp" / f"{cfg.model.name}-{info.fingerprint}-{key}.pt"


def fp_stage(cfg, info, hyp, train_loader, evaluator, device) -> tuple[torch.nn.Module, StageResult]:
    """The FP model every method starts from: trained once and cached, or loaded from model.weights."""
    model = build_model(cfg.model.yaml, info.names, hyp)
    cache = fp_cache_path(cfg, info)
    if cache.is_file():
        ckpt = load_checkpoint(cache)
        model.load_state_dict(ckpt["model"])
        log.info("FP: reusing the cached FP model %s (mAP50-95 %.4f)", cache, ckpt["metrics"]["mAP50-95"])
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
    recipe = Recipe.from_cfg({**cfg.trainer.fp, "epochs": epochs})
    callbacks = [EMACallback()] if cfg.trainer.fp.ema else []
    trainer = Trainer("fp", model, train_loader, evaluator, recipe, device, callbacks, hyp, cfg.progress)
    metrics = trainer.fit()
    model.load_state_dict(trainer.eval_model.state_dict())  # the EMA copy is frozen; keep our trainable model
    save_atomic({"model": model.state_dict(), "metrics": metrics, "wall_time": trainer.wall_time,
                 "history": trainer.history, "names": list(info.names), "yaml": cfg.model.yaml}, cache)
    log.info("FP: cached the FP model at %s", cache)
    return model, StageResult("fp", "fp", 32, 32, metrics, trainer.wall_time, str(cache))


def qat_stage(cfg, info, hyp, model, train_loader, calib_batches, evaluator, device, run_dir):
    qcfg = quant_config(cfg)
    model = copy.deepcopy(model).to(device)
    start = time.time()
    quantize_model(model, qcfg, calib_batches, high_precision=high_precision_layers(model)
                   if qcfg.first_last_bits is not None else [])
    calib_time = time.time() - start
    callbacks = build_callbacks(cfg.method)
    recipe = Recipe.from_cfg(cfg.trainer.qat)
    trainer = Trainer("qat", model, train_loader, evaluator, recipe, device, callbacks, hyp, cfg.progress)
    metrics = trainer.fit()
    path = save_atomic({"model": trainer.eval_model.state_dict(), "metrics": metrics, "history": trainer.history,
                        "config": OmegaConf.to_container(cfg, resolve=True)}, run_dir / "qat.pt")
    return trainer.eval_model, StageResult("qat", cfg.method.name, qcfg.w_bits, qcfg.a_bits, metrics,
                                           trainer.wall_time + calib_time, str(path))


def train(cfg, run_dir: str | Path | None = None) -> list[StageResult]:
    validate(cfg)
    run_dir = Path(run_dir or cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    _setup_logging(run_dir)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    seed_everything(cfg.seed)
    device = resolve_device(str(cfg.device))
    log.info("run folder %s, device %s", run_dir, device)

    info = prepare_dataset(cfg.data, Path(cfg.cache_dir).expanduser() / "data")
    hyp = hyperparameters(imgsz=cfg.data.imgsz, task="detect", **cfg.trainer.augment)
    b, w = cfg.trainer.batch, cfg.trainer.workers
    train_loader = build_loader(info, hyp, info.train_split, b, w, train=True, device=device.type)
    val_loader = build_loader(info, hyp, info.val_split, b * 2, w, train=False, device=device.type)
    evaluator = CocoEvaluator(val_loader, info.annotations(info.val_split), info.category_ids, device,
                              cfg.eval.conf, cfg.eval.iou, cfg.eval.max_det, progress=cfg.progress)

    results = []
    fp_model, fp_result = fp_stage(cfg, info, hyp, train_loader, evaluator, device)
    results.append(fp_result)
    calib_loader = build_loader(info, hyp, info.train_split, b, 0, train=False, device=device.type)
    calib = [batch["img"].to(device).float() / 255 for batch in islice(calib_loader, cfg.quant.calib_batches)]
    _, qat_result = qat_stage(cfg, info, hyp, fp_model, train_loader, calib, evaluator, device, run_dir)
    results.append(qat_result)

    write_results(results, run_dir / "results.json")
    print_table(results)
    return results
