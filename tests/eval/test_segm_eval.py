"""Segmentation evaluation: pycocotools `segm` on the ground truth, and our whole mask path (NMS with mask
coefficients, prototypes x coefficients, crop, unletterbox to the original image, RLE) fed with a model
that predicts the ground truth through prototypes."""

import pytest
import torch
from omegaconf import OmegaConf
from pycocotools import mask as mask_utils

from yoloq.data.loaders import build_loader
from yoloq.data.prepare import prepare_dataset
from yoloq.eval.coco_eval import CocoEvaluator, coco_metrics, encode_masks, load_coco
from yoloq.models.build import hyperparameters

NM = 32  # mask coefficients, as the Segment head


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    cfg = OmegaConf.create({"name": "shapes", "n_train": 2, "n_val": 16, "img_size": 160, "min_object": 16,
                            "max_object": 100, "max_objects": 4, "distractors": 3, "seed": 0, "workers": 1})
    return prepare_dataset(cfg, tmp_path_factory.mktemp("cache"))


def test_ground_truth_masks_score_one(shapes):
    gt = load_coco(shapes.annotations("val"))
    results = [{"image_id": a["image_id"], "category_id": a["category_id"], "segmentation": gt.annToRLE(a),
                "score": 1.0} for a in gt.dataset["annotations"]]
    m = coco_metrics(gt, results, iou_type="segm")
    assert m["mAP50-95"] == pytest.approx(1.0) and m["AR100"] == pytest.approx(1.0)


def test_encode_masks_round_trips():
    masks = torch.zeros(2, 7, 5, dtype=torch.bool)
    masks[0, 1:4, 2:5] = True
    masks[1, 6, 0] = True
    rles = encode_masks(masks)
    assert all(isinstance(r["counts"], str) for r in rles)
    decoded = mask_utils.decode([{**r, "counts": r["counts"].encode()} for r in rles])
    assert torch.equal(torch.from_numpy(decoded).permute(2, 0, 1).bool(), masks)


class GroundTruthSegmenter(torch.nn.Module):
    """Eval-mode output of a Segment model that predicts each image's labelled objects: boxes and one-hot
    class scores, and prototype k = +/-20 on object k's label mask (at 1/4 of the input, as ultralytics'
    loader and the Proto branch both use), selected by a one-hot mask coefficient."""

    def __init__(self, loader, nc: int):
        super().__init__()
        self.batches, self.nc = iter(loader), nc

    def forward(self, imgs):
        batch = next(self.batches)  # the evaluator walks the same unshuffled loader in the same order
        b, _, h, w = imgs.shape
        n = max(int((batch["batch_idx"] == i).sum()) for i in range(b))
        y = torch.zeros(b, 4 + self.nc + NM, max(n, 1))
        protos = torch.full((b, NM, h // 4, w // 4), -20.0)
        for i in range(b):
            sel = batch["batch_idx"] == i
            for k, (box, cls) in enumerate(zip(batch["bboxes"][sel], batch["cls"][sel])):
                y[i, :4, k] = box * torch.tensor([w, h, w, h])  # xywh pixels
                y[i, 4 + int(cls), k] = 1.0
                y[i, 4 + self.nc + k, k] = 1.0
                protos[i, k][batch["masks"][i] == k + 1] = 20.0  # overlap masks: object k is index k + 1
        return (y, protos), None


def test_mask_path_of_a_perfect_model(shapes):
    hyp = hyperparameters(imgsz=160, task="segment")
    loader = build_loader(shapes, hyp, "val", 4, 0, train=False)
    ev = CocoEvaluator(loader, shapes.annotations("val"), shapes.category_ids, torch.device("cpu"),
                       progress=False, task="segment")
    model = GroundTruthSegmenter(build_loader(shapes, hyp, "val", 4, 0, train=False), shapes.nc)
    m = ev(model)
    assert m["mAP50-95"] > 0.99  # boxes from YOLO labels (6 decimals) and letterboxing back
    assert m["mask_mAP50"] == pytest.approx(1.0)
    # masks made at 1/4 resolution and where objects overlap only the top one keeps the shared pixels:
    # close to, not exactly, the ground truth at strict IoUs
    assert 0.6 < m["mask_mAP50-95"] < 1.0
