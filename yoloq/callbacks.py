"""The callback protocol: the trainer's named hooks. A method (EMA, dampening, freezing, QC) or a recorder
(logging, histories) is a Callback that overrides the hooks it needs; the training loop has no per-method
branches. It lives outside engine/ so that methods/ and track/ depend on this protocol only, not on the trainer.

A subclass that defines a method named like a hook but spelt otherwise (`on_step_ends`, `on_epoch_star`) is
refused when the class is created: such a method would never be called, and nothing else would notice."""

from __future__ import annotations

import difflib

import torch

HOOKS = ("on_stage_start", "on_epoch_start", "extra_loss", "on_after_backward", "on_step_end", "eval_model",
         "on_epoch_end", "on_stage_end")
PROTOCOL = HOOKS + ("state_dict", "load_state_dict", "state_key")


class Callback:
    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        for name, value in vars(cls).items():
            if not callable(value) or name.startswith("_") or name in PROTOCOL:
                continue
            close = difflib.get_close_matches(name, PROTOCOL, n=1, cutoff=0.8)
            if name.startswith("on_") or close:
                hint = f"did you mean {close[0]}? " if close else ""
                raise TypeError(f"{cls.__name__}.{name} is not a trainer hook and would never be called: {hint}"
                                f"the hooks are {', '.join(HOOKS)}")

    @property
    def state_key(self) -> str:
        """The name its state is kept under in checkpoints (the trainer makes repeated keys unique)."""
        return type(self).__name__

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


def state_keys(callbacks) -> list[str]:
    """Each callback's checkpoint key: its state_key, with #2, #3, ... for the second, third of one key, so two
    callbacks of one class never overwrite each other's state (the first keeps the plain key)."""
    seen: dict[str, int] = {}
    keys = []
    for cb in callbacks:
        base = cb.state_key
        seen[base] = seen.get(base, 0) + 1
        keys.append(base if seen[base] == 1 else f"{base}#{seen[base]}")
    return keys
