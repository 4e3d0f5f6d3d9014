"""The training loader: epoch e's sample order and augmentation randomness are a function of (seed, e) alone,
so a run resumed at an epoch boundary sees exactly the data an uninterrupted run would have seen, and a run
resumed mid-epoch continues the same order where it stopped, though not with the same augmentation draws:
each worker's random stream starts again at the resume point, and on data larger than the mosaic buffer the
buffer starts from the epoch's initial fill, not from where the workers had left it. Under torchrun each rank takes its share of
the epoch's order (like DistributedSampler). Workers are started per epoch (ultralytics' persistent loader
would prefetch into the next epoch with the previous epoch's random state)."""

from __future__ import annotations

import hashlib
import math
import os
import random
import signal

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler
from ultralytics.data.build import seed_worker


def epoch_seed(seed: int | str, epoch: int | str) -> int:
    """A well-mixed 63-bit seed per (run seed, epoch); neighbouring epochs get unrelated streams."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{epoch}".encode()).digest()[:8], "little") >> 1


class EpochSampler(Sampler[int]):
    """This rank's indices of one epoch, after the batches already trained in it (`skip_batches`)."""

    def __init__(self, n: int, batch: int, shuffle: bool = True, seed: int = 0, rank: int = 0, world: int = 1):
        self.n, self.batch, self.shuffle, self.seed, self.rank, self.world = n, batch, shuffle, seed, rank, world
        self.per_rank = math.ceil(n / world)
        self.epoch, self.skip_batches = 0, 0

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        self.epoch, self.skip_batches = epoch, skip_batches

    def _indices(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        order += order[: self.per_rank * self.world - self.n]  # every rank gets as many samples (and steps)
        return order[self.rank::self.world][self.skip_batches * self.batch:]

    def __iter__(self):
        return iter(self._indices())

    def __len__(self) -> int:
        return max(self.per_rank - self.skip_batches * self.batch, 0)


def init_worker(worker_id: int) -> None:
    """A loader worker leaves stop signals to the training process: torchrun and SLURM signal every process of
    the job, and a worker dying of SIGTERM would crash the run before it writes its checkpoint."""
    for s in (signal.SIGTERM, signal.SIGUSR1):
        signal.signal(s, signal.SIG_IGN)
    seed_worker(worker_id)


def refill_mosaic_buffer(dataset, seed) -> None:
    """ultralytics draws mosaic partners from a buffer of recently loaded images. Persistent workers carried it
    from one epoch to the next; that memory is state no checkpoint holds, and workers started per epoch would
    begin with an empty buffer (the first mosaics of every epoch would repeat one image). So each epoch starts
    from a full buffer of images chosen by `seed`, loaded here before the workers fork and inherit it."""
    if not hasattr(dataset, "buffer"):
        return
    for j in dataset.buffer:
        dataset.ims[j], dataset.im_hw0[j], dataset.im_hw[j] = None, None, None
    dataset.buffer.clear()
    if not getattr(dataset, "augment", False) or getattr(dataset, "cache", None) == "ram":
        return  # no buffer in use: RAM-cached datasets draw partners from all images
    g = torch.Generator().manual_seed(epoch_seed(seed, "buffer"))
    for i in torch.randperm(len(dataset), generator=g)[: dataset.max_buffer_length].tolist():
        dataset.load_image(i)  # appends i to the buffer and keeps the image in memory


class EpochLoader:
    """Iterates one epoch per `iter()`; call `set_epoch(epoch, skip_batches)` before each."""

    def __init__(self, dataset, batch: int, workers: int, seed: int, rank: int = 0, world: int = 1,
                 shuffle: bool = True, pin_memory: bool = False):
        self.dataset, self.batch, self.seed, self.rank = dataset, batch, seed, rank
        self.sampler = EpochSampler(len(dataset), batch, shuffle, seed, rank, world)
        self.generator = torch.Generator()
        workers = min(os.cpu_count() or 1, workers)
        self.loader = DataLoader(dataset, batch_size=batch, sampler=self.sampler, num_workers=workers,
                                 collate_fn=getattr(dataset, "collate_fn", None), worker_init_fn=init_worker,
                                 generator=self.generator, pin_memory=pin_memory,
                                 prefetch_factor=4 if workers else None)
        self.batches_per_epoch = math.ceil(self.sampler.per_rank / batch)

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        seed = epoch_seed(f"{self.seed}/rank{self.rank}", epoch)  # each rank its own augmentation draws
        self.sampler.set_epoch(epoch, skip_batches)
        self.generator.manual_seed(seed)  # the workers' seeds (their augmentation streams)
        if skip_batches == 0:  # mid-epoch, the checkpoint's restored random state is the better continuation
            # augmentation in this process when workers=0; ultralytics reseeds albumentations' own generator
            # whenever torch's initial seed changes
            random.seed(seed)
            np.random.seed(seed % 2**32)
            torch.manual_seed(seed)
        refill_mosaic_buffer(self.dataset, seed)

    def reset(self) -> None:
        """Workers start per epoch, so a changed dataset (close_mosaic) is picked up by the next epoch."""

    def __len__(self) -> int:
        return self.batches_per_epoch

    def __iter__(self):
        return iter(self.loader)
