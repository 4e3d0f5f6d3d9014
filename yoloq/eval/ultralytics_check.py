"""ultralytics' own DetectionValidator on the same model and images: a cross-check of our COCO numbers.

ultralytics computes mAP with its own matching and 101-point interpolation, pycocotools with COCO's
(area ranges, crowd handling, maxDets); the two differ slightly, and docs/RESULTS.md records by how
much on our FP model.
"""

from __future__ import annotations

import torch
from ultralytics.models.yolo.detect import DetectionValidator


@torch.no_grad()
def ultralytics_metrics(model: torch.nn.Module, loader, device: torch.device, save_dir,
                        conf: float = 0.001, iou: float = 0.7, max_det: int = 300) -> dict:
    validator = DetectionValidator(dataloader=loader, save_dir=save_dir, args=dict(
        task="detect", conf=conf, iou=iou, max_det=max_det, plots=False, save_json=False, save_txt=False,
        split="val", verbose=False))
    validator.device = device
    validator.data = {"names": model.names, "val": ""}
    validator.training = False
    was_training = model.training
    model.eval()
    validator.init_metrics(model)
    for batch in loader:
        batch = validator.preprocess(batch)
        validator.update_metrics(validator.postprocess(model(batch["img"])), batch)
    stats = validator.get_stats()
    model.train(was_training)
    return {"mAP50-95": float(stats["metrics/mAP50-95(B)"]), "mAP50": float(stats["metrics/mAP50(B)"])}
