import math

import pytest
import torch

from yoloq.callbacks import Callback
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


def test_only_evaluated_epochs_carry_map():
    """A skipped evaluation must not repeat the previous mAP under a later epoch (plots would show plateaus)."""
    scores = iter([0.25, 0.5])
    model = build_model("yolov5n.yaml", ("a", "b"))
    recipe = Recipe(epochs=3, lr0=0.01, warmup_epochs=0, eval_every=2)
    trainer = Trainer("t", model, fake_batches(n=1), lambda m: {"mAP50-95": next(scores), "mAP50": 0.0}, recipe,
                      torch.device("cpu"), [], progress=False)
    assert trainer.fit()["mAP50-95"] == 0.5
    assert [h.get("mAP50-95") for h in trainer.history] == [None, 0.25, 0.5]


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


class QuantLrRecorder(Recorder):
    def on_step_end(self, t):
        super().on_step_end(t)
        self.calls.append(t.optimizers[1].param_groups[0]["lr"])


def test_per_step_schedule_ends_at_lrf_and_quant_lr_follows():
    """lr_per_step: the lr falls every step and the last step runs at lr0 * lrf (YOLOv5's per-epoch schedule
    would stay at lr0 * 0.505 through the whole second epoch); quant_lr_decay: the scales' Adam follows."""
    model = build_model("yolov5n.yaml", ("a", "b"))
    quantize_model(model, QuantConfig(w_bits=4, a_bits=4), [torch.rand(1, 3, 64, 64)])
    rec = QuantLrRecorder()
    recipe = Recipe(epochs=2, lr0=0.01, lrf=0.01, warmup_epochs=0, quant_lr=1e-3, lr_per_step=True,
                    quant_lr_decay=True)
    Trainer("t", model, fake_batches(), no_eval, recipe, torch.device("cpu"), [rec], progress=False).fit()
    weights = [lr[1] for lr in rec.lrs]
    quant = [c for c in rec.calls if isinstance(c, float)]
    assert weights[0] == pytest.approx(0.01) and weights[-1] == pytest.approx(0.01 * 0.01)
    assert all(a > b for a, b in zip(weights, weights[1:]))  # falls at every one of the 6 steps
    assert quant == pytest.approx([w / 0.01 * 1e-3 for w in weights])  # the same factor on quant_lr


def test_default_schedule_keeps_the_quant_lr_constant():
    model = build_model("yolov5n.yaml", ("a", "b"))
    quantize_model(model, QuantConfig(w_bits=4, a_bits=4), [torch.rand(1, 3, 64, 64)])
    rec = QuantLrRecorder()
    Trainer("t", model, fake_batches(), no_eval, Recipe(epochs=2, warmup_epochs=0, quant_lr=1e-3),
            torch.device("cpu"), [rec], progress=False).fit()
    weights = [lr[1] for lr in rec.lrs]
    assert weights == pytest.approx([0.01] * 3 + [0.01 * 0.505] * 3)  # YOLOv5: once per epoch
    assert [c for c in rec.calls if isinstance(c, float)] == [1e-3] * 6


class ActQuantLrRecorder(Callback):
    def __init__(self):
        self.lrs = []

    def on_step_end(self, t):
        self.lrs.append([pg["lr"] for pg in t.optimizers[1].param_groups])


def test_act_quant_lr_gives_the_activation_scales_their_own_decayed_lr():
    """act_quant_lr: the activation quantizers' scales get a second Adam group with their own lr, annealed by the
    same factor as the weight quantizers' group; the weight quantizers keep quant_lr and every scale is in one
    group only."""
    model = build_model("yolov5n.yaml", ("a", "b"))
    quantize_model(model, QuantConfig(w_bits=4, a_bits=4), [torch.rand(1, 3, 64, 64)])
    rec = ActQuantLrRecorder()
    recipe = Recipe(epochs=2, warmup_epochs=0, quant_lr=1e-4, act_quant_lr=2e-3, lr_per_step=True,
                    quant_lr_decay=True)
    trainer = Trainer("t", model, fake_batches(), no_eval, recipe, torch.device("cpu"), [rec], progress=False)
    weight_group, act_group = trainer.optimizers[1].param_groups
    act_ids = {id(m.act_quantizer.scale) for m in model.modules() if getattr(m, "act_quantizer", None) is not None}
    weight_ids = {id(m.weight_quantizer.scale) for m in model.modules()
                  if getattr(m, "weight_quantizer", None) is not None}
    assert act_ids and weight_ids and act_ids.isdisjoint(weight_ids)
    assert {id(p) for p in act_group["params"]} == act_ids
    assert {id(p) for p in weight_group["params"]} == weight_ids
    trainer.fit()
    assert rec.lrs[0] == pytest.approx([1e-4, 2e-3])
    assert rec.lrs[-1] == pytest.approx([1e-4 * 0.01, 2e-3 * 0.01])  # both annealed to lrf
    assert all(a / w == pytest.approx(20.0) for w, a in rec.lrs)


def test_a_checkpoint_with_other_quantizer_groups_is_refused_clearly():
    """A state written without act_quant_lr (one Adam group) cannot silently resume a stage with it (two)."""
    model = build_model("yolov5n.yaml", ("a", "b"))
    quantize_model(model, QuantConfig(w_bits=4, a_bits=4), [torch.rand(1, 3, 64, 64)])
    one = Trainer("t", model, fake_batches(1), no_eval, Recipe(epochs=1), torch.device("cpu"), progress=False)
    state = one.state_dict()
    with pytest.raises(UserError, match="act_quant_lr"):
        Trainer("t", model, fake_batches(1), no_eval, Recipe(epochs=1, act_quant_lr=1e-3), torch.device("cpu"),
                progress=False, state=state)


def test_a_checkpoint_that_trained_other_parameters_is_refused_clearly():
    """A state whose optimizer trained a parameter that is fixed now (here a scale) would make torch stop with a
    traceback in Optimizer.load_state_dict."""
    model = build_model("yolov5n.yaml", ("a", "b"))
    quantize_model(model, QuantConfig(w_bits=4, a_bits=4), [torch.rand(1, 3, 64, 64)])
    state = Trainer("t", model, fake_batches(1), no_eval, Recipe(epochs=1), torch.device("cpu"),
                    progress=False).state_dict()
    model.model[0].conv.act_quantizer.scale.requires_grad_(False)
    with pytest.raises(UserError, match=r"Adam trains \[\d+\] parameters per group, this stage \[\d+\]: .*another"):
        Trainer("t", model, fake_batches(1), no_eval, Recipe(epochs=1), torch.device("cpu"), progress=False,
                state=state)


def test_a_checkpoint_of_another_batch_is_refused_clearly():
    """Resuming with another batch would continue mid-epoch at a batch index of a different loader."""
    model = build_model("yolov5n.yaml", ("a", "b"))
    state = Trainer("t", model, fake_batches(3), no_eval, Recipe(epochs=1), torch.device("cpu"),
                    progress=False).state_dict()
    with pytest.raises(UserError, match="3 batches an epoch, this stage has 2 .*trainer.qat.batch"):
        Trainer("t", model, fake_batches(2), no_eval, Recipe(epochs=1), torch.device("cpu"), progress=False,
                state=state)
    Trainer("t", model, fake_batches(3), no_eval, Recipe(epochs=1), torch.device("cpu"), progress=False, state=state)


class Poison(Callback):
    def extra_loss(self, t):
        return torch.tensor(math.nan) if t.step == 1 else None


def test_nan_loss_stops_the_stage_with_a_clear_message():
    model = build_model("yolov5n.yaml", ("a", "b"))
    trainer = Trainer("qat", model, fake_batches(), no_eval, Recipe(epochs=1), torch.device("cpu"), [Poison()],
                      progress=False)
    with pytest.raises(UserError, match="loss became nan at epoch 1, step 2"):
        trainer.fit()


class FakeLoader(list):
    """A list of batches with the two loader methods the trainer calls around close_mosaic."""

    class Data:
        def __init__(self):
            self.mosaic = True

        def close_mosaic(self, hyp):
            self.mosaic = False

    def __init__(self, batches):
        super().__init__(batches)
        self.dataset = self.Data()

    def reset(self):
        pass


def _quantized_trainer(recipe, state=None, checkpoint=None):
    from tests.conftest import compose_config
    from yoloq.methods import build_callbacks

    torch.manual_seed(0)
    model = build_model("yolov5n.yaml", ("a", "b"))
    quantize_model(model, QuantConfig(w_bits=4, a_bits=4), [torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))])
    callbacks = build_callbacks(compose_config(["method=ema"]).method, 4)
    return Trainer("qat", model, FakeLoader(fake_batches()), no_eval, recipe, torch.device("cpu"), callbacks,
                   hyp=object(), progress=False, checkpoint=checkpoint, state=state)


def test_a_trainer_resumed_from_its_epoch_state_ends_where_an_uninterrupted_one_does():
    import copy

    states = []
    recipe = Recipe(epochs=3, lr0=0.01, warmup_epochs=0.5, close_mosaic=1)
    full = _quantized_trainer(recipe, checkpoint=lambda t: states.append(copy.deepcopy(t.state_dict())))
    full.fit()
    assert [s["epoch"] for s in states] == [1, 2, 3] and full.loader.dataset.mosaic is False

    resumed = _quantized_trainer(recipe, state=states[1])  # after epoch 2: the closed mosaic must close again
    assert resumed.loader.dataset.mosaic is True
    resumed.fit()
    assert resumed.loader.dataset.mosaic is False
    for (name, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    ema_full, ema_resumed = full.eval_model.state_dict(), resumed.eval_model.state_dict()
    assert all(torch.equal(ema_full[k], ema_resumed[k]) for k in ema_full)
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3] and resumed.step == full.step
    done = _quantized_trainer(recipe, state=states[2])  # every epoch ran: the loader still ends as training left it
    done.fit()  # (trainer.qat.bn_refresh reads it next)
    assert done.loader.dataset.mosaic is False and done.step == full.step

    # a resume may lower the learning rate (e.g. after a NaN): the recipe's values replace the saved ones
    lower = _quantized_trainer(Recipe(epochs=3, lr0=0.001, quant_lr=5e-5), state=states[0])
    assert {pg["initial_lr"] for pg in lower.optimizer.param_groups} == {0.001}
    assert lower.optimizers[1].param_groups[0]["lr"] == 5e-5
