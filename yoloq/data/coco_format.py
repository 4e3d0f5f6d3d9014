"""COCO instances json -> the YOLO label files ultralytics reads, with a contiguous class mapping.

Class index i is the i-th category of the json sorted by id (for COCO 2017 this is the usual
80-class mapping). Labels are polygons (`cls x1 y1 x2 y2 ...`, normalised), from which ultralytics
derives boxes for detection and masks for segmentation, as its own COCO labels do. Crowd
annotations are left out, like ultralytics' converter does.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
from ultralytics.data.converter import merge_multi_segment

from yoloq.errors import UserError


def load_coco_json(path: Path) -> dict:
    try:
        coco = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read COCO annotations {path} ({e.__class__.__name__}): "
                        "point data.root at a folder with valid annotations/instances_<split>.json") from None
    if not isinstance(coco, dict) or not all(k in coco for k in ("images", "annotations", "categories")):
        raise UserError(f"{path} is not a COCO instances file (needs images, annotations, categories): "
                        "use the instances_<split>.json from the COCO annotations")
    return coco


def category_mapping(coco: dict) -> tuple[list[str], list[int]]:
    """(class names, COCO category id of each class index)."""
    cats = sorted(coco["categories"], key=lambda c: c["id"])
    return [c["name"] for c in cats], [c["id"] for c in cats]


def _polygon_of(ann: dict, w: int, h: int) -> np.ndarray | None:
    """One normalised polygon (N, 2) for an annotation; a box when it has no polygon."""
    seg = ann.get("segmentation")
    if isinstance(seg, list) and seg:
        parts = [np.asarray(p, float).reshape(-1, 2) for p in seg if len(p) >= 6]
        if not parts:
            return None
        poly = parts[0] if len(parts) == 1 else np.concatenate(merge_multi_segment(parts), 0)
    else:
        x, y, bw, bh = ann["bbox"]
        poly = np.array([[x, y], [x + bw, y], [x + bw, y + bh], [x, y + bh]], float)
    return np.clip(poly / np.array([w, h]), 0.0, 1.0)


def write_yolo_labels(coco: dict, labels_dir: Path) -> int:
    """Write one label file per image (empty for background images); returns the number of labels."""
    labels_dir = Path(labels_dir)
    labels_dir.mkdir(parents=True, exist_ok=True)
    index_of = {cid: i for i, cid in enumerate(category_mapping(coco)[1])}
    by_image = defaultdict(list)
    for ann in coco["annotations"]:
        if not ann.get("iscrowd", 0):
            by_image[ann["image_id"]].append(ann)
    count = 0
    for img in coco["images"]:
        lines = []
        for ann in by_image.get(img["id"], []):
            poly = _polygon_of(ann, img["width"], img["height"])
            if poly is None or ann["category_id"] not in index_of:
                continue
            coords = " ".join(f"{v:.6f}" for v in poly.reshape(-1))
            lines.append(f"{index_of[ann['category_id']]} {coords}")
        (labels_dir / Path(img["file_name"]).with_suffix(".txt").name).write_text("\n".join(lines))
        count += len(lines)
    return count
