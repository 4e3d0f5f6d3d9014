"""Predictions -> COCO results json -> pycocotools COCOeval: the official COCO numbers."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import torch
import torchvision  # noqa: F401  ultralytics' NMS uses torchvision's kernel only once it is imported; its
# pure-torch fallback is a Python loop that hits the NMS time limit on early models and drops images
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from tqdm import tqdm
from ultralytics.utils import nms, ops

# COCOeval.stats, in its order
STAT_NAMES = ("mAP50-95", "mAP50", "mAP75", "mAP_small", "mAP_medium", "mAP_large",
              "AR1", "AR10", "AR100", "AR_small", "AR_medium", "AR_large")


def load_coco(path: str | Path) -> COCO:
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


def coco_metrics(gt: COCO, results: list[dict], img_ids: list[int] | None = None, iou_type: str = "bbox") -> dict:
    """COCOeval on `results` (COCO result dicts); restricted to `img_ids` when given (e.g. skipped images)."""
    if not results:
        return {name: 0.0 for name in STAT_NAMES}
    with contextlib.redirect_stdout(io.StringIO()):  # COCOeval prints progress and the summary table
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, iou_type)
        if img_ids is not None:
            ev.params.imgIds = sorted(img_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    # COCOeval reports -1 where a category of objects is absent (e.g. no large objects): keep it as NaN
    return {name: (float(v) if v >= 0 else float("nan")) for name, v in zip(STAT_NAMES, ev.stats)}


class CocoEvaluator:
    """Runs a model over a val dataloader and scores it against the split's COCO json."""

    def __init__(self, loader, gt_json: str | Path, category_ids: tuple[int, ...], device: torch.device,
                 conf: float = 0.001, iou: float = 0.7, max_det: int = 300, progress: bool = True):
        self.loader = loader
        self.gt = load_coco(gt_json)
        self.image_id = {Path(img["file_name"]).name: img["id"] for img in self.gt.dataset["images"]}
        self.category_ids = torch.tensor(category_ids)
        self.device = device
        self.conf, self.iou, self.max_det = conf, iou, max_det
        self.progress = progress

    @torch.no_grad()
    def predict(self, model: torch.nn.Module) -> tuple[list[dict], list[int]]:
        """COCO result dicts for every image the loader yields, and the ids of those images."""
        was_training = model.training
        model.eval()
        results, seen = [], []
        bar = tqdm(self.loader, desc="eval", unit="batch", leave=False, disable=not self.progress)
        for batch in bar:
            imgs = batch["img"].to(self.device, non_blocking=True).float() / 255
            out = model(imgs)
            out = out[0] if isinstance(out, (tuple, list)) else out
            dets = nms.non_max_suppression(out, self.conf, self.iou, multi_label=True, max_det=self.max_det)
            for i, det in enumerate(dets):
                image_id = self.image_id[Path(batch["im_file"][i]).name]
                seen.append(image_id)
                if not len(det):
                    continue
                boxes = ops.scale_boxes(imgs.shape[2:], det[:, :4].clone(), batch["ori_shape"][i],
                                        ratio_pad=batch["ratio_pad"][i])
                results.extend(self._to_coco(image_id, boxes.cpu(), det[:, 4].cpu(), det[:, 5].cpu()))
        model.train(was_training)
        return results, seen

    def _to_coco(self, image_id: int, xyxy: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor) -> list[dict]:
        xywh = xyxy.clone()
        xywh[:, 2:] -= xywh[:, :2]
        cats = self.category_ids[classes.long()]
        return [{"image_id": image_id, "category_id": int(c), "bbox": [round(float(v), 3) for v in b],
                 "score": round(float(s), 5)} for b, s, c in zip(xywh, scores, cats)]

    def __call__(self, model: torch.nn.Module, save_json: str | Path | None = None) -> dict:
        results, seen = self.predict(model)
        if save_json is not None:
            Path(save_json).write_text(json.dumps(results))
        return coco_metrics(self.gt, results, img_ids=seen)


def ground_truth_as_results(gt: COCO) -> list[dict]:
    """Every non-crowd ground-truth box as a detection with score 1 (a sanity check: mAP must be 1)."""
    return [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
            for a in gt.dataset["annotations"] if not a.get("iscrowd", 0)]


def finite(values: dict) -> dict:
    """Metrics with NaN replaced by None, for JSON."""
    return {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in values.items()}
