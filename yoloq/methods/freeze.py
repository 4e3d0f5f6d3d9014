"""Iterative freezing (Nagel et al., 2022; PAPER.md §5): after each step, a weight whose oscillation
frequency exceeds f_th is frozen for good at the integer round(EMA of w_int); f_th is cosine-annealed
from its start to its final value once `begin` (a share of training) has passed.

A frozen weight's gradient is zeroed before the step, and after the step its latent value is put back
on its frozen integer at the current scale (the optimizer's momentum and weight decay would otherwise
move it), so its integer never changes again. Masks and values live in the trackers' buffers."""

from __future__ import annotations

import torch

from yoloq.callbacks import Callback
from yoloq.methods.oscillation import TrackOscillations
from yoloq.methods.schedule import cosine_anneal


class IterativeFreezing(Callback):
    """Needs the TrackOscillations callback, placed before it in the callback list."""

    def __init__(self, tracking: TrackOscillations, threshold_start: float = 0.1, threshold_final: float = 0.01,
                 begin: float = 0.25):
        self.tracking = tracking
        self.threshold_start, self.threshold_final, self.begin = threshold_start, threshold_final, begin
        self.threshold = threshold_start

    def on_after_backward(self, trainer) -> None:
        for _, conv, tracker in self.tracking.pairs:
            if conv.weight.grad is not None:  # no `.any()` test: on a GPU it would synchronise every step
                conv.weight.grad.masked_fill_(tracker.frozen, 0.0)

    @torch.no_grad()
    def on_step_end(self, trainer) -> None:
        self.threshold = cosine_anneal(self.threshold_start, self.threshold_final, trainer.progress_frac,
                                       self.begin)
        for _, conv, tracker in self.tracking.pairs:
            wq = conv.weight_quantizer
            new = (tracker.frequency() > self.threshold) & ~tracker.frozen
            target = torch.clamp(torch.round(tracker.int_ema), -wq.qn, wq.qp)
            tracker.frozen_int.copy_(torch.where(new, target, tracker.frozen_int.float()))
            tracker.frozen.logical_or_(new)
            on_grid = tracker.frozen_int * wq.scale_like(conv.weight)
            conv.weight.copy_(torch.where(tracker.frozen, on_grid, conv.weight))
            # The integers this step ends with are the frozen ones: what a resumed run derives from the weights.
            tracker.prev_int.copy_(torch.where(tracker.frozen, tracker.frozen_int, tracker.prev_int))
