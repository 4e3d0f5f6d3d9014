"""The trainer callback that feeds the run log: losses and learning rates every few steps, and per epoch
the mAP, the oscillation statistics and every quantizer's scale."""

from __future__ import annotations

from yoloq.callbacks import Callback
from yoloq.track.scale_history import scale_params


def scale_values(model) -> dict[str, float]:
    """Each quantized conv's weight and input-activation scale (per-channel scales: their mean)."""
    return {name: float(p.detach().mean()) for name, (p, _) in scale_params(model).items()}


class LogMetrics(Callback):
    """Runs last among a stage's callbacks, so the oscillation statistics of the epoch are already in."""

    def __init__(self, run_log, stage: str):
        self.run_log, self.stage = run_log, stage
        self._offset = 0

    def on_stage_start(self, trainer) -> None:
        self._offset = self.run_log.step

    def state_dict(self) -> dict:
        return {"offset": self._offset}

    def load_state_dict(self, state: dict) -> None:
        """A resumed stage keeps the global step at which it first started."""
        self._offset = state["offset"]

    def on_step_end(self, trainer) -> None:
        self.run_log.step = self._offset + trainer.step
        if trainer.step % self.run_log.log_every:
            return
        values = dict(trainer.loss_items)
        for j, pg in enumerate(trainer.optimizer.param_groups):
            values[f"lr/pg{j}"] = pg["lr"]
        if len(trainer.optimizers) > 1:
            values["lr/quant"] = trainer.optimizers[1].param_groups[0]["lr"]
        values["epoch"] = trainer.epoch + 1
        self.run_log.log(self.stage, values)

    def on_epoch_end(self, trainer, metrics: dict) -> None:
        record = {k: v for k, v in trainer.history[-1].items() if isinstance(v, (int, float))}
        self.run_log.log(f"{self.stage}-epoch", record)
        scales = scale_values(trainer.eval_model)
        if scales:
            self.run_log.log(f"{self.stage}-scale", scales)
