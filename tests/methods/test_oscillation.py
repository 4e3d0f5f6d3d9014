"""Oscillation tracking, dampening and iterative freezing against hand-computed cases."""

import math

import pytest
import torch
from torch import nn

from yoloq.callbacks import Callback
from yoloq.engine.trainer import Recipe, Trainer
from yoloq.methods.dampen import OscillationDampening, dampening_loss
from yoloq.methods.freeze import IterativeFreezing
from yoloq.methods.oscillation import OscillationMonitor, OscillationTracker, TrackOscillations
from yoloq.methods.schedule import cosine_anneal
from yoloq.quant import QuantConfig, QuantConv2d, quantize_model


def test_tracker_counts_a_crafted_sequence():
    # three weights' integer states over six steps
    states = torch.tensor([[0, 0, 0], [1, 0, 1], [0, 0, 2], [1, 0, 1], [1, 1, 1], [0, 2, 2]], dtype=torch.float32)
    # weight 0: up, down (osc), up (osc), -, down (osc)   weight 1: -, -, -, up, up (no osc: same direction)
    # weight 2: up, up, down (osc), -, up (osc)
    expected = [[0, 0, 0], [0, 0, 0], [1, 0, 0], [1, 0, 1], [0, 0, 0], [1, 0, 1]]
    m = 0.1
    t = OscillationTracker(torch.Size([3]), momentum=m)
    freq = torch.zeros(3)
    for state, osc in zip(states, expected):
        got = t.update(state)
        assert got.tolist() == [bool(o) for o in osc]
        freq = m * torch.tensor(osc, dtype=torch.float32) + (1 - m) * freq
    # kept in float16: within its rounding of the float32 recurrence
    torch.testing.assert_close(t.frequency(), freq, rtol=5e-3, atol=1e-4)
    ema = states[0].clone()
    for s in states[1:]:
        ema = m * s + (1 - m) * ema
    torch.testing.assert_close(t.int_ema, ema, rtol=0, atol=6 * t.ema_unit)  # int16 fixed point, 2^-12 at 4 bits
    assert t.last_dir.tolist() == [-1, 1, 1]
    assert t.oscillating_share(0.15) == pytest.approx(2 / 3)


def test_cosine_anneal():
    assert cosine_anneal(0.1, 0.01, 0.1, begin=0.25) == 0.1
    assert cosine_anneal(0.1, 0.01, 0.25 + 0.75 / 2, begin=0.25) == pytest.approx(0.055)
    assert cosine_anneal(0.1, 0.01, 1.0, begin=0.25) == pytest.approx(0.01)
    assert cosine_anneal(0.0, 0.1, 0.5) == pytest.approx(0.05)


def one_conv(bits=3, seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(2, 4, 3))
    quantize_model(model, QuantConfig(w_bits=bits, a_bits=bits), [torch.randn(2, 2, 8, 8)], high_precision=[])
    return model


def test_dampening_loss_value_and_gradient():
    model = one_conv()
    conv = model[0]
    with torch.no_grad():
        conv.weight[0, 0, 0, 0] = 100.0  # far outside the grid: clipped, contributes nothing
    s = conv.weight_quantizer.scale.detach()
    qn, qp = conv.weight_quantizer.qn, conv.weight_quantizer.qp
    w = conv.weight.detach()
    q = torch.clamp(torch.round(w / s), -qn, qp) * s
    clipped = torch.clamp(w, -qn * s, qp * s)
    expected = ((q - clipped) ** 2).sum()
    loss = dampening_loss([conv])
    torch.testing.assert_close(loss, expected)
    loss.backward()
    inside = (w >= -qn * s) & (w <= qp * s)
    torch.testing.assert_close(conv.weight.grad, -2 * (q - clipped) * inside)
    assert conv.weight.grad[0, 0, 0, 0] == 0


def batches(n=4):
    g = torch.Generator().manual_seed(0)
    return [torch.randn(2, 2, 8, 8, generator=g) for _ in range(n)]


class ToyLoss(nn.Module):
    """A model wrapper with ultralytics' `loss(batch)` interface, for the trainer."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def loss(self, batch):
        out = self.model(batch["img"])
        return (out ** 2).mean() * torch.ones(1), {"toy": out.mean().detach()}


def toy_batches(n=6, channels=2):
    return [{"img": (torch.rand(2, channels, 8, 8) * 255).to(torch.uint8), "batch_idx": torch.zeros(0),
             "cls": torch.zeros(0, 1), "bboxes": torch.zeros(0, 4)} for _ in range(n)]


def no_eval(model):
    return {"mAP50-95": 0.0, "mAP50": 0.0}


def test_dampening_lambda_is_annealed_from_zero():
    net = ToyLoss(one_conv())
    damp = OscillationDampening(lambda_final=0.1, begin=0.0)
    lambdas = []

    class Spy(Callback):
        def on_step_end(self, trainer):
            lambdas.append(damp.last_lambda)

    trainer = Trainer("qat", net, toy_batches(4), no_eval, Recipe(epochs=1, warmup_epochs=0), torch.device("cpu"),
                      [damp, Spy()], progress=False)
    trainer.fit()
    assert lambdas[0] == 0.0 and lambdas == sorted(lambdas) and lambdas[-1] == pytest.approx(0.1 * (1 - math.cos(
        math.pi * 3 / 4)) / 2)


class PresetFreeze(Callback):
    """Freezes every third weight at the integer 1 at the stage start, as if it had oscillated around it."""

    def __init__(self, tracking):
        self.tracking = tracking

    def on_stage_start(self, trainer):
        tracker = self.tracking.monitor.trackers["model/0"]
        tracker.frozen.view(-1)[::3] = True
        tracker.frozen_int.fill_(1.0)


def test_frozen_weights_keep_their_integers_through_optimizer_steps():
    net = ToyLoss(one_conv())
    conv = net.model[0]
    tracking = TrackOscillations(momentum=0.5)
    freezing = IterativeFreezing(tracking, threshold_start=1.1, threshold_final=1.1)  # no new freezing
    callbacks = [tracking, PresetFreeze(tracking), freezing]
    trainer = Trainer("qat", net, toy_batches(12), no_eval, Recipe(epochs=1, lr0=0.5, warmup_epochs=0,
                      quant_lr=0.0), torch.device("cpu"), callbacks, progress=False)
    latent_before = conv.weight.detach().clone()
    trainer.fit()
    mask = tracking.monitor.trackers["model/0"].frozen
    assert mask.sum() == (conv.weight.numel() + 2) // 3
    w_int = conv.weight_quantizer.integers(conv.weight)
    assert torch.all(w_int[mask] == 1.0)
    # the scale did not train (quant_lr=0): frozen latent weights sit exactly on the grid and stay there
    torch.testing.assert_close(conv.weight.detach()[mask], conv.weight_quantizer.scale.detach().expand(
        int(mask.sum())))
    assert not torch.equal(conv.weight.detach()[~mask], latent_before[~mask])  # the others did train


def test_freezing_picks_oscillating_weights_at_their_average_integer():
    net = ToyLoss(one_conv())
    conv = net.model[0]
    monitor = OscillationMonitor(net, momentum=0.5)
    tracking = TrackOscillations()
    tracking.monitor, tracking.pairs = monitor, monitor.pairs(net)
    freezing = IterativeFreezing(tracking, threshold_start=0.3, threshold_final=0.3)
    s = conv.weight_quantizer.scale.detach()

    class FakeTrainer:
        model = net
        progress_frac = 0.5

    # weight 0 alternates between integers 0 and 1: it oscillates and is frozen at round(EMA) of them
    for k in range(6):
        with torch.no_grad():
            conv.weight.view(-1)[0] = s * (k % 2)
        monitor.update(tracking.pairs)
        freezing.on_step_end(FakeTrainer)
    tracker = monitor.trackers["model/0"]
    assert bool(tracker.frozen.view(-1)[0]) and tracker.frozen.sum() == 1
    assert tracker.frozen_int.view(-1)[0] in (0.0, 1.0)
    assert monitor.stats(0.3)["frozen_pct"] == pytest.approx(100 / conv.weight.numel())


def test_only_low_bit_layers_are_tracked():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3), nn.Conv2d(4, 2, 1))
    quantize_model(model, QuantConfig(w_bits=4, a_bits=4), [torch.randn(1, 3, 8, 8)])  # first/last at 8 bits
    monitor = OscillationMonitor(model, max_bits=4)
    assert list(monitor.trackers) == ["1"]
    assert isinstance(model[1], QuantConv2d)


def test_tracker_state_is_at_most_6_bytes_a_weight():
    model = one_conv(bits=4)
    monitor = OscillationMonitor(model)
    state = monitor.state_dict()
    weights = sum(t.frozen.numel() for t in monitor.trackers.values())
    per_weight = sum(v.numel() * v.element_size() for k, v in state.items() if not k.endswith("started")) / weights
    assert per_weight == 6
    assert not any(k.endswith(("prev_int", "frozen_int")) for k in state)  # derived from the weights


def test_freezing_run_resumed_from_its_state_continues_bit_for_bit():
    """Two epochs straight against one epoch, a checkpoint, a fresh trainer built from it, and the second."""
    def make(state=None, epochs=2):
        torch.manual_seed(0)
        net = ToyLoss(one_conv(bits=3, seed=1))
        tracking = TrackOscillations(momentum=0.5, max_bits=4)
        callbacks = [tracking, IterativeFreezing(tracking, threshold_start=0.2, threshold_final=0.2, begin=0.0)]
        g = torch.Generator().manual_seed(0)
        data = [{"img": (torch.rand(2, 2, 8, 8, generator=g) * 255).to(torch.uint8), "batch_idx": torch.zeros(0),
                 "cls": torch.zeros(0, 1), "bboxes": torch.zeros(0, 4)} for _ in range(8)]
        trainer = Trainer("qat", net, data, no_eval, Recipe(epochs=epochs, lr0=2.0, warmup_epochs=0, quant_lr=1e-2),
                          torch.device("cpu"), callbacks, progress=False, state=state)
        return trainer, tracking

    straight, straight_tracking = make()
    straight.fit()
    first, _ = make(epochs=1)
    first.fit()
    state = torch.load(_save(first.state_dict()), weights_only=True)
    state["epoch"] = 1  # its recipe was one epoch long; continue as a two-epoch stage
    resumed, resumed_tracking = make(state)
    resumed.fit()
    tracker = straight_tracking.monitor.trackers["model/0"]
    assert tracker.frozen.any() and not tracker.frozen.all(), "the test needs some frozen weights"
    for a, b in ((straight.model.state_dict(), resumed.model.state_dict()),
                 (dict(tracker.named_buffers()), dict(resumed_tracking.monitor.trackers["model/0"].named_buffers()))):
        assert a.keys() == b.keys()
        for k in a:
            if k == "frozen_int":  # derived where it matters: the frozen weights
                assert torch.equal(a[k][tracker.frozen], b[k][tracker.frozen]), k
            else:
                assert torch.equal(a[k], b[k]), k


def _save(obj):
    import io

    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return buf
