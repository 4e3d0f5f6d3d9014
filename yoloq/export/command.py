"""`scripts/export.py +checkpoint=runs/<run>/folded.pt` (or `yoloq export ...`): the checkpoint's model as
model.onnx + model.json in the export's folder, checked against the PyTorch deploy form on a batch of the
checkpoint's training images (noise images on the 8-bit grid where that dataset is not on this machine)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from yoloq.atomic import write_json_atomic
from yoloq.errors import UserError
from yoloq.eval.checkpoint_eval import model_from_checkpoint, read_run_checkpoint, with_saved_settings
from yoloq.export.onnx_export import ExportOptions, deploy_form, export_onnx
from yoloq.export.onnx_model import OnnxModel
from yoloq.export.output_check import compare_outputs
from yoloq.models.build import hyperparameters

log = logging.getLogger("yoloq")
CHECK_IMAGES = 4


def grid_images(n: int, imgsz: int, seed: int = 0) -> torch.Tensor:
    """Noise images on the 8-bit grid (k/255), as the model sees real ones: a check that needs no dataset."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, imgsz, imgsz), generator=g).float() / 255


def dataset_images(cfg):
    """(class names, the first training batch without augmentation, as the run's own check uses), or None where
    the checkpoint's dataset is not on this machine."""
    from yoloq.factory import build_data, calibration_batches

    try:
        data = build_data(cfg, torch.device("cpu"))
    except UserError as e:
        log.warning("the checkpoint's dataset is not available (%s): checking the export on noise images", e)
        return None
    return tuple(data.info.names), calibration_batches(cfg, data, torch.device("cpu"))[0]


def export_checkpoint(cfg, run_dir: str | Path) -> dict:
    path, ckpt, saved = read_run_checkpoint(cfg)
    if not any("quantizer" in k for k in ckpt["model"]):
        raise UserError(f"{path} holds a float model: export takes a quantized run's checkpoint "
                        "(runs/<run>/folded.pt, or qat.pt)")
    cfg = with_saved_settings(cfg, saved)
    options = ExportOptions.from_cfg(cfg.export)
    found = dataset_images(cfg)
    names = tuple(ckpt["names"]) if ckpt.get("names") else found[0] if found else None
    if names is None:
        raise UserError(f"{path} does not record its class names and its dataset is not here: export it where the "
                        "dataset is (data.root=...), or re-save it with this yoloq version")
    task = str(saved.model.get("task", "detect"))
    imgsz = int(saved.data.imgsz)
    images, source = (found[1], "training images") if found else (grid_images(CHECK_IMAGES, imgsz), "noise images")
    model = model_from_checkpoint(ckpt, saved, names, hyperparameters(imgsz=imgsz, task=task)).eval()
    start = time.time()
    config = {k: OmegaConf.to_container(saved[k], resolve=True) for k in ("model", "data", "quant")}
    meta = export_onnx(model, run_dir, imgsz=imgsz, names=names, task=task, options=options, config=config)
    seconds = time.time() - start
    report = {"checkpoint": str(path), "onnx": str(Path(run_dir) / "model.onnx"), "export_s": seconds,
              "opset": meta["opset"]}
    if not options.nms:  # with NMS appended the output is a different thing from the deploy form's
        deploy = deploy_form(model)
        check = compare_outputs(deploy, OnnxModel(Path(run_dir) / "model.onnx"), images, len(names))
        report["check"] = {**check, "images": f"{len(images)} {source}"}
        if cfg.export.get("layer_check"):
            from yoloq.export.layer_check import layer_flips

            flips = layer_flips(deploy, Path(run_dir) / "model.onnx", images)
            report["layer_check"] = flips
            for name, f in flips.items():
                log.info("%-28s a%d: %8.4f%% of input integers differ (max %d steps)", name, f["bits"],
                         100 * f["differ"], f["max"])
    write_json_atomic(Path(run_dir) / "export.json", report)
    print(json.dumps(report, indent=2))
    return report
