"""BatchNorm re-estimation before scoring (`scripts/eval.py +checkpoint=... eval.bn_refresh=N`).

During QAT a BN layer's running statistics are a moving average (ultralytics' momentum 0.03, about the last 30
steps) over weights that kept changing; at 3 bits integer weights that flip back and forth (oscillate) leave them
describing a network that no longer exists (Nagel et al. 2022, "Overcoming oscillations in QAT", re-estimate them
after training). Here they are recomputed for the model as it is: a plain average over N training batches in train
mode, without gradients, so weights, scales and QC parameters stay as saved.
"""

from __future__ import annotations

import logging
from itertools import count, islice

import torch
from torch import nn
from torch.optim.swa_utils import update_bn

log = logging.getLogger("yoloq")


def _images(loader, device: torch.device):
    """The loader's images as the model takes them, epoch after epoch (an EpochLoader restarts with set_epoch)."""
    for epoch in count():
        loader.set_epoch(epoch)
        for batch in loader:
            yield batch["img"].to(device, non_blocking=True).float() / 255


def refresh_bn_statistics(model: nn.Module, loader, batches: int, device: torch.device) -> int:
    """Replace every BN layer's running mean and variance with their average over `batches` batches of `loader`
    (torch's update_bn: a cumulative average in train mode, momenta and mode restored); returns the batches seen."""
    n_bn = sum(isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats for m in model.modules())
    if not n_bn or batches <= 0:
        return 0
    if len(loader) == 0:  # checked first: update_bn leaves its momenta changed when its loader fails
        raise ValueError("the training loader yields no batch: no data to re-estimate BatchNorm from")
    update_bn(islice(_images(loader, device), batches), model)
    log.info("BatchNorm statistics re-estimated from %d training batches (%d layers)", batches, n_bn)
    return batches
