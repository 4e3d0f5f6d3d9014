"""ultralytics' YOLO dataset and dataloader (mosaic, affine, HSV, albumentations) on a prepared folder."""

from __future__ import annotations

import contextlib
import io
import logging

from ultralytics.data.build import build_dataloader, build_yolo_dataset

from yoloq.data.prepare import DatasetInfo, count_images

log = logging.getLogger("yoloq")


def build_loader(info: DatasetInfo, hyp, split: str, batch: int, workers: int, train: bool, device: str = "cpu"):
    """A dataloader over `split`; augmentation only when `train`. Skipped corrupt images are reported."""
    with contextlib.redirect_stdout(io.StringIO()):
        dataset = build_yolo_dataset(hyp, str(info.images(split)), batch, info.ultralytics_data(),
                                     mode="train" if train else "val", stride=32)
    skipped = count_images(info.images(split)) - len(dataset.im_files)
    if skipped > 0:
        log.warning("%s/%s: skipped %d corrupt or unreadable image(s); they are left out of training and "
                    "evaluation", info.name, split, skipped)
    return build_dataloader(dataset, batch, workers, shuffle=train, rank=-1, device=device)
