"""What every entry point builds from a config, with no training in it: the prepared dataset, its loaders and
evaluator, the float model, calibration images and a calibrated quantized copy. Training (engine/), evaluation
(eval/checkpoint_eval.py), the benchmark (bench/) and export all build their parts here."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import torch

from yoloq.config import quant_config
from yoloq.data.loaders import build_loader
from yoloq.data.prepare import DatasetInfo, prepare_dataset
from yoloq.engine import distributed
from yoloq.eval.coco_eval import CocoEvaluator
from yoloq.locks import waiting_lock
from yoloq.mixed.plan import checked_plan
from yoloq.models.build import build_model, high_precision_layers, hyperparameters
from yoloq.quant import quantize_model


@dataclass
class RunData:
    info: DatasetInfo
    hyp: object  # ultralytics' hyperparameter namespace (augmentation, loss gains)
    evaluator: CocoEvaluator
    batch: int
    workers: int
    device: str

    def train_loader(self, seed, fraction: float = 1.0, mosaic: bool = True, batch: int | None = None):
        """A fresh augmenting loader for one stage (a stage that closes mosaic must not close it for the next),
        its epochs shuffled by `seed`; `batch` (global) overrides the run's."""
        return build_loader(self.info, self.hyp, self.info.train_split, batch or self.batch, self.workers, train=True,
                            device=self.device, fraction=fraction, mosaic=mosaic, seed=seed)


def model_task(cfg) -> str:
    """detect, or segment for the -seg models (their conf/model file says so)."""
    return str(cfg.model.get("task", "detect"))


def build_data(cfg, device: torch.device) -> RunData:
    """Prepare the dataset and the pycocotools evaluator of its val split; train loaders are built per stage.
    Under torchrun rank 0 goes first, so the others find the generated data and ultralytics' label caches; two
    runs that start at once build the label caches one after the other (ultralytics writes them in place)."""
    b, w = cfg.trainer.batch, cfg.trainer.workers
    with distributed.main_first():
        info = prepare_dataset(cfg.data, Path(cfg.cache_dir).expanduser() / "data")
        hyp = hyperparameters(imgsz=cfg.data.imgsz, task=model_task(cfg), **cfg.trainer.augment)
        with waiting_lock(info.root.with_name(info.root.name + ".lock"), f"the label caches of {info.root}"):
            val_loader = build_loader(info, hyp, info.val_split, b * 2, w, train=False, device=device.type)
            build_loader(info, hyp, info.train_split, b, 0, train=False, device=device.type)  # the label cache
    evaluator = CocoEvaluator(val_loader, info.annotations(info.val_split), info.category_ids, device,
                              cfg.eval.conf, cfg.eval.iou, cfg.eval.max_det, progress=cfg.progress,
                              task=model_task(cfg))
    return RunData(info, hyp, evaluator, b, w, device.type)


def float_model(cfg, data: RunData) -> torch.nn.Module:
    """The configured model, untrained, with the dataset's classes."""
    return build_model(cfg.model.yaml, data.info.names, data.hyp, model_task(cfg))


def calibration_batches(cfg, data: RunData, device: torch.device) -> list[torch.Tensor]:
    """The first training images, without augmentation, for initialising the quantization scales (the same
    images on every rank)."""
    loader = build_loader(data.info, data.hyp, data.info.train_split, cfg.trainer.batch, 0, train=False,
                          device=device.type)
    return [batch["img"].to(device).float() / 255 for batch in islice(loader, cfg.quant.calib_batches)]


def quantized_copy(cfg, model, calib_batches) -> torch.nn.Module:
    """A copy of the FP model with quantized convs, scales calibrated on rank 0's batches (then broadcast, so
    every rank starts QAT from the same quantizers)."""
    model = copy.deepcopy(model)
    high = high_precision_layers(model)
    quantize_model(model, quant_config(cfg), calib_batches, high_precision=high,
                   layer_bits=checked_plan(cfg, model, high))
    distributed.broadcast_state(model)
    return model
