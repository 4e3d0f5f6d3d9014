"""Our pycocotools path and ultralytics' validator agree, and box coordinates survive the letterbox."""

import pytest
import torch
from omegaconf import OmegaConf

from tests.data.tiny_coco import make_tiny_coco
from yoloq.data.loaders import build_loader
from yoloq.data.prepare import prepare_dataset
from yoloq.eval.coco_eval import CocoEvaluator
from yoloq.eval.ultralytics_check import ultralytics_metrics
from yoloq.models.build import hyperparameters


class Oracle(torch.nn.Module):
    """Predicts each batch's ground truth (letterboxed xywh pixels), in the order the loader yields."""

    def __init__(self, loader, names, jitter: float = 0.0):
        super().__init__()
        self.batches = [(b["batch_idx"], b["cls"].view(-1), b["bboxes"]) for b in loader]
        self.names, self.nc, self.jitter, self.calls = names, len(names), jitter, 0

    def forward(self, imgs):
        idx, cls, boxes = self.batches[self.calls % len(self.batches)]
        self.calls += 1
        n, _, h, w = imgs.shape
        out = torch.zeros(n, 4 + self.nc, 64)
        slot = [0] * n
        for b, c, box in zip(idx.long().tolist(), cls.long().tolist(), boxes):
            xywh = box * torch.tensor([w, h, w, h])
            xywh[0] += self.jitter * xywh[2]  # shift right by a fraction of the width
            out[b, :4, slot[b]] = xywh
            out[b, 4 + c, slot[b]] = 0.9
            slot[b] += 1
        return out


@pytest.fixture(scope="module")
def val_data(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("agree")
    cfg = OmegaConf.create({"name": "coco", "root": str(make_tiny_coco(tmp / "coco")), "train_split": "train2017",
                            "val_split": "val2017"})
    info = prepare_dataset(cfg, tmp / "cache")
    loader = build_loader(info, hyperparameters(imgsz=160, task="detect"), "val2017", 4, 0, train=False)
    return info, loader, tmp


@pytest.mark.parametrize("jitter, expected", [(0.0, 1.0), (0.12, 0.6)])
def test_pycocotools_and_ultralytics_agree(val_data, jitter, expected):
    info, loader, tmp = val_data
    device = torch.device("cpu")
    ours = CocoEvaluator(loader, info.annotations("val2017"), info.category_ids, device, progress=False)
    mine = ours(Oracle(loader, info.names, jitter))
    theirs = ultralytics_metrics(Oracle(loader, info.names, jitter), loader, device, tmp / "val")
    # non-square images are letterboxed to 160x160: the boxes must map back to the original pixels
    assert mine["mAP50-95"] == pytest.approx(expected, abs=0.02)
    assert theirs["mAP50-95"] == pytest.approx(expected, abs=0.02)
    assert mine["mAP50"] == pytest.approx(theirs["mAP50"], abs=0.02)
