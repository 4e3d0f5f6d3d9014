import copy

import pytest
import torch
from torch import nn

from yoloq.quant import (
    QuantConfig,
    QuantConfigError,
    QuantConv2d,
    calibrate,
    dequantize_model,
    iter_quantizers,
    quant_parameters,
    quantize_model,
)


class Block(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.bn = nn.BatchNorm2d(channels)
        self.act = nn.SiLU()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class Toy(nn.Module):
    """stem -> SiLU -> two blocks -> head -> frozen projection (registered last)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.act = nn.SiLU()
        self.body = nn.Sequential(Block(8), Block(8))
        self.head = nn.Conv2d(8, 4, 1)
        self.proj = nn.Conv2d(4, 1, 1, bias=False).requires_grad_(False)

    def forward(self, x):
        return self.proj(self.head(self.body(self.act(self.stem(x)))))


def toy(seed=0):
    torch.manual_seed(seed)
    return Toy()


def batches(n=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.rand(2, 3, 12, 12, generator=gen) for _ in range(n)]  # all positive, like images


def bits(model):
    return {name: (m.w_bits, m.a_bits) for name, m in model.named_modules() if isinstance(m, QuantConv2d)}


def test_default_first_and_last_trainable_convs_are_high_precision():
    model = quantize_model(toy(), QuantConfig(w_bits=4, a_bits=3))
    assert bits(model) == {"stem": (8, 8), "body.0.conv": (4, 3), "body.1.conv": (4, 3), "head": (8, 8)}
    assert type(model.proj) is nn.Conv2d  # frozen weight: stays float and is not "last"


def test_explicit_high_precision_names():
    model = quantize_model(toy(), QuantConfig(), high_precision=["body.0.conv"])
    assert bits(model) == {"stem": (4, 4), "body.0.conv": (8, 8), "body.1.conv": (4, 4), "head": (4, 4)}
    assert bits(quantize_model(toy(), QuantConfig(), high_precision="head"))["head"] == (8, 8)
    assert set(bits(quantize_model(toy(), QuantConfig(), high_precision=[])).values()) == {(4, 4)}


def test_first_last_bits_none_quantizes_all_alike():
    model = quantize_model(toy(), QuantConfig(w_bits=3, a_bits=3, first_last_bits=None))
    assert set(bits(model).values()) == {(3, 3)}


def test_unknown_high_precision_names_are_reported():
    with pytest.raises(QuantConfigError) as info:
        quantize_model(toy(), QuantConfig(), high_precision=["stem", "nope", "proj"])
    message = str(info.value)
    assert message.split(";")[0].endswith("nn.Conv2d: 'nope', 'proj'")  # frozen proj counts as unknown
    assert "\n" not in message


def test_shared_conv_stays_shared_and_root_conv_is_replaced():
    shared = nn.Conv2d(4, 4, 1)
    model = quantize_model(nn.Sequential(shared, nn.SiLU(), shared), QuantConfig())
    assert isinstance(model[0], QuantConv2d) and model[0] is model[2]
    assert isinstance(quantize_model(nn.Conv2d(3, 3, 1), QuantConfig()), QuantConv2d)


def test_quantize_model_calibrates_when_given_batches():
    model = quantize_model(toy(), QuantConfig(), calib_batches=batches())
    assert all(q.initialized for _, q in iter_quantizers(model))


def test_calibrate_is_deterministic():
    models = [quantize_model(toy(), QuantConfig(), calib_batches=batches()) for _ in range(2)]
    states = [m.state_dict() for m in models]
    assert states[0].keys() == states[1].keys()
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    x = batches(1, seed=1)[0]
    assert torch.equal(models[0](x), models[1](x))


def act_signed(model):
    return {name: bool(m.act_quantizer.signed) for name, m in model.named_modules() if isinstance(m, QuantConv2d)}


def test_auto_sign_rule():
    # Images are >= 0; after SiLU the inputs are slightly negative; head sees SiLU output too.
    model = quantize_model(toy(), QuantConfig(), calib_batches=batches())
    assert act_signed(model) == {"stem": False, "body.0.conv": True, "body.1.conv": True, "head": True}
    stem = model.stem.act_quantizer
    assert (stem.qn, stem.qp) == (0, 255)


@pytest.mark.parametrize("setting, expected", [("signed", True), ("unsigned", False)])
def test_forced_sign(setting, expected):
    model = quantize_model(toy(), QuantConfig(act_signed=setting), calib_batches=batches())
    assert set(act_signed(model).values()) == {expected}


def test_asymmetric_offset_starts_at_the_minimum():
    model = quantize_model(toy(), QuantConfig(act_asymmetric=True, scale_init="minmax"), calib_batches=batches())
    x = torch.cat(batches())
    assert model.stem.act_quantizer.offset.item() == x.min().item()
    assert not model.stem.act_quantizer.signed


def test_calibrate_restores_modes_and_leaves_bn_statistics_alone():
    model = quantize_model(toy(), QuantConfig())
    model.train()
    model.body[1].bn.eval()
    modes = {name: m.training for name, m in model.named_modules()}
    running_mean = model.body[0].bn.running_mean.clone()
    calibrate(model, batches())
    assert modes == {name: m.training for name, m in model.named_modules()}
    assert torch.equal(model.body[0].bn.running_mean, running_mean)


def test_calibrate_with_custom_forward():
    model = quantize_model(toy(), QuantConfig())
    calibrate(model, [{"img": b} for b in batches()], forward=lambda m, batch: m(batch["img"]))
    assert all(q.initialized for _, q in iter_quantizers(model))


def test_calibrate_without_batches_fails_and_leaves_quantizers_usable():
    model = quantize_model(toy(), QuantConfig())
    with pytest.raises(ValueError, match="no batches"):
        calibrate(model, [])
    assert not any(q.observing for _, q in iter_quantizers(model))


def test_unreached_quantizers_are_reported():
    model = quantize_model(nn.ModuleDict({"used": nn.Conv2d(3, 3, 1), "unused": nn.Conv2d(3, 3, 1)}), QuantConfig())
    with pytest.warns(UserWarning, match="unused.act_quantizer"):
        calibrate(model, batches(), forward=lambda m, batch: m["used"](batch))
    assert model["used"].act_quantizer.initialized and not model["unused"].act_quantizer.initialized


@pytest.mark.parametrize("config", [QuantConfig(), QuantConfig(w_bits=3, per_channel=True, act_asymmetric=True)])
def test_state_dict_round_trip(config):
    calibrated = quantize_model(toy(), config, calib_batches=batches())
    fresh = quantize_model(toy(seed=1), config)
    fresh.load_state_dict(calibrated.state_dict())
    x = batches(1, seed=2)[0]
    assert torch.equal(fresh(x), calibrated(x))
    for (_, a), (_, b) in zip(iter_quantizers(fresh), iter_quantizers(calibrated)):
        assert (a.qn, a.qp, bool(a.initialized)) == (b.qn, b.qp, True)
        assert torch.equal(a.scale, b.scale)  # the first forward did not re-initialise


def test_quant_parameters_and_iter_quantizers():
    model = quantize_model(toy(), QuantConfig(act_asymmetric=True))
    names = [name for name, _ in iter_quantizers(model)]
    assert names[:2] == ["stem.weight_quantizer", "stem.act_quantizer"] and len(names) == 8
    params = quant_parameters(model)
    expected = [p for _, q in iter_quantizers(model) for p in (q.scale, q.offset) if p is not None]
    assert len(params) == 12 and all(p is e for p, e in zip(params, expected))
    weights = {id(m.weight) for m in model.modules() if isinstance(m, nn.Conv2d)}
    assert not weights & {id(p) for p in params}


def test_dequantize_model_restores_the_float_model():
    original = toy()
    model = quantize_model(copy.deepcopy(original), QuantConfig(), calib_batches=batches())
    model = dequantize_model(model)
    assert not any(isinstance(m, (QuantConv2d)) for m in model.modules())
    assert list(dict(model.named_parameters())) == list(dict(original.named_parameters()))
    x = batches(1, seed=3)[0]
    original.eval(), model.eval()
    assert torch.equal(model(x), original(x))
