import hashlib
import json

import numpy as np

from yoloq.data.shapes import CLASSES, ShapesSpec, generate_shapes

SPEC = ShapesSpec(n_train=12, n_val=4, img_size=128, min_object=12, max_object=100, max_objects=6, seed=3)


def _digest(folder):
    h = hashlib.sha1()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(folder).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_generation_is_deterministic(tmp_path):
    generate_shapes(SPEC, tmp_path / "a", workers=2)
    generate_shapes(SPEC, tmp_path / "b", workers=1)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    generate_shapes(ShapesSpec(**{**SPEC.__dict__, "seed": 4}), tmp_path / "c", workers=1)
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


def test_annotations_are_valid_coco(tmp_path):
    generate_shapes(SPEC, tmp_path, workers=1)
    coco = json.loads((tmp_path / "annotations" / "instances_train.json").read_text())
    assert [c["name"] for c in coco["categories"]] == list(CLASSES)
    assert len(coco["images"]) == SPEC.n_train
    assert coco["annotations"], "no objects generated"
    for a in coco["annotations"]:
        x, y, w, h = a["bbox"]
        assert 0 <= x and 0 <= y and x + w <= SPEC.img_size and y + h <= SPEC.img_size
        assert w > 0 and h > 0 and a["area"] > 0 and a["iscrowd"] == 0
        pts = np.concatenate([np.reshape(p, (-1, 2)) for p in a["segmentation"]])
        # the box is the extent of the polygon, so the two never disagree
        assert np.allclose([pts[:, 0].min(), pts[:, 1].min(), pts[:, 0].max(), pts[:, 1].max()], [x, y, x + w, y + h])
    assert len({a["category_id"] for a in coco["annotations"]}) >= 3


def test_scale_range_is_wide(tmp_path):
    spec = ShapesSpec(n_train=60, n_val=1, img_size=256, seed=1)
    generate_shapes(spec, tmp_path, workers=2)
    coco = json.loads((tmp_path / "annotations" / "instances_train.json").read_text())
    sides = np.array([max(a["bbox"][2:]) for a in coco["annotations"]])
    assert spec.max_object / spec.min_object >= 8
    assert sides.max() / sides.min() >= 6  # log-uniform sizes really cover the range (occlusion trims some)
