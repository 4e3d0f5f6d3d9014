"""The FP stage: the float model every method starts from, trained once and cached (keyed by everything that
shapes it), or loaded from `model.weights`. Two runs that need one cache entry at once train it once: the
second waits on the entry's lock and then reuses it."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

import torch
from omegaconf import OmegaConf

from yoloq.checkpoint import load_checkpoint, save_atomic
from yoloq.data.prepare import DatasetInfo
from yoloq.engine import distributed
from yoloq.engine.report import StageResult
from yoloq.engine.rng import seed_everything
from yoloq.engine.run import Run
from yoloq.engine.trainer import Recipe
from yoloq.factory import float_model
from yoloq.locks import waiting_lock
from yoloq.methods.ema import EMACallback
from yoloq.models.build import load_weights, our_yaml_file
from yoloq.track.log_callback import LogMetrics

log = logging.getLogger("yoloq")
FP_CACHE_VERSION = 3  # 2: the resumable training loader; 3: its mosaic buffer starts full each epoch
CACHE_HINT = "delete it (the FP model is trained again) or set cache_dir= to another folder"


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


def load_fp_cache(path: Path) -> dict:
    return load_checkpoint(path, CACHE_HINT)


def _link_or_copy(src: Path, dst: Path) -> None:
    """The run folder's view of the cached FP checkpoint: a hard link where possible, else a copy."""
    dst.unlink(missing_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def fp_stage(run: Run) -> tuple[torch.nn.Module, StageResult]:
    cfg, data, device, run_dir = run.cfg, run.data, run.device, run.run_dir
    model = float_model(cfg, data).to(device)
    cache = fp_cache_path(cfg, data.info)
    lock = None  # rank 0 holds the cache entry's lock from the check until the trained model is written

    def load_cached() -> dict | None:
        nonlocal lock
        # a resumed run prefers its own copy: the shared cache may have been cleared since
        if run.folder.resuming and (run_dir / "fp.pt").is_file():
            return _load_into(model, run_dir / "fp.pt")
        lock = waiting_lock(cache.with_name(cache.name + ".lock"), f"the FP cache entry {cache}")
        if cache.is_file():
            lock.release()
            _link_or_copy(cache, run_dir / "fp.pt")
            return _load_into(model, cache)
        return None

    try:
        cached = distributed.from_main(load_cached)
        if cached is not None:
            distributed.broadcast_state(model)
            log.info("FP: reusing the cached FP model %s (mAP50-95 %.4f)", cached["path"],
                     cached["metrics"]["mAP50-95"])
            run.log.log("fp-epoch", {**cached["metrics"], "cached": True})
            return model, StageResult("fp", "fp", 32, 32, cached["metrics"], cached["wall_time"], cached["path"],
                                      cached=True)
        return _train(run, model, cache)
    finally:
        if lock is not None:
            lock.release()


def _load_into(model, path: Path) -> dict:
    ckpt = load_fp_cache(path)
    model.load_state_dict(ckpt["model"])
    return {"metrics": ckpt["metrics"], "wall_time": ckpt["wall_time"], "path": str(path)}


def _train(run: Run, model, cache: Path) -> tuple[torch.nn.Module, StageResult]:
    cfg, data, run_dir = run.cfg, run.data, run.run_dir
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
    trainer = run.trainer("fp", model, data.train_loader(cfg.trainer.fp.seed), recipe, callbacks)
    metrics = trainer.fit()
    model.load_state_dict(trainer.eval_model.state_dict())  # the EMA copy is frozen; keep our trainable model

    def write_cache() -> None:
        save_atomic({"model": model.state_dict(), "metrics": metrics, "wall_time": trainer.wall_time,
                     "history": trainer.history, "config": run.folder.config()}, cache)
        log.info("FP: cached the FP model at %s", cache)
        _link_or_copy(cache, run_dir / "fp.pt")

    distributed.from_main(write_cache)
    run.stage_done("fp", trainer)
    return model, StageResult("fp", "fp", 32, 32, metrics, trainer.wall_time, str(cache))
