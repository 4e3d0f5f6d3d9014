"""BatchNorm re-estimation before scoring (`scripts/eval.py +checkpoint=... eval.bn_refresh=N`).

During QAT a BN layer's running statistics are a moving average (ultralytics' momentum 0.03, about the last 30
steps) over weights that kept changing; at 3 bits integer weights that flip back and forth (oscillate) leave them
describing a network that no longer exists (Nagel et al. 2022, "Overcoming oscillations in QAT", re-estimate them
after training). Here they are recomputed for the model as it is: a plain average over N training batches in train
mode, without gradients, so weights, scales and QC parameters stay as saved.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

log = logging.getLogger("yoloq")


@torch.no_grad()
def refresh_bn_statistics(model: nn.Module, loader, batches: int, device: torch.device) -> int:
    """Replace every BN layer's running mean and variance with their average over `batches` batches of `loader`
    (an EpochLoader: it starts a new epoch when one runs out); returns the number of batches seen."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not bns or batches <= 0:
        return 0
    momenta = [m.momentum for m in bns]
    was_training = model.training
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average: every batch counts the same
    model.train()
    seen, epoch = 0, 0
    try:
        while seen < batches:
            loader.set_epoch(epoch)
            before = seen
            for batch in loader:
                model(batch["img"].to(device, non_blocking=True).float() / 255)
                seen += 1
                if seen == batches:
                    break
            if seen == before:
                raise ValueError("the training loader yielded no batch: no data to re-estimate BatchNorm from")
            epoch += 1
    finally:
        for m, momentum in zip(bns, momenta):
            m.momentum = momentum
        model.train(was_training)
    log.info("BatchNorm statistics re-estimated from %d training batches (%d layers)", seen, len(bns))
    return seen
