"""The embedded synthetic dataset `data=shapes`: detection and instance segmentation, fully offline.

Each image has a cluttered, textured background, a few distractor strokes (lines, arcs, scribbles,
text) and 1..max_objects objects from classes that differ by *shape* (colour is random for every
class). Objects overlap and occlude each other; annotations describe the *visible* part (mask ->
polygon -> box), and a placement that would hide more than half of an earlier object is rejected.
Everything is drawn from a per-image seed, so the dataset is identical on every machine.
"""

from __future__ import annotations

import hashlib
import json
import math
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

CLASSES = ("circle", "triangle", "square", "pentagon", "star", "cross")
GENERATOR_VERSION = 1  # bump when drawing changes, so cached copies are rebuilt


@dataclass(frozen=True)
class ShapesSpec:
    """What to generate. Every field is part of the cache key."""

    n_train: int = 2000
    n_val: int = 300
    img_size: int = 192
    min_object: int = 12  # longest side of the smallest object, pixels
    max_object: int = 100  # >= 8x min_object: the scale range the issue asks for
    max_objects: int = 7
    distractors: int = 5
    seed: int = 0

    def key(self) -> str:
        blob = json.dumps({**asdict(self), "version": GENERATOR_VERSION}, sort_keys=True)
        return hashlib.sha1(blob.encode()).hexdigest()[:10]


# ---------------------------------------------------------------- drawing primitives
def _regular_polygon(n: int, star: bool = False) -> np.ndarray:
    """Unit-radius outline centred at 0; a star alternates outer and inner (0.45) radii."""
    k = 2 * n if star else n
    ang = -math.pi / 2 + np.arange(k) * 2 * math.pi / k
    rad = np.where(np.arange(k) % 2 == 1, 0.45, 1.0) if star else np.ones(k)
    return np.stack([rad * np.cos(ang), rad * np.sin(ang)], 1)


def _cross() -> np.ndarray:
    a, b = 1.0, 0.33
    return np.array([(-b, -a), (b, -a), (b, -b), (a, -b), (a, b), (b, b), (b, a), (-b, a), (-b, b), (-a, b),
                     (-a, -b), (-b, -b)], float)


_OUTLINES = {
    "circle": _regular_polygon(48),
    "triangle": _regular_polygon(3),
    "square": _regular_polygon(4),
    "pentagon": _regular_polygon(5),
    "star": _regular_polygon(5, star=True),
    "cross": _cross(),
}


def _outline(cls: str, rng: np.random.Generator, size: float, centre: np.ndarray) -> np.ndarray:
    """Random rotation and a mild anisotropic stretch, scaled so the longest side is about `size`."""
    pts = _OUTLINES[cls].copy()
    theta = rng.uniform(0, 2 * math.pi)
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    stretch = np.diag([rng.uniform(0.8, 1.2), 1.0])
    pts = pts @ stretch @ rot.T
    pts *= size / max(np.ptp(pts[:, 0]), np.ptp(pts[:, 1]))
    return pts + centre


def _colour(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(c) for c in rng.integers(0, 256, 3))


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Low-frequency colour noise, a random grid or stripes texture and pixel noise."""
    coarse = rng.integers(0, 256, (rng.integers(2, 7), rng.integers(2, 7), 3)).astype(np.uint8)
    img = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC).astype(np.float32)
    kind = rng.integers(0, 3)
    if kind == 0:  # stripes
        period = rng.uniform(6, 30)
        theta = rng.uniform(0, math.pi)
        yy, xx = np.mgrid[0:size, 0:size]
        wave = np.sin((xx * math.cos(theta) + yy * math.sin(theta)) * 2 * math.pi / period)
        img += wave[..., None] * rng.uniform(10, 40)
    elif kind == 1:  # grid
        step = int(rng.integers(10, 40))
        shade = rng.uniform(-50, 50)
        img[::step] += shade
        img[:, ::step] += shade
    img += rng.normal(0, rng.uniform(3, 15), img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _distractor(img: np.ndarray, rng: np.random.Generator) -> None:
    """Strokes that are not any class: lines, open arcs, scribbles, text."""
    size = img.shape[0]
    colour, thick = _colour(rng), int(rng.integers(1, 4))
    kind = rng.integers(0, 4)
    if kind == 0:
        p1, p2 = rng.integers(0, size, 2), rng.integers(0, size, 2)
        cv2.line(img, tuple(map(int, p1)), tuple(map(int, p2)), colour, thick, cv2.LINE_AA)
    elif kind == 1:
        c = tuple(map(int, rng.integers(0, size, 2)))
        axes = tuple(map(int, rng.integers(8, size // 3, 2)))
        start = float(rng.uniform(0, 360))
        cv2.ellipse(img, c, axes, 0, start, start + rng.uniform(60, 200), colour, thick, cv2.LINE_AA)
    elif kind == 2:
        pts = np.cumsum(rng.normal(0, size / 12, (int(rng.integers(4, 9)), 2)), 0) + rng.integers(0, size, 2)
        cv2.polylines(img, [pts.astype(np.int32)], False, colour, thick, cv2.LINE_AA)
    else:
        text = "".join(rng.choice(list("ABCDEFGHKLMNPRSTUVWXYZ0123456789"), int(rng.integers(2, 6))))
        org = tuple(map(int, rng.integers(0, size - 10, 2)))
        cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, float(rng.uniform(0.3, 1.0)), colour, thick,
                    cv2.LINE_AA)


def _fill(img: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> None:
    """Solid, two-tone gradient or striped fill inside the mask, sometimes with an outline."""
    colour = np.array(_colour(rng), np.float32)
    kind = rng.integers(0, 3)
    if kind == 0:
        paint = np.broadcast_to(colour, img.shape)
    else:
        yy, xx = np.mgrid[0:img.shape[0], 0:img.shape[1]]
        theta = rng.uniform(0, math.pi)
        proj = xx * math.cos(theta) + yy * math.sin(theta)
        if kind == 1:
            t = (proj - proj[mask].min()) / max(np.ptp(proj[mask]), 1.0)
        else:
            t = (np.sin(proj * 2 * math.pi / rng.uniform(4, 12)) > 0).astype(np.float32)
        other = np.array(_colour(rng), np.float32)
        paint = colour * (1 - t[..., None]) + other * t[..., None]
    img[mask] = paint[mask].astype(np.uint8)


# ---------------------------------------------------------------- one image
def _render(spec: ShapesSpec, split: str, index: int) -> tuple[np.ndarray, list[dict]]:
    """Return (BGR image, annotations) for one image; annotations carry category index and polygons."""
    seed = [spec.seed, {"train": 0, "val": 1}[split], index]
    rng = np.random.default_rng(seed)
    size = spec.img_size
    img = _background(rng, size)
    for _ in range(rng.integers(0, spec.distractors + 1)):
        _distractor(img, rng)

    full_masks: list[np.ndarray] = []
    visible: list[np.ndarray] = []
    classes: list[int] = []
    log_lo, log_hi = math.log(spec.min_object), math.log(spec.max_object)
    for _ in range(int(rng.integers(1, spec.max_objects + 1))):
        for _attempt in range(20):
            cls = int(rng.integers(len(CLASSES)))
            obj = math.exp(rng.uniform(log_lo, log_hi))  # log-uniform: as many small as large
            centre = rng.uniform(obj / 2, size - obj / 2, 2)
            pts = _outline(CLASSES[cls], rng, obj, centre)
            mask = np.zeros((size, size), np.uint8)
            cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 1)
            mask = mask.astype(bool)
            if mask.sum() < 16:
                continue
            # reject a placement that would hide more than half of an earlier object
            if all((v & ~mask).sum() >= 0.5 * f.sum() for v, f in zip(visible, full_masks)):
                break
        else:
            continue
        visible = [v & ~mask for v in visible]
        full_masks.append(mask)
        visible.append(mask.copy())
        classes.append(cls)
        _fill(img, mask, rng)
        if rng.random() < 0.3:
            cv2.polylines(img, [np.round(pts).astype(np.int32)], True, _colour(rng), 1, cv2.LINE_AA)

    anns = []
    for cls, vis in zip(classes, visible):
        polys = _mask_polygons(vis)
        if not polys:
            continue
        allpts = np.concatenate([np.asarray(p).reshape(-1, 2) for p in polys])
        x0, y0 = allpts.min(0)
        x1, y1 = allpts.max(0)
        anns.append({"category": cls, "segmentation": polys, "area": float(vis.sum()),
                     "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)]})
    return img, anns


def _mask_polygons(mask: np.ndarray) -> list[list[float]]:
    """Outer contours of a mask as COCO polygons in pixel-centre coordinates (x + 0.5)."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polys = []
    for c in contours:
        if len(c) >= 3 and cv2.contourArea(c) >= 4:
            polys.append([round(float(v) + 0.5, 2) for v in c.reshape(-1)])
    return polys


def _render_to_file(args: tuple[ShapesSpec, str, int, str]) -> list[dict]:
    spec, split, index, path = args
    img, anns = _render(spec, split, index)
    if not cv2.imwrite(path, img, [cv2.IMWRITE_JPEG_QUALITY, 92]):
        raise OSError(f"could not write {path}")
    return anns


# ---------------------------------------------------------------- the dataset folder
def generate_shapes(spec: ShapesSpec, out_dir: Path, workers: int = 2) -> None:
    """Write images/{train,val}/*.jpg and annotations/instances_{train,val}.json under `out_dir`."""
    out_dir = Path(out_dir)
    categories = [{"id": i + 1, "name": n, "supercategory": "shape"} for i, n in enumerate(CLASSES)]
    (out_dir / "annotations").mkdir(parents=True, exist_ok=True)
    for split, count in (("train", spec.n_train), ("val", spec.n_val)):
        (out_dir / "images" / split).mkdir(parents=True, exist_ok=True)
        jobs = [(spec, split, i, str(out_dir / "images" / split / f"{i:06d}.jpg")) for i in range(count)]
        with ProcessPoolExecutor(max(1, workers)) as pool:
            results = list(tqdm(pool.map(_render_to_file, jobs, chunksize=32), total=count,
                                desc=f"shapes {split}", unit="img"))
        images, annotations = [], []
        for i, anns in enumerate(results):
            images.append({"id": i + 1, "file_name": f"{i:06d}.jpg", "width": spec.img_size,
                           "height": spec.img_size})
            for a in anns:
                annotations.append({"id": len(annotations) + 1, "image_id": i + 1,
                                    "category_id": a["category"] + 1, "bbox": a["bbox"], "area": a["area"],
                                    "iscrowd": 0, "segmentation": a["segmentation"]})
        coco = {"info": {"description": "yoloq synthetic shapes", "spec": asdict(spec)},
                "images": images, "annotations": annotations, "categories": categories}
        (out_dir / "annotations" / f"instances_{split}.json").write_text(json.dumps(coco))
