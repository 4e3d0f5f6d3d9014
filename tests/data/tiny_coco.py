"""A tiny COCO-2017-layout folder written by the tests (real COCO cannot be downloaded here)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

CATEGORIES = [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}, {"id": 7, "name": "train"}]


def make_tiny_coco(root: Path, n_images: int = 6, size: int = 160) -> Path:
    """Images with filled rectangles/triangles; non-contiguous category ids, a crowd, a bbox-only and a
    two-polygon annotation, as real COCO has."""
    rng = np.random.default_rng(0)
    (root / "annotations").mkdir(parents=True)
    for split in ("train2017", "val2017"):
        (root / split).mkdir()
        images, anns = [], []
        for i in range(n_images):
            img = np.full((size, size + 32, 3), 90, np.uint8)
            name = f"{i:012d}.jpg"
            images.append({"id": 100 + i, "file_name": name, "width": size + 32, "height": size})
            for k, cat in enumerate(CATEGORIES):
                x, y = 10 + 45 * k, 20 + int(rng.integers(0, 60))
                poly = [x, y, x + 36, y, x + 36, y + 40, x, y + 40]
                cv2.fillPoly(img, [np.array(poly).reshape(-1, 2)], (50 * k + 40, 200, 30 * k))
                anns.append({"id": len(anns) + 1, "image_id": 100 + i, "category_id": cat["id"],
                             "bbox": [x, y, 36, 40], "area": 1440.0, "iscrowd": 0, "segmentation": [poly]})
            anns.append({"id": len(anns) + 1, "image_id": 100 + i, "category_id": 3, "bbox": [5, 120, 60, 30],
                         "area": 900.0, "iscrowd": 1, "segmentation": {"counts": [0, 10], "size": [size, size + 32]}})
            if i == 0:  # bbox only, and a split object in two polygons
                anns.append({"id": len(anns) + 1, "image_id": 100, "category_id": 1, "bbox": [150, 100, 20, 30],
                             "area": 600.0, "iscrowd": 0})
                anns.append({"id": len(anns) + 1, "image_id": 100, "category_id": 7, "bbox": [100, 120, 60, 20],
                             "area": 400.0, "iscrowd": 0,
                             "segmentation": [[100, 120, 120, 120, 120, 140, 100, 140],
                                              [140, 120, 160, 120, 160, 140, 140, 140]]})
            cv2.imwrite(str(root / split / name), img)
        (root / "annotations" / f"instances_{split}.json").write_text(
            json.dumps({"images": images, "annotations": anns, "categories": CATEGORIES}))
    return root
