import math

import pytest
import torch

from yoloq.engine.hooks import Callback
from yoloq.engine.trainer import Recipe, Trainer, param_groups
from yoloq.errors import UserError
from yoloq.models.build import build_model
from yoloq.quant import QuantConfig, quant_parameters, quantize_model


def fake_batches(n=3, bs=2, size=64):
    g = torch.Generator().manual_seed(0)
    return [{"img": torch.randint(0, 255, (bs, 3, size, size), generator=g, dtype=torch.uint8),
             "batch_idx": torch.tensor([0.0, 1.0]), "cls": torch.tensor([[0.0], [1.0]]),
             "bboxes": torch.tensor([[0.5, 0.5, 0.3, 0.3], [0.4, 0.6, 0.2, 0.4]])} for _ in range(n)]


def no_eval(model):
    return {"mAP50-95": 0.0, "mAP50": 0.0}


class Recorder(Callback):
    def __init__(self):
        self.calls, self.lrs = [], []

    def on_stage_start(self, t):
        self.calls.append("stage_start")

    def on_epoch_start(self, t):
        self.calls.append("epoch_start")

    def on_after_backward(self, t):
        self.calls.append("after_backward")

    def on_step_end(self, t):
        self.calls.append("step_end")
        self.lrs.append([pg["lr"] for pg in t.optimizer.param_groups])

    def on_epoch_end(self, t, metrics):
        self.calls.append("epoch_end")

    def on_stage_end(self, t):
        self.calls.append("stage_end")


def test_hooks_run_in_order_and_warmup_ramps():
    rec = Recorder()
    model = build_model("yolov5n.yaml", ("a", "b"))
    recipe = Recipe(epochs=2, lr0=0.01, warmup_epochs=1, warmup_bias_lr=0.1)
    trainer = Trainer("t", model, fake_batches(), no_eval, recipe, torch.device("cpu"), [rec], progress=False)
    trainer.fit()
    step = ["after_backward", "step_end"]
    assert rec.calls == ["stage_start"] + (["epoch_start"] + step * 3 + ["epoch_end"]) * 2 + ["stage_end"]
    assert trainer.step == 6 and len(trainer.history) == 2
    # warm-up over max(1 epoch, 100 steps): bias lr falls from 0.1, weight lr rises from 0
    bias, weights = [lr[0] for lr in rec.lrs], [lr[1] for lr in rec.lrs]
    assert bias[0] == pytest.approx(0.1) and all(a > b for a, b in zip(bias, bias[1:]))
    assert weights[0] == pytest.approx(0.0)
    for epoch in (weights[:3], weights[3:]):  # rising within each epoch, towards that epoch's (lower) target
        assert all(a < b for a, b in zip(epoch, epoch[1:]))
    # iteration 3 (the first of epoch 2) is 3/100 of the way to lr0 * lf(1) = 0.01 * 0.505 (linear schedule)
    assert weights[3] == pytest.approx(3 / 100 * 0.01 * 0.505)


def test_quant_parameters_get_their_own_adam():
    model = build_model("yolov5n.yaml", ("a", "b"))
    quantize_model(model, QuantConfig(w_bits=4, a_bits=4), [torch.rand(1, 3, 64, 64)])
    groups = param_groups(model)
    assert {id(p) for p in groups["quant"]} == {id(p) for p in quant_parameters(model)}
    trainer = Trainer("t", model, fake_batches(1), no_eval, Recipe(epochs=1, quant_lr=1e-4), torch.device("cpu"),
                      progress=False)
    adam = trainer.optimizers[1]
    assert isinstance(adam, torch.optim.Adam) and adam.param_groups[0]["lr"] == 1e-4
    assert adam.param_groups[0]["weight_decay"] == 0.0
    sgd_ids = {id(p) for pg in trainer.optimizer.param_groups for p in pg["params"]}
    assert sgd_ids.isdisjoint(id(p) for p in quant_parameters(model))
    scales = [p.detach().clone() for p in quant_parameters(model)]
    trainer.fit()
    assert any(not torch.equal(a, b) for a, b in zip(scales, quant_parameters(model)))  # scales do train


class Poison(Callback):
    def extra_loss(self, t):
        return torch.tensor(math.nan) if t.step == 1 else None


def test_nan_loss_stops_the_stage_with_a_clear_message():
    model = build_model("yolov5n.yaml", ("a", "b"))
    trainer = Trainer("qat", model, fake_batches(), no_eval, Recipe(epochs=1), torch.device("cpu"), [Poison()],
                      progress=False)
    with pytest.raises(UserError, match="loss became nan at epoch 1, step 2"):
        trainer.fit()
