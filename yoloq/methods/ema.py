"""Exponential moving average of every float tensor of the model: weights, quantization scales and
offsets, and BN statistics (PAPER.md §3). ultralytics' ModelEMA already averages the whole float
state dict with the ramp a_t = decay * (1 - exp(-t / tau)), kept at 0 at the start; we reuse it."""

from __future__ import annotations

from ultralytics.utils.torch_utils import ModelEMA

from yoloq.callbacks import Callback


class EMACallback(Callback):
    def __init__(self, decay: float = 0.9999, tau: float = 2000.0):
        self.decay, self.tau = decay, tau
        self.ema: ModelEMA | None = None
        self._loaded: dict | None = None  # state loaded before the stage started (resume)

    def on_stage_start(self, trainer) -> None:
        self.ema = ModelEMA(trainer.model, decay=self.decay, tau=self.tau)
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
