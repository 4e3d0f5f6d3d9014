"""Turn `cfg.data` into a ready dataset folder: images/, labels/ and COCO json for train and val.

`data=shapes` generates the synthetic set into the cache on first use; `data=coco` converts a real
COCO 2017 folder's json into YOLO labels in the cache (the user's folder is only read; images are
reached through a symlink). Both end in the same layout, so everything downstream is one code path.
Two runs that start at once build a cache entry once: the second waits on the entry's lock, then uses it; a
finished entry is never replaced while another run may be reading it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from yoloq.data.coco_format import category_mapping, load_coco_json, write_yolo_labels
from yoloq.data.shapes import ShapesSpec, generate_shapes
from yoloq.errors import UserError
from yoloq.locks import waiting_lock

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    root: Path  # the prepared folder (images/<split>, labels/<split>, annotations/)
    train_split: str
    val_split: str
    names: tuple[str, ...]
    category_ids: tuple[int, ...]  # COCO category id of each class index
    fingerprint: str  # identifies the data for the FP-model cache key

    def images(self, split: str) -> Path:
        return self.root / "images" / split

    def annotations(self, split: str) -> Path:
        return self.root / "annotations" / f"instances_{split}.json"

    @property
    def nc(self) -> int:
        return len(self.names)

    def ultralytics_data(self) -> dict:
        """The `data` dict ultralytics' datasets read (what a data.yaml would hold)."""
        return {"names": dict(enumerate(self.names)), "nc": self.nc, "channels": 3, "path": str(self.root),
                "train": str(self.images(self.train_split)), "val": str(self.images(self.val_split))}


def prepare_dataset(data_cfg, cache_dir: Path) -> DatasetInfo:
    kind = data_cfg.name
    if kind == "shapes":
        return _prepare_shapes(data_cfg, Path(cache_dir))
    if kind == "coco":
        return _prepare_coco(data_cfg, Path(cache_dir))
    raise UserError(f"unknown dataset data.name={kind!r}: use data=shapes or data=coco")


def _finish(tmp: Path, root: Path) -> None:
    """Publish a fully written folder atomically (rename), so a half-built cache is never used. Called under the
    entry's lock: whatever is at `root` is an unfinished leftover of a crashed run, read by nobody."""
    (tmp / ".complete").write_text("ok")
    shutil.rmtree(root, ignore_errors=True)
    tmp.rename(root)


def _build_once(root: Path, build) -> None:
    """`build(tmp)` fills a temporary folder that becomes `root`, unless `root` is complete already (perhaps
    built by another run while this one waited for the lock)."""
    if (root / ".complete").exists():
        return
    with waiting_lock(root.with_name(root.name + ".lock"), f"the dataset cache {root}"):
        if (root / ".complete").exists():
            return
        tmp = root.with_name(root.name + f".partial-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        build(tmp)
        _finish(tmp, root)


def _info(name: str, root: Path, train: str, val: str, fingerprint: str) -> DatasetInfo:
    names, ids = category_mapping(load_coco_json(root / "annotations" / f"instances_{val}.json"))
    return DatasetInfo(name, root, train, val, tuple(names), tuple(ids), fingerprint)


def _prepare_shapes(data_cfg, cache_dir: Path) -> DatasetInfo:
    spec = ShapesSpec(n_train=int(data_cfg.n_train), n_val=int(data_cfg.n_val), img_size=int(data_cfg.img_size),
                      min_object=int(data_cfg.min_object), max_object=int(data_cfg.max_object),
                      max_objects=int(data_cfg.max_objects), distractors=int(data_cfg.distractors),
                      seed=int(data_cfg.seed))
    root = cache_dir / f"shapes-{spec.key()}"

    def build(tmp: Path) -> None:
        generate_shapes(spec, tmp, workers=int(data_cfg.get("workers", 2)))
        for split in ("train", "val"):
            write_yolo_labels(load_coco_json(tmp / "annotations" / f"instances_{split}.json"), tmp / "labels" / split)

    _build_once(root, build)
    return _info("shapes", root, "train", "val", f"shapes-{spec.key()}")


def _find_images(root: Path, split: str) -> Path:
    for candidate in (root / split, root / "images" / split):
        if candidate.is_dir():
            return candidate
    raise UserError(f"no image folder for split {split!r} in data.root={root}: expected {root / split}/ "
                    f"or {root / 'images' / split}/ (COCO 2017 layout)")


def _prepare_coco(data_cfg, cache_dir: Path) -> DatasetInfo:
    if not data_cfg.get("root"):
        raise UserError("data=coco needs data.root: add data.root=/path/to/coco (with annotations/ and val2017/)")
    src = Path(str(data_cfg.root)).expanduser().resolve()
    if not src.is_dir():
        raise UserError(f"data.root={src} does not exist: point data.root at your COCO 2017 folder")
    train, val = str(data_cfg.train_split), str(data_cfg.val_split)
    jsons = {s: src / "annotations" / f"instances_{s}.json" for s in (train, val)}
    for split, js in jsons.items():
        if not js.is_file():
            raise UserError(f"data.root={src} has no annotations for split {split!r}: expected {js}")
    image_dirs = {s: _find_images(src, s) for s in (train, val)}

    stamp = json.dumps({s: [str(js), js.stat().st_size, js.stat().st_mtime_ns] for s, js in jsons.items()})
    key = hashlib.sha1(stamp.encode()).hexdigest()[:10]
    root = cache_dir / f"coco-{key}"

    def build(tmp: Path) -> None:
        (tmp / "images").mkdir(parents=True)
        (tmp / "annotations").mkdir()
        for split in (train, val):
            coco = load_coco_json(jsons[split])
            (tmp / "images" / split).symlink_to(image_dirs[split], target_is_directory=True)
            (tmp / "annotations" / f"instances_{split}.json").symlink_to(jsons[split])
            write_yolo_labels(coco, tmp / "labels" / split)

    _build_once(root, build)
    return _info("coco", root, train, val, f"coco-{key}")


def count_images(folder: Path) -> int:
    return sum(1 for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
