"""Exponential moving average of every float tensor of the model: weights, quantization scales and
offsets, and BN statistics (PAPER.md §3). ultralytics' ModelEMA already averages the whole float
state dict with the ramp a_t = decay * (1 - exp(-t / tau)), kept at 0 at the start; we reuse it.

The paper's decay 0.9999 and ramp 2000 are step counts sized for 100 COCO epochs; a method's EMA instead
takes its horizon and ramp as shares of the stage (relative_horizon), so a run of any length averages the
same way relative to its length."""

from __future__ import annotations

import logging

from ultralytics.utils.torch_utils import ModelEMA

from yoloq.callbacks import Callback


log = logging.getLogger("yoloq")
PAPER_STEPS = 100 * 1849  # the paper's QAT: 100 COCO epochs, YOLOv5 stepping once per nominal batch of 64 images
PAPER_DECAY, PAPER_TAU = 0.9999, 2000.0


def relative_horizon(steps: int, horizon: float, ramp: float) -> tuple[float, float]:
    """(decay, tau) for a stage of `steps` optimizer steps that average over `horizon` and ramp up over `ramp`,
    both shares of the stage: decay = 1 - 1 / (horizon * steps), tau = ramp * steps. The paper's shares
    (10,000 / 184,900 and 2,000 / 184,900) give its 0.9999 and 2000 at its schedule, and every shorter or
    longer stage the same averaging relative to its length (at 500 steps: decay 0.963, tau 5.4)."""
    window = max(horizon * steps, 1.0)
    return 1.0 - 1.0 / window, max(ramp * steps, 1e-6)


class EMACallback(Callback):
    """decay and tau fixed (in optimizer steps), or, with either left None, derived from the stage's step count
    by relative_horizon (method.ema.horizon and method.ema.ramp)."""

    def __init__(self, decay: float | None = PAPER_DECAY, tau: float | None = PAPER_TAU,
                 horizon: float = (1 / (1 - PAPER_DECAY)) / PAPER_STEPS, ramp: float = PAPER_TAU / PAPER_STEPS):
        self.decay, self.tau, self.horizon, self.ramp = decay, tau, horizon, ramp
        self.ema: ModelEMA | None = None
        self._loaded: dict | None = None  # state loaded before the stage started (resume)

    def on_stage_start(self, trainer) -> None:
        decay, tau = relative_horizon(trainer.total_steps, self.horizon, self.ramp)
        decay = decay if self.decay is None else self.decay
        tau = tau if self.tau is None else self.tau
        self.ema = ModelEMA(trainer.model, decay=decay, tau=tau)
        if self.decay is None or self.tau is None:
            log.info("%s: EMA decay %.5f (a window of %.0f steps), ramp tau %.1f steps, for %d steps", trainer.name,
                     decay, 1 / (1 - decay), tau, trainer.total_steps)
        if self._loaded is not None:
            self.load_state_dict(self._loaded)

    def on_step_end(self, trainer) -> None:
        self.ema.update(trainer.model)

    def eval_model(self, trainer):
        return self.ema.ema

    def state_dict(self) -> dict:
        return {"ema": self.ema.ema.state_dict(), "updates": self.ema.updates}

    def load_state_dict(self, state: dict) -> None:
        if self.ema is None:
            self._loaded = state
            return
        self.ema.ema.load_state_dict(state["ema"])
        self.ema.updates = state["updates"]
