"""The training loader behind resume: epoch e's batches are a function of (seed, e), and every epoch starts
with a full mosaic buffer."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from yoloq.data.loaders import build_loader
from yoloq.data.prepare import prepare_dataset
from yoloq.models.build import hyperparameters


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    cfg = OmegaConf.create({"name": "shapes", "n_train": 24, "n_val": 2, "img_size": 96, "min_object": 12,
                            "max_object": 48, "max_objects": 3, "distractors": 1, "seed": 0, "workers": 1})
    return prepare_dataset(cfg, tmp_path_factory.mktemp("cache"))


def first_batches(shapes, workers: int, seed: int, epoch: int, n: int = 2) -> list[torch.Tensor]:
    loader = build_loader(shapes, hyperparameters(imgsz=96, task="detect"), shapes.train_split, 4, workers,
                          train=True, seed=seed)
    loader.set_epoch(epoch)
    out = []
    for batch in loader:
        out.append(batch["img"])
        if len(out) == n:
            return out
    return out


@pytest.mark.parametrize("workers", [0, 2])
def test_an_epoch_is_a_function_of_seed_and_epoch(shapes, workers):
    a, b = first_batches(shapes, workers, 0, 3), first_batches(shapes, workers, 0, 3)
    assert all(torch.equal(x, y) for x, y in zip(a, b))  # augmentation included
    other = first_batches(shapes, workers, 0, 4)
    assert not torch.equal(a[0], other[0])


def test_each_epoch_starts_with_a_full_seeded_buffer(shapes):
    loader = build_loader(shapes, hyperparameters(imgsz=96, task="detect"), shapes.train_split, 4, 0, train=True,
                          seed=0)
    ds = loader.dataset
    loader.set_epoch(0)
    first = list(ds.buffer)
    assert len(first) >= ds.max_buffer_length - 1 > 1  # mosaic partners from many images from the first batch
    assert all(ds.ims[i] is not None for i in first)
    loader.set_epoch(1)
    assert list(ds.buffer) != first
    assert sum(im is not None for im in ds.ims) == len(ds.buffer)  # the previous epoch's images were let go
    loader.set_epoch(0)
    assert list(ds.buffer) == first


def epoch_batches(shapes, workers: int, skip: int = 0) -> list[dict]:
    loader = build_loader(shapes, hyperparameters(imgsz=96, task="detect"), shapes.train_split, 4, workers,
                          train=True, seed=0)
    loader.set_epoch(2, skip_batches=skip)
    return [{"files": list(b["im_file"]), "img": b["img"]} for b in loader]


def test_mid_epoch_resume_keeps_the_sample_order_but_not_the_augmentation_draws(shapes):
    """What a run resumed after batch k of an epoch (a stop signal mid-epoch) sees, as the trainer's docstring
    and the README state: the same samples in the same order (kept), augmented with other random draws (not
    kept: each loader worker's random stream starts again at the resume point, so batch k gets the draws
    the uninterrupted run spent on batch 0, and on data larger than the mosaic buffer the buffer starts from
    the epoch's initial fill). At an epoch boundary a resume is exact (test_an_epoch_is_a_function_...)."""
    k = 2
    full, resumed = epoch_batches(shapes, workers=2), epoch_batches(shapes, workers=2, skip=k)
    assert [b["files"] for b in resumed] == [b["files"] for b in full[k:]]  # kept: the order
    assert not any(torch.equal(a["img"], b["img"]) for a, b in zip(resumed, full[k:]))  # not kept: the draws
