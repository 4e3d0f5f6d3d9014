"""DDP takes the step one process would: 2 gloo ranks at global batch B (B/2 each, sharded by the training
loader) end with the parameters of 1 process at batch B, to float tolerance, through the real Trainer (SGD
with warm-up, the quantizers' Adam, gradient clipping, EMA). A wrong gradient factor (the loss not scaled by
the world size, or scaled twice) fails it. The ranks' parameter and EMA hashes are equal, as the trainer
checks at the end of every stage.

The toy model's loss is a sum over images, so its gradient over the global batch is the sum of the shards'.
The YOLO loss is not: ultralytics normalises it by the batch's summed target scores, and BN normalises by the
batch's statistics, so with a YOLO model 2 x B/2 equals 1 x B only in expectation (as in ultralytics' DDP);
test_distributed.py runs that model under torchrun."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

B, STEPS = 8, 3


class Toy(nn.Module):
    """Two convs with quantizers after quantize_model; the loss an ultralytics model would return for a
    dict batch: per image, summed over the batch (ultralytics returns loss x batch size)."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.SiLU(), nn.Conv2d(8, 8, 3, padding=1), nn.SiLU(),
                                 nn.Conv2d(8, 3, 1))

    def forward(self, x):
        if isinstance(x, dict):
            return self.loss(x)
        return self.net(x)

    def loss(self, batch):
        out = self.net(batch["img"])
        per_image = ((out - batch["img"].flip(1)) ** 2).mean(dim=(1, 2, 3))
        total = per_image.sum()
        return total.reshape(1), {"loss": total.detach()}


class Images(torch.utils.data.Dataset):
    def __init__(self, n):
        g = torch.Generator().manual_seed(1)
        self.imgs = torch.randint(0, 255, (n, 3, 16, 16), generator=g, dtype=torch.uint8)

    def __len__(self):
        return len(self.imgs)

    def __getitem__(self, i):
        return self.imgs[i]

    @staticmethod
    def collate_fn(items):
        n = len(items)
        return {"img": torch.stack(items), "batch_idx": torch.zeros(n), "cls": torch.zeros(n, 1),
                "bboxes": torch.zeros(n, 4)}


def train_once(rank: int, world: int, port: int, out: str) -> None:
    from yoloq.data.epoch_loader import EpochLoader
    from yoloq.engine import distributed
    from yoloq.engine.trainer import Recipe, Trainer
    from yoloq.methods.ema import EMACallback
    from yoloq.quant import QuantConfig, quantize_model

    torch.set_num_threads(1)
    if world > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
        torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)
    model = Toy()
    calib = [torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))]
    quantize_model(model, QuantConfig(w_bits=4, a_bits=4), calib, high_precision=[])
    loader = EpochLoader(Images(B * STEPS), B // world, 0, seed=5, rank=rank, world=world)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    recipe = Recipe(epochs=1, lr0=0.05, warmup_epochs=0, grad_clip=10.0, quant_lr=1e-3)
    ema = EMACallback(decay=0.9, tau=1.0)
    trainer = Trainer("t", model, loader, lambda m: {"mAP50-95": 0.0, "mAP50": 0.0}, recipe, torch.device("cpu"),
                      [ema], progress=False)
    trainer.fit()
    torch.save({"init": init, "model": model.state_dict(), "ema": ema.ema.ema.state_dict(), "steps": trainer.step,
                "fingerprints": trainer.replica_fingerprints}, f"{out}/rank{rank}-of{world}.pt")
    distributed.shutdown()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    train_once(0, 1, 0, str(out))
    mp.start_processes(train_once, args=(2, free_port(), str(out)), nprocs=2, join=True, start_method="spawn")
    return {name: torch.load(out / f"{name}.pt", weights_only=True) for name in ("rank0-of1", "rank0-of2", "rank1-of2")}


def test_two_ranks_take_the_single_process_step(runs):
    one, two = runs["rank0-of1"], runs["rank0-of2"]
    assert one["steps"] == two["steps"] == STEPS
    for part in ("model", "ema"):
        for k, v in one[part].items():
            if v.is_floating_point():
                torch.testing.assert_close(two[part][k], v, rtol=1e-4, atol=1e-6, msg=f"{part} {k}")
    # the comparison is over trained tensors: every weight moved far beyond the tolerance
    for k, v in one["model"].items():
        if k.endswith("weight"):
            assert (v - one["init"][k]).abs().max() > 1e-3, k


def test_ranks_hold_identical_parameters_and_ema(runs):
    a, b = runs["rank0-of2"], runs["rank1-of2"]
    assert a["fingerprints"] == b["fingerprints"] and len(a["fingerprints"]["model"]) == 2
    assert len(set(a["fingerprints"]["model"])) == 1 and len(set(a["fingerprints"]["ema"])) == 1
    for k in a["ema"]:
        assert torch.equal(a["ema"][k], b["ema"][k]), k
