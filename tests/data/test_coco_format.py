import logging
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from tests.data.tiny_coco import make_tiny_coco
from yoloq.data.loaders import build_loader
from yoloq.data.prepare import prepare_dataset
from yoloq.errors import UserError
from yoloq.models.build import hyperparameters


def coco_cfg(root):
    return OmegaConf.create({"name": "coco", "root": str(root), "train_split": "train2017", "val_split": "val2017"})


def test_coco_folder_becomes_yolo_labels(tmp_path):
    root = make_tiny_coco(tmp_path / "coco")
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    info = prepare_dataset(coco_cfg(root), tmp_path / "cache")
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before  # the user's folder is only read
    assert info.names == ("person", "car", "train") and info.category_ids == (1, 3, 7)

    lines = (info.root / "labels" / "val2017" / "000000000000.txt").read_text().splitlines()
    classes = [int(line.split()[0]) for line in lines]
    assert sorted(classes) == [0, 0, 1, 2, 2]  # 3 objects + bbox-only person + two-part train; crowd left out
    first = np.array(lines[0].split()[1:], float).reshape(-1, 2)
    assert np.allclose(first.min(0), [10 / 192, first.min(0)[1]]) and (first <= 1).all()

    loader = build_loader(info, hyperparameters(imgsz=160, task="detect"), "val2017", 4, 0, train=False)
    batch = next(iter(loader))
    assert batch["img"].shape[0] == 4 and batch["cls"].numel() == 4 * 3 + 2


def test_second_prepare_reuses_cache(tmp_path):
    root = make_tiny_coco(tmp_path / "coco")
    a = prepare_dataset(coco_cfg(root), tmp_path / "cache")
    stamp = (a.root / ".complete").stat().st_mtime_ns
    b = prepare_dataset(coco_cfg(root), tmp_path / "cache")
    assert a == b and (b.root / ".complete").stat().st_mtime_ns == stamp


@pytest.mark.parametrize("problem", ["missing_root", "no_annotations", "no_images", "bad_json"])
def test_bad_coco_roots_give_one_line_errors(tmp_path, problem):
    root = make_tiny_coco(tmp_path / "coco")
    if problem == "missing_root":
        root = tmp_path / "nowhere"
    elif problem == "no_annotations":
        (root / "annotations" / "instances_val2017.json").unlink()
    elif problem == "no_images":
        for p in (root / "val2017").iterdir():
            p.unlink()
        (root / "val2017").rmdir()
    else:
        (root / "annotations" / "instances_val2017.json").write_text("{not json")
    with pytest.raises(UserError) as e:
        prepare_dataset(coco_cfg(root), tmp_path / "cache")
    assert "\n" not in str(e.value) and "data.root" in str(e.value)


def test_corrupt_image_is_skipped_and_counted(tmp_path, caplog, monkeypatch):
    # a training run earlier in the session stops the yoloq logger from propagating to caplog's root handler
    monkeypatch.setattr(logging.getLogger("yoloq"), "propagate", True)
    root = make_tiny_coco(tmp_path / "coco")
    info = prepare_dataset(coco_cfg(root), tmp_path / "cache")
    Path(root / "val2017" / "000000000001.jpg").write_bytes(b"this is not a jpeg")
    with caplog.at_level("WARNING", logger="yoloq"):
        loader = build_loader(info, hyperparameters(imgsz=160, task="detect"), "val2017", 2, 0, train=False)
    assert len(loader.dataset) == 5
    assert "skipped 1 corrupt" in caplog.text
