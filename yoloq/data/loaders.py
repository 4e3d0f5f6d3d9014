"""ultralytics' YOLO dataset and dataloader (mosaic, affine, HSV, albumentations) on a prepared folder."""

from __future__ import annotations

import contextlib
import copy
import io
import logging

from ultralytics.data.build import build_dataloader, build_yolo_dataset

from yoloq.data.prepare import DatasetInfo, count_images

log = logging.getLogger("yoloq")


def build_loader(info: DatasetInfo, hyp, split: str, batch: int, workers: int, train: bool, device: str = "cpu",
                 fraction: float = 1.0, mosaic: bool = True):
    """A dataloader over `split` (or a random `fraction` of it); augmentation only when `train`, mosaic
    only when `mosaic`. Skipped corrupt images are reported."""
    hyp = copy.copy(hyp)  # the dataset keeps and may change (close_mosaic) its namespace: never share it
    if not mosaic:
        hyp.mosaic = hyp.mixup = hyp.copy_paste = hyp.cutmix = 0.0
    with contextlib.redirect_stdout(io.StringIO()):
        dataset = build_yolo_dataset(hyp, str(info.images(split)), batch, info.ultralytics_data(),
                                     mode="train" if train else "val", stride=32, fraction=fraction)
    skipped = count_images(info.images(split)) - len(dataset.im_files)
    if skipped > 0 and fraction >= 1.0:
        log.warning("%s/%s: skipped %d corrupt or unreadable image(s); they are left out of training and "
                    "evaluation", info.name, split, skipped)
    return build_dataloader(dataset, batch, workers, shuffle=train, rank=-1, device=device)
