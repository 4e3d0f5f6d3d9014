import copy
import math

import pytest
from omegaconf import OmegaConf

from tests.data.tiny_coco import make_tiny_coco
from yoloq.data.prepare import prepare_dataset
from yoloq.eval.coco_eval import STAT_NAMES, coco_metrics, ground_truth_as_results, load_coco


@pytest.fixture(scope="module")
def shapes_val(tmp_path_factory):
    cfg = OmegaConf.create({"name": "shapes", "n_train": 2, "n_val": 24, "img_size": 160, "min_object": 12,
                            "max_object": 120, "max_objects": 6, "distractors": 3, "seed": 0, "workers": 1})
    info = prepare_dataset(cfg, tmp_path_factory.mktemp("cache"))
    return load_coco(info.annotations("val"))


def test_ground_truth_as_predictions_scores_one(shapes_val):
    m = coco_metrics(shapes_val, ground_truth_as_results(shapes_val))
    assert set(m) == set(STAT_NAMES)
    assert m["mAP50-95"] == pytest.approx(1.0) and m["mAP50"] == pytest.approx(1.0)
    assert m["AR100"] == pytest.approx(1.0)


def test_shifted_boxes_lose_strict_iou_first(shapes_val):
    res = copy.deepcopy(ground_truth_as_results(shapes_val))
    for r in res:
        x, y, w, h = r["bbox"]
        r["bbox"] = [x + 0.12 * w, y, w, h]  # IoU 0.786: counts at 0.5..0.75, not at 0.8..0.95
    m = coco_metrics(shapes_val, res)
    assert m["mAP50"] == pytest.approx(1.0) and m["mAP75"] == pytest.approx(1.0)
    assert m["mAP50-95"] == pytest.approx(0.6, abs=0.01)


def test_wrong_class_scores_zero(shapes_val):
    res = ground_truth_as_results(shapes_val)
    for r in res:
        r["category_id"] = r["category_id"] % 6 + 1
    assert coco_metrics(shapes_val, res)["mAP50-95"] == pytest.approx(0.0)


def test_no_predictions_and_restricted_images(tmp_path):
    root = make_tiny_coco(tmp_path / "coco")
    gt = load_coco(root / "annotations" / "instances_val2017.json")
    assert coco_metrics(gt, [])["mAP50-95"] == 0.0
    # predictions for only two images, evaluated on only those two: perfect
    res = [r for r in ground_truth_as_results(gt) if r["image_id"] in (100, 101)]
    assert coco_metrics(gt, res, img_ids=[100, 101])["mAP50-95"] == pytest.approx(1.0)
    assert coco_metrics(gt, res)["mAP50-95"] < 0.5
    assert math.isnan(coco_metrics(gt, res)["mAP_large"])  # COCO's -1 (no large objects) becomes NaN
