"""Predictions -> COCO results json -> pycocotools COCOeval: the official COCO numbers."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import torch
import torchvision  # noqa: F401  ultralytics' NMS uses torchvision's kernel only once it is imported; its
# pure-torch fallback is a Python loop that hits the NMS time limit on early models and drops images
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from tqdm import tqdm
from ultralytics.utils import nms, ops
from yoloq.atomic import write_json_atomic

# COCOeval.stats, in its order
STAT_NAMES = ("mAP50-95", "mAP50", "mAP75", "mAP_small", "mAP_medium", "mAP_large",
              "AR1", "AR10", "AR100", "AR_small", "AR_medium", "AR_large")
MASKS_PER_IMAGE = 100  # COCOeval scores the 100 best detections of an image: only those get a mask encoded


def encode_masks(masks: torch.Tensor) -> list[dict]:
    """Binary masks [n, h, w] at the original image resolution -> COCO RLE dicts (counts as str, for json)."""
    rles = mask_utils.encode(np.asfortranarray(masks.permute(1, 2, 0).cpu().numpy().astype(np.uint8)))
    for rle in rles:
        rle["counts"] = rle["counts"].decode()
    return rles


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
                 conf: float = 0.001, iou: float = 0.7, max_det: int = 300, progress: bool = True,
                 task: str = "detect"):
        self.loader = loader
        self.gt = load_coco(gt_json)
        self.image_id = {Path(img["file_name"]).name: img["id"] for img in self.gt.dataset["images"]}
        self.category_ids = torch.tensor(category_ids)
        self.device = device
        self.conf, self.iou, self.max_det = conf, iou, max_det
        self.progress = progress
        self.task = task
        self.nc = len(category_ids)

    @torch.no_grad()
    def predict(self, model: torch.nn.Module) -> tuple[list[dict], list[int]]:
        """COCO result dicts for every image the loader yields (with a `segmentation` RLE for segmentation
        models), and the ids of those images."""
        was_training = model.training
        model.eval()
        results, seen = [], []
        bar = tqdm(self.loader, desc="eval", unit="batch", leave=False, disable=not self.progress)
        for batch in bar:
            imgs = batch["img"].to(self.device, non_blocking=True).float() / 255
            out = model(imgs)  # eval mode: (decoded, raw), or ((decoded, protos), raw) for segmentation
            if self.task == "segment":
                out, protos = out[0]
            else:
                out, protos = (out[0] if isinstance(out, (tuple, list)) else out), None
            dets = nms.non_max_suppression(out, self.conf, self.iou, multi_label=True, max_det=self.max_det,
                                           nc=self.nc)
            for i, det in enumerate(dets):
                image_id = self.image_id[Path(batch["im_file"][i]).name]
                seen.append(image_id)
                if not len(det):
                    continue
                ori_shape, ratio_pad = batch["ori_shape"][i], batch["ratio_pad"][i]
                boxes = ops.scale_boxes(imgs.shape[2:], det[:, :4].clone(), ori_shape, ratio_pad=ratio_pad)
                rows = self._to_coco(image_id, boxes.cpu(), det[:, 4].cpu(), det[:, 5].cpu())
                if protos is not None:
                    rows = rows[:MASKS_PER_IMAGE]  # NMS sorts by score
                    det = det[:MASKS_PER_IMAGE]
                    masks = self._masks(protos[i], det, imgs.shape[2:], ori_shape, ratio_pad)
                    for row, rle in zip(rows, encode_masks(masks)):
                        row["segmentation"] = rle
                results.extend(rows)
        model.train(was_training)
        return results, seen

    @staticmethod
    def _masks(protos, det, input_shape, ori_shape, ratio_pad) -> torch.Tensor:
        """Each detection's mask (prototypes x its coefficients, cropped to its box) at the letterboxed input
        size, then with the padding removed and resized to the original image: binary [n, h0, w0]."""
        masks = ops.process_mask(protos, det[:, 6:], det[:, :4], input_shape, upsample=True)
        return ops.scale_masks(masks[None], ori_shape, ratio_pad=ratio_pad)[0] > 0.5

    def _to_coco(self, image_id: int, xyxy: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor) -> list[dict]:
        xywh = xyxy.clone()
        xywh[:, 2:] -= xywh[:, :2]
        cats = self.category_ids[classes.long()]
        return [{"image_id": image_id, "category_id": int(c), "bbox": [round(float(v), 3) for v in b],
                 "score": round(float(s), 5)} for b, s, c in zip(xywh, scores, cats)]

    def __call__(self, model: torch.nn.Module, save_json: str | Path | None = None) -> dict:
        """Box metrics (mAP50-95, mAP50, ...); segmentation models add the mask metrics as mask_mAP50-95, ..."""
        results, seen = self.predict(model)
        if save_json is not None:
            write_json_atomic(save_json, results, indent=None)
        boxes = [{k: v for k, v in r.items() if k != "segmentation"} for r in results]
        metrics = coco_metrics(self.gt, boxes, img_ids=seen)
        if self.task == "segment":
            segm = coco_metrics(self.gt, results, img_ids=seen, iou_type="segm")
            metrics.update({f"mask_{k}": v for k, v in segm.items()})
        return metrics


def ground_truth_as_results(gt: COCO) -> list[dict]:
    """Every non-crowd ground-truth box as a detection with score 1 (a sanity check: mAP must be 1)."""
    return [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
            for a in gt.dataset["annotations"] if not a.get("iscrowd", 0)]


def finite(values: dict) -> dict:
    """Metrics with NaN replaced by None, for JSON."""
    return {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in values.items()}
