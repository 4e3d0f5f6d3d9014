"""The QC stage's training rule: only the corrections learn, and BN keeps its statistics (eval mode)."""

from __future__ import annotations

from torch import nn

from yoloq.callbacks import Callback


class FrozenBatchNorm(Callback):
    """The trainer puts the model in train mode each epoch; this puts every BN back in eval mode."""

    def on_epoch_start(self, trainer) -> None:
        for m in trainer.model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
