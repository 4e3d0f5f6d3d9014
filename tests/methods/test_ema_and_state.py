"""EMA of weights, scales and BN statistics; a checkpoint round trip of every method's state."""

import copy
import math

import torch
from torch import nn

from tests.methods.test_oscillation import ToyLoss, no_eval, toy_batches
from tests.quant.test_quant_correction import toy_model
from yoloq.engine.trainer import Recipe, Trainer
from yoloq.methods import build_callbacks
from yoloq.methods.ema import EMACallback
from yoloq.quant.correction import add_corrections
from tests.conftest import compose_config


def test_ema_averages_weights_scales_and_bn_statistics_with_the_ramp():
    model, _ = toy_model()
    net = ToyLoss(model)
    ema = EMACallback(decay=0.9, tau=2.0)
    trainer = Trainer("qat", net.train(), toy_batches(5, channels=3), no_eval, Recipe(epochs=1, lr0=0.1, warmup_epochs=0,
                      quant_lr=0.01), torch.device("cpu"), [ema], progress=False)
    keys = ["model.0.conv.weight", "model.0.conv.weight_quantizer.scale", "model.1.conv.act_quantizer.scale",
            "model.0.bn.running_mean"]
    expected = {k: net.state_dict()[k].clone() for k in keys}

    class Follow(EMACallback):  # runs after the EMA: recompute the average by hand from the raw model
        def on_step_end(self, t):
            a = 0.9 * (1 - math.exp(-t.step / 2.0))
            for k in keys:
                expected[k] = a * expected[k] + (1 - a) * t.model.state_dict()[k]

    trainer.callbacks.append(Follow())
    trainer.fit()
    state = ema.eval_model(trainer).state_dict()
    for k in keys:
        torch.testing.assert_close(state[k], expected[k])
        assert not torch.equal(state[k], net.state_dict()[k])  # it is an average, not the last value
    assert trainer.eval_model is ema.ema.ema


def assert_same(a, b, path=""):
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            assert_same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), path
    else:
        assert a == b, path


def test_checkpoint_round_trip_keeps_tracker_freezing_ema_and_qc_state(tmp_path):
    cfg = compose_config(["method=freeze", "method.ema.enabled=true", "method.track.momentum=0.5"])
    model, _ = toy_model()
    add_corrections(model)
    net = ToyLoss(model)

    def make_trainer(m):
        return Trainer("qat", m, toy_batches(6, channels=3), no_eval, Recipe(epochs=1, lr0=0.5, warmup_epochs=0),
                       torch.device("cpu"), build_callbacks(cfg.method, 4), progress=False)

    trainer = make_trainer(net)
    trainer.fit()
    tracker_state = trainer.callbacks[0].state_dict()
    tracker_state["trackers.model/1/conv.frozen"].view(-1)[:5] = True  # make sure a mask is saved
    torch.save({"model": net.state_dict(), "callbacks": trainer.callback_states()}, tmp_path / "ckpt.pt")

    ckpt = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    fresh_model, _ = toy_model(seed=3)
    add_corrections(fresh_model)
    fresh = ToyLoss(fresh_model)
    fresh.load_state_dict(ckpt["model"])
    restored = make_trainer(fresh)
    restored.load_callback_states(ckpt["callbacks"])
    restored._hook("on_stage_start")  # the loaded state is applied once the stage's model is known
    for a, b in zip(trainer.callbacks, restored.callbacks):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys()
        assert len(sa) > 0 or type(a).__name__ == "IterativeFreezing"  # its masks live in the trackers
        assert_same(sa, sb)
    assert restored.callbacks[0].monitor.trackers["model/1/conv"].frozen.view(-1)[:5].all()
    qc = {k: v for k, v in fresh.state_dict().items() if "correction" in k}
    assert qc and all(torch.equal(v, net.state_dict()[k]) for k, v in qc.items())
    assert {type(cb).__name__ for cb in restored.callbacks} == {"TrackOscillations", "IterativeFreezing",
                                                                  "EMACallback"}


def test_the_ema_horizon_is_relative_to_the_stage():
    from yoloq.methods.ema import PAPER_STEPS, relative_horizon
    from tests.conftest import compose_config

    m = compose_config(["method=ema"]).method.ema
    assert m.decay is None and m.tau is None  # derived by default
    decay, tau = relative_horizon(PAPER_STEPS, m.horizon, m.ramp)
    assert abs(decay - 0.9999) < 2e-7 and abs(tau - 2000) < 2  # the paper's values at the paper's schedule
    for steps in (500, 5_000, 2 * PAPER_STEPS):  # the same window relative to the stage, whatever its length
        d, t = relative_horizon(steps, m.horizon, m.ramp)
        assert abs(1 / (1 - d) / steps - m.horizon) < 1e-9 and abs(t / steps - m.ramp) < 1e-12
    d, t = relative_horizon(500, m.horizon, m.ramp)
    assert 0.96 < d < 0.965 and 5 < t < 6  # the default QAT stage's 500 steps


def test_fixed_decay_and_tau_are_kept_and_derived_ones_follow_the_trainer():
    import math

    from tests.engine.test_trainer import fake_batches, no_eval
    from yoloq.engine.trainer import Recipe, Trainer
    from yoloq.methods.ema import EMACallback
    from yoloq.models.build import build_model

    # 3 epochs of 2 batches: 6 steps; shares 0.5 and 0.25 give a 3-step window (decay 2/3) and tau 1.5
    for cb, (decay, tau) in ((EMACallback(0.99, 100.0), (0.99, 100.0)), (EMACallback(None, None, 0.5, 0.25), (2 / 3, 1.5))):
        trainer = Trainer("t", build_model("yolov5n.yaml", ("a",)), fake_batches(2), no_eval, Recipe(epochs=3),
                          torch.device("cpu"), [cb], progress=False)
        assert trainer.total_steps == 6
        cb.on_stage_start(trainer)
        assert abs(cb.ema.decay(1e12) - decay) < 1e-12  # ultralytics' ramp: decay * (1 - exp(-t / tau))
        assert abs(cb.ema.decay(tau) / decay - (1 - math.exp(-1))) < 1e-12
