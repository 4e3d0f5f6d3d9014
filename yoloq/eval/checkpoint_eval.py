"""`scripts/eval.py +checkpoint=PATH`: rebuild the model a checkpoint was saved from and score it; `+onnx=PATH`:
score an exported model with onnxruntime."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from omegaconf import OmegaConf

from yoloq.config import quant_config, resolve_device
from yoloq.atomic import write_json_atomic
from yoloq.checkpoint import load_checkpoint
from yoloq.errors import UserError
from yoloq.factory import build_data, model_task
from yoloq.eval.coco_eval import finite
from yoloq.mixed.plan import read_plan
from yoloq.models.build import build_model, high_precision_layers
from yoloq.quant import quantize_model
from yoloq.quant.correction import match_state

log = logging.getLogger("yoloq")


def model_from_checkpoint(ckpt: dict, saved_cfg, names: tuple[str, ...], hyp):
    """The float or quantized model whose state the checkpoint holds (scales come from the state dict)."""
    model = build_model(saved_cfg.model.yaml, names, hyp, str(saved_cfg.model.get("task", "detect")))
    if any("quantizer" in k for k in ckpt["model"]):
        high = high_precision_layers(model)
        quantize_model(model, quant_config(saved_cfg), None, high, layer_bits=read_plan(saved_cfg.quant.get("layer_bits")))
        match_state(model, ckpt["model"])  # QC corrections, scales made per-channel by folding
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise UserError(f"checkpoint does not match its model ({str(e).splitlines()[0]}): "
                        "evaluate it with the yoloq version that wrote it") from None
    return model


def read_run_checkpoint(cfg) -> tuple[Path, dict, object]:
    """(path, checkpoint, its saved config) of `+checkpoint=`, or one line saying what is wrong."""
    path = cfg.get("checkpoint")
    if not path:
        raise UserError("no checkpoint given: add +checkpoint=runs/<run>/qat.pt (or an FP cache file)")
    path = Path(str(path)).expanduser()
    ckpt = load_checkpoint(path)
    if not isinstance(ckpt.get("config"), dict) or not isinstance(ckpt.get("model"), dict):
        raise UserError(f"{path} is not a yoloq checkpoint (no config and model state): give a .pt written by "
                        "scripts/train.py")
    return path, ckpt, OmegaConf.create(ckpt["config"])


def with_saved_settings(cfg, saved):
    """cfg with the model, data and quantization a checkpoint (or exported model) was trained with; keys it lacks
    keep their defaults, and a dataset of another kind (COCO under the default shapes) replaces the default's."""
    cfg = OmegaConf.merge(cfg)  # a copy
    OmegaConf.set_struct(cfg, False)
    return OmegaConf.merge(cfg, {"model": saved.model, "data": saved.data, "quant": saved.quant})


def evaluate_checkpoint(cfg, run_dir: str | Path) -> dict:
    """`+checkpoint=` a yoloq checkpoint, or `+onnx=` a model exported by scripts/export.py (run by onnxruntime)."""
    refresh = int(cfg.eval.get("bn_refresh") or 0)
    if refresh and cfg.get("onnx"):
        raise UserError("eval.bn_refresh re-estimates BatchNorm in a PyTorch checkpoint; an exported model has it "
                        "folded: give +checkpoint=<run>/qat.pt instead of +onnx=")
    if cfg.get("onnx"):
        from yoloq.export.onnx_model import OnnxModel, read_metadata

        path = Path(str(cfg.onnx)).expanduser()
        saved = OmegaConf.create(read_metadata(path)["config"])
    else:
        path, ckpt, saved = read_run_checkpoint(cfg)
    cfg = with_saved_settings(cfg, saved)  # device, cache and eval settings stay the command line's
    if cfg.eval.get("ultralytics_check") and model_task(cfg) != "detect":
        raise UserError("eval.ultralytics_check compares box mAP with ultralytics' DetectionValidator, for "
                        "detection models: leave it out for -seg models")
    device = resolve_device(str(cfg.device))
    data = build_data(cfg, device)
    if cfg.get("onnx"):
        model = OnnxModel(path, device)
    else:
        model = model_from_checkpoint(ckpt, saved, data.info.names, data.hyp).to(device)
        if refresh:  # before deploy_form, which folds BN
            from yoloq.eval.bn_refresh import refresh_bn_statistics

            refresh_bn_statistics(model, data.train_loader(int(cfg.seed)), refresh, device)
        if cfg.eval.get("deploy"):
            from yoloq.export.onnx_export import deploy_form

            model = deploy_form(model)
        model = model.to(device)
    metrics = {"pycocotools": finite(data.evaluator(model))}
    if cfg.eval.get("ultralytics_check"):
        from yoloq.eval.ultralytics_check import ultralytics_metrics

        metrics["ultralytics"] = ultralytics_metrics(model, data.evaluator.loader, device, Path(run_dir) / "val",
                                                     cfg.eval.conf, cfg.eval.iou, cfg.eval.max_det)
    write_json_atomic(Path(run_dir) / "eval.json", {"checkpoint": str(path), "bn_refresh": refresh, **metrics})
    print(json.dumps(metrics, indent=2))
    return metrics
