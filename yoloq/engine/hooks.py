"""The trainer's named hooks. A method (EMA, dampening, freezing, QC, logging) is a Callback that
overrides the hooks it needs; the training loop itself has no per-method branches."""

from __future__ import annotations

import torch


class Callback:
    def on_stage_start(self, trainer) -> None:
        """Before the first epoch of a stage."""

    def on_epoch_start(self, trainer) -> None:
        """Before each epoch."""

    def extra_loss(self, trainer) -> torch.Tensor | None:
        """A term added to the task loss of the current step (e.g. a regulariser)."""
        return None

    def on_after_backward(self, trainer) -> None:
        """Gradients are ready (unscaled), the optimizers have not stepped yet."""

    def on_step_end(self, trainer) -> None:
        """After every optimizer step."""

    def eval_model(self, trainer) -> torch.nn.Module | None:
        """The model to evaluate and save instead of the raw one (e.g. an EMA copy); None keeps the raw one."""
        return None

    def on_epoch_end(self, trainer, metrics: dict) -> None:
        """After each epoch's evaluation."""

    def on_stage_end(self, trainer) -> None:
        """After the last epoch."""

    def state_dict(self) -> dict:
        """State to keep in checkpoints."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass
