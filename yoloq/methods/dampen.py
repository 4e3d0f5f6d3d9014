"""Oscillation dampening (Nagel et al., 2022; PAPER.md §5): a regulariser that pulls each latent weight
towards the centre of its quantization bin,

    L_damp = lambda * sum_w (stopgrad(q(w)) - clip(w, -Qn s, Qp s))^2,

with lambda cosine-annealed from 0 to its final value. Applied to the low-bit layers (the 8-bit first
and last layers are left alone, as tracking leaves them)."""

from __future__ import annotations

import torch

from yoloq.callbacks import Callback
from yoloq.methods.oscillation import tracked_convs
from yoloq.methods.schedule import cosine_anneal


def dampening_loss(convs) -> torch.Tensor:
    """sum over convs and weights of (stopgrad(q(w)) - clip(w, -Qn s, Qp s))^2 (without lambda)."""
    total = None
    for conv in convs:
        wq = conv.weight_quantizer
        s = wq.scale_like(conv.weight)
        target = (wq.integers(conv.weight) * s).detach()
        clipped = torch.clamp(conv.weight, -wq.qn * s, wq.qp * s)
        term = (target - clipped).pow(2).sum()
        total = term if total is None else total + term
    return total


class OscillationDampening(Callback):
    def __init__(self, lambda_final: float = 0.1, begin: float = 0.0, max_bits: int = 4):
        self.lambda_final, self.begin, self.max_bits = lambda_final, begin, max_bits
        self.convs: list = []
        self.last_lambda = 0.0

    def on_stage_start(self, trainer) -> None:
        self.convs = list(tracked_convs(trainer.model, self.max_bits).values())

    def extra_loss(self, trainer) -> torch.Tensor | None:
        self.last_lambda = cosine_anneal(0.0, self.lambda_final, trainer.progress_frac, self.begin)
        if self.last_lambda == 0.0 or not self.convs:
            return None
        return self.last_lambda * dampening_loss(self.convs)
