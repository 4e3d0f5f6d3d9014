import pytest
import torch
import torch.nn.functional as F
from torch import nn

from yoloq.quant import QuantConfig, QuantConv2d

HYPERPARAMETERS = ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation",
                   "groups", "padding_mode")

CONVS = [
    dict(in_channels=4, out_channels=6, kernel_size=3, stride=2, padding=1, groups=2, bias=True),
    dict(in_channels=4, out_channels=4, kernel_size=(3, 1), dilation=2, padding="same", bias=False,
         padding_mode="reflect"),
]


def make_conv(seed=0, **kwargs):
    torch.manual_seed(seed)
    return nn.Conv2d(**kwargs)


@pytest.mark.parametrize("kwargs", CONVS)
def test_round_trip_is_exact(kwargs):
    conv = make_conv(**kwargs)
    qconv = QuantConv2d.from_float(conv, 4, 4, QuantConfig())
    back = qconv.to_float()
    assert type(back) is nn.Conv2d
    for conv_out in (qconv, back):
        for name in HYPERPARAMETERS:
            assert getattr(conv_out, name) == getattr(conv, name), name
        assert (conv_out.bias is None) == (conv.bias is None)
    assert torch.equal(back.weight, conv.weight)
    assert conv.bias is None or torch.equal(back.bias, conv.bias)
    x = torch.randn(2, 4, 9, 9)
    assert torch.equal(back(x), conv(x))


def test_from_float_shares_no_state():
    conv = make_conv(**CONVS[0])
    original = conv.weight.detach().clone()
    qconv = QuantConv2d.from_float(conv, 4, 4, QuantConfig())
    with torch.no_grad():
        qconv.weight.add_(1)
        qconv.bias.add_(1)
    assert torch.equal(conv.weight, original)
    back = qconv.to_float()
    with torch.no_grad():
        back.weight.add_(1)
    assert torch.equal(qconv.weight, original + 1)


def test_without_quantizers_it_is_the_float_conv():
    conv = make_conv(**CONVS[0])
    qconv = QuantConv2d.from_float(conv, None, None, QuantConfig())
    assert qconv.weight_quantizer is None and qconv.act_quantizer is None
    assert qconv.w_bits is None and qconv.a_bits is None
    x = torch.randn(2, 4, 9, 9)
    assert torch.equal(qconv(x), conv(x))


def test_8_bit_is_close_to_float():
    conv = make_conv(**CONVS[0])
    qconv = QuantConv2d.from_float(conv, 8, 8, QuantConfig(per_channel=True, scale_init="minmax"))
    x = torch.randn(2, 4, 9, 9)
    expected = conv(x)
    out = qconv(x)  # first-batch init: with minmax nothing is clipped
    assert qconv.w_bits == 8 and qconv.a_bits == 8
    error = (out - expected).abs().max() / expected.abs().max()
    assert 0 < error < 0.02


def test_quantizers_follow_the_config():
    conv = make_conv(**CONVS[0])
    qconv = QuantConv2d.from_float(conv, 3, 5, QuantConfig(per_channel=True, act_asymmetric=True))
    wq, aq = qconv.weight_quantizer, qconv.act_quantizer
    assert (wq.bits, wq.per_channel, wq.channel_axis, wq.scale.shape, wq.per_sample) == (3, True, 0, (6,), False)
    assert wq.signed and not wq.auto_signed
    assert (aq.bits, aq.per_channel, aq.asymmetric, aq.per_sample) == (5, False, True, True)
    auto = QuantConv2d.from_float(conv, 4, 4, QuantConfig(act_signed="auto")).act_quantizer
    forced = QuantConv2d.from_float(conv, 4, 4, QuantConfig(act_signed="unsigned")).act_quantizer
    assert auto.auto_signed and not forced.auto_signed and not forced.signed


def test_gradients_reach_weight_input_and_scales():
    conv = make_conv(**CONVS[0])
    qconv = QuantConv2d.from_float(conv, 4, 4, QuantConfig())
    x = torch.randn(2, 4, 9, 9, requires_grad=True)
    qconv(x).square().sum().backward()
    for tensor in (x, qconv.weight, qconv.bias, qconv.weight_quantizer.scale, qconv.act_quantizer.scale):
        assert tensor.grad is not None and tensor.grad.abs().sum() > 0


def test_autocast_output_dtype():
    qconv = QuantConv2d.from_float(make_conv(**CONVS[0]), 4, 4, QuantConfig())
    x = torch.randn(2, 4, 9, 9)
    qconv(x)  # initialise in float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = qconv(x)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), qconv(x), rtol=0.05, atol=0.05)


def test_forward_is_conv_of_quantized_tensors():
    qconv = QuantConv2d.from_float(make_conv(**CONVS[0]), 4, 4, QuantConfig())
    x = torch.randn(2, 4, 9, 9)
    out = qconv(x)
    expected = F.conv2d(qconv.act_quantizer(x), qconv.weight_quantizer(qconv.weight), qconv.bias,
                        stride=2, padding=1, groups=2)
    assert torch.equal(out, expected)
