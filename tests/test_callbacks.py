"""The callback protocol: a misspelt hook is refused when the class is defined; two callbacks of one class
keep their own state through a checkpoint; the trainer finds a callback by type."""

from __future__ import annotations

import pytest
import torch

from tests.engine.test_trainer import fake_batches, no_eval
from yoloq.callbacks import HOOKS, Callback, state_keys
from yoloq.engine.trainer import Recipe, Trainer
from yoloq.methods.ema import EMACallback
from yoloq.models.build import build_model


@pytest.mark.parametrize("name", ["on_step_ends", "on_epoch_star", "on_batch_end", "extra_losses", "eval_models"])
def test_a_misspelt_hook_is_refused_at_class_creation(name):
    with pytest.raises(TypeError, match=rf"{name} is not a trainer hook .* the hooks are on_stage_start"):
        type("Typo", (Callback,), {name: lambda self, trainer: None})


def test_real_hooks_and_helpers_are_accepted():
    body = {hook: lambda self, *a: None for hook in HOOKS}
    body["stats"] = lambda self: {}  # a helper method, named nothing like a hook
    type("Fine", (Callback,), body)


class Counter(Callback):
    def __init__(self):
        self.steps = 0

    def on_step_end(self, trainer):
        self.steps += 1

    def state_dict(self):
        return {"steps": self.steps}

    def load_state_dict(self, state):
        self.steps = state["steps"]


def test_two_callbacks_of_one_class_keep_their_own_state():
    a, b = Counter(), Counter()
    assert state_keys([a, EMACallback(), b]) == ["Counter", "EMACallback", "Counter#2"]
    model = build_model("yolov5n.yaml", ("a", "b"))
    trainer = Trainer("t", model, fake_batches(2), no_eval, Recipe(epochs=1), torch.device("cpu"), [a, b],
                      progress=False)
    trainer.fit()
    b.steps = 40  # made different, so that a mix-up of the two states shows
    states = trainer.callback_states()
    assert states == {"Counter": {"steps": 2}, "Counter#2": {"steps": 40}}
    c, d = Counter(), Counter()
    restored = Trainer("t", model, fake_batches(2), no_eval, Recipe(epochs=1), torch.device("cpu"), [c, d],
                       progress=False)
    restored.load_callback_states(states)
    assert (c.steps, d.steps) == (2, 40)


def test_the_trainer_finds_a_callback_by_type():
    counter = Counter()
    trainer = Trainer("t", build_model("yolov5n.yaml", ("a",)), fake_batches(1), no_eval, Recipe(epochs=1),
                      torch.device("cpu"), [EMACallback(), counter], progress=False)
    assert trainer.callback(Counter) is counter
    with pytest.raises(LookupError, match="0 callbacks of type Recorder"):
        from tests.engine.test_trainer import Recorder

        trainer.callback(Recorder)


def test_methods_do_not_import_the_engine():
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "yoloq"
    for package in ("methods", "track", "quant"):
        for f in (root / package).glob("*.py"):
            for node in ast.walk(ast.parse(f.read_text())):
                if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("yoloq.engine"):
                    pytest.fail(f"{f.relative_to(root)} imports {node.module}: {package}/ may not depend on the engine")
