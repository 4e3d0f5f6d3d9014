"""QuantConvTranspose2d: exact round trip, the same arithmetic as quantizing by hand, per-channel scales
along the output channels, and quantize_model/dequantize_model swap it like a conv."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from yoloq.quant import QuantConfig, QuantConvTranspose2d, dequantize_model, quantize_model


def upsampler(seed=0, **kw):
    torch.manual_seed(seed)
    return nn.ConvTranspose2d(**{"in_channels": 4, "out_channels": 6, "kernel_size": 2, "stride": 2, **kw})


def test_round_trip_and_unquantized_parity():
    conv = upsampler()
    q = QuantConvTranspose2d.from_float(conv, None, None, QuantConfig())
    x = torch.randn(2, 4, 5, 5)
    assert torch.equal(q(x), conv(x))  # no quantizers: exactly the float layer
    back = QuantConvTranspose2d.from_float(conv, 4, 4, QuantConfig()).to_float()
    assert type(back) is nn.ConvTranspose2d and torch.equal(back.weight, conv.weight)
    assert torch.equal(back(x), conv(x))


@pytest.mark.parametrize("per_channel", [False, True])
def test_forward_is_conv_transpose_of_fake_quantized_tensors(per_channel):
    conv = upsampler()
    q = QuantConvTranspose2d.from_float(conv, 3, 4, QuantConfig(per_channel=per_channel))
    wq, aq = q.weight_quantizer, q.act_quantizer
    assert wq.scale.shape == ((6,) if per_channel else ())
    x = torch.randn(2, 4, 5, 5)
    wq.init_from(q.weight)
    aq.init_from(x)
    s = wq.scale.view(1, -1, 1, 1) if per_channel else wq.scale
    w_hand = torch.clamp(torch.round(q.weight / s), -4, 3) * s  # signed 3-bit grid
    sa = aq.scale
    lo, hi = (-8, 7) if bool(aq.signed) else (0, 15)
    x_hand = torch.clamp(torch.round(x / sa), lo, hi) * sa
    expected = F.conv_transpose2d(x_hand, w_hand, q.bias, stride=2)
    assert torch.allclose(q(x), expected, atol=1e-6)
    q(x).sum().backward()
    assert q.weight.grad is not None and wq.scale.grad is not None and aq.scale.grad is not None


def test_grouped_transpose_falls_back_to_one_scale():
    q = QuantConvTranspose2d.from_float(upsampler(groups=2), 4, 4, QuantConfig(per_channel=True))
    assert q.weight_quantizer.scale.shape == ()


def test_quantize_model_swaps_and_calibrates_transposed_convs():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), upsampler(), nn.Conv2d(6, 2, 1))
    x = torch.randn(2, 3, 8, 8)
    float_out = model(x)
    quantize_model(model, QuantConfig(w_bits=4, a_bits=4), [x], high_precision=[])
    assert isinstance(model[1], QuantConvTranspose2d)
    assert bool(model[1].weight_quantizer.initialized) and bool(model[1].act_quantizer.initialized)
    assert model(x).shape == (2, 2, 16, 16)
    dequantize_model(model)
    assert type(model[1]) is nn.ConvTranspose2d
    assert torch.equal(model(x), float_out)
