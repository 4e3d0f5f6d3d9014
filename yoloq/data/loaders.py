"""ultralytics' YOLO dataset (mosaic, affine, HSV, albumentations) on a prepared folder: ultralytics'
dataloader for evaluation, our EpochLoader (resumable, sharded under torchrun) for training."""

from __future__ import annotations

import contextlib
import copy
import io
import logging

import torch
from ultralytics.data.build import build_dataloader, build_yolo_dataset

from yoloq.data.epoch_loader import EpochLoader
from yoloq.data.prepare import DatasetInfo, count_images
from yoloq.engine import distributed

log = logging.getLogger("yoloq")


def build_dataset(info: DatasetInfo, hyp, split: str, batch: int, train: bool, fraction: float = 1.0,
                  mosaic: bool = True):
    """ultralytics' dataset over `split` (or the first `fraction` of it); augmentation only when `train`, mosaic
    only when `mosaic`."""
    hyp = copy.copy(hyp)  # the dataset keeps and may change (close_mosaic) its namespace: never share it
    if not mosaic:
        hyp.mosaic = hyp.mixup = hyp.copy_paste = hyp.cutmix = 0.0
    with contextlib.redirect_stdout(io.StringIO()):
        return build_yolo_dataset(hyp, str(info.images(split)), batch, info.ultralytics_data(),
                                  mode="train" if train else "val", stride=32, fraction=fraction)


class IndexSubset(torch.utils.data.Dataset):
    """Some images of a built dataset, by index: a split of it without building (and re-caching the labels of)
    another dataset. Use it without mosaic, which would draw partners from the whole dataset."""

    def __init__(self, dataset, indices: list[int]):
        self.dataset, self.indices = dataset, list(indices)
        self.collate_fn = dataset.collate_fn
        self.im_files = [dataset.im_files[i] for i in self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        return self.dataset[self.indices[i]]


def build_loader(info: DatasetInfo, hyp, split: str, batch: int, workers: int, train: bool, device: str = "cpu",
                 fraction: float = 1.0, mosaic: bool = True, seed: int = 0):
    """A dataloader over `split` (or the first `fraction` of it); augmentation only when `train`, mosaic
    only when `mosaic`. Skipped corrupt images are reported. A training loader shuffles by `seed` and, under
    torchrun, yields this rank's share of `batch` (the global batch) per step."""
    dataset = build_dataset(info, hyp, split, batch, train, fraction, mosaic)
    skipped = count_images(info.images(split)) - len(dataset.im_files)
    if skipped > 0 and fraction >= 1.0:
        log.warning("%s/%s: skipped %d corrupt or unreadable image(s); they are left out of training and "
                    "evaluation", info.name, split, skipped)
    if train:
        world = distributed.world_size()
        return EpochLoader(dataset, batch // world, workers, seed, distributed.rank(), world,
                           pin_memory=device.startswith("cuda"))
    return build_dataloader(dataset, batch, workers, shuffle=False, rank=-1, device=device)
