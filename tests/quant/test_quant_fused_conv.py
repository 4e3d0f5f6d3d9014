"""The fused quantized conv (one autograd node) against the quantizer and the conv run as two nodes."""

import pytest
import torch
from torch import nn

from yoloq.quant import QuantConfig, QuantConv2d, kernels
from yoloq.quant.fused_conv import fusable

CONVS = [  # (in, out, kernel, stride, padding, dilation, groups, bias)
    (4, 6, 3, 1, 1, 1, 1, False),
    (4, 6, 3, 2, 1, 1, 1, True),
    (6, 6, 3, 1, 2, 2, 6, False),  # depthwise, dilated
    (4, 8, 1, 1, 0, 1, 2, True),
]
CONFIGS = [
    QuantConfig(w_bits=3, a_bits=3),
    QuantConfig(w_bits=4, a_bits=4, per_channel=True, act_signed="unsigned"),
    QuantConfig(w_bits=4, a_bits=2, act_asymmetric=True),
]


def _qconv(spec, config, seed=0):
    torch.manual_seed(seed)
    cin, cout, k, stride, pad, dil, groups, bias = spec
    conv = nn.Conv2d(cin, cout, k, stride, pad, dil, groups, bias)
    q = QuantConv2d.from_float(conv, config.w_bits, config.a_bits, config)
    x = torch.randn(3, cin, 12, 12)
    q.weight_quantizer.init_from(q.weight)
    q.act_quantizer.init_from(x)
    return q, x


def _two_nodes(q: QuantConv2d, x):
    """The same computation with the quantizer's own autograd node feeding a plain conv."""
    return q._conv_forward(q.act_quantizer(x), q.weight_quantizer(q.weight), q.bias)


def _grads(q, x, run, grad):
    for p in q.parameters():
        p.grad = None
    x = x.clone().requires_grad_(True)
    out = run(q, x)
    out.backward(grad)
    return out.detach(), x.grad, {n: p.grad.clone() for n, p in q.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("kernel", ["compiled", "eager"])
@pytest.mark.parametrize("config", CONFIGS, ids=["w3a3", "per-channel-unsigned", "asymmetric"])
@pytest.mark.parametrize("spec", CONVS, ids=lambda s: "x".join(map(str, s)))
def test_fused_node_equals_two_nodes(spec, config, kernel):
    q, x = _qconv(spec, config)
    assert q.act_quantizer.plain and fusable(q)
    grad = torch.randn_like(q(x))
    with kernels.forced(kernel):
        fused = _grads(q, x, lambda m, t: m(t), grad)
        split = _grads(q, x, _two_nodes, grad)
    torch.testing.assert_close(fused[0], split[0], rtol=0, atol=0)
    torch.testing.assert_close(fused[1], split[1], rtol=0, atol=0)
    assert fused[2].keys() == split[2].keys() and "act_quantizer.scale" in fused[2]
    for name in fused[2]:
        torch.testing.assert_close(fused[2][name], split[2][name], rtol=0, atol=0, msg=name)


def test_frozen_conv_passes_gradients_to_earlier_layers_only():
    # QC: every conv parameter is frozen, but the input still needs its gradient.
    q, x = _qconv(CONVS[0], CONFIGS[0])
    for p in q.parameters():
        p.requires_grad_(False)
    x = x.clone().requires_grad_(True)
    q(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in q.parameters())
    # and the other way round: an input without gradient, trained weights
    q2, x2 = _qconv(CONVS[1], CONFIGS[0])
    q2.act_quantizer.scale.requires_grad_(False)
    q2(x2).sum().backward()
    assert q2.weight.grad is not None and q2.bias.grad is not None and q2.act_quantizer.scale.grad is None


def test_fused_conv_keeps_only_the_float_input_for_backward():
    q, x = _qconv((16, 16, 3, 1, 1, 1, 1, False), CONFIGS[0])
    x = torch.randn(4, 16, 32, 32).requires_grad_(True)

    def saved_bytes(run):
        storages = {}

        def pack(t):
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            run()
        return sum(storages.values())

    fused, split = saved_bytes(lambda: q(x)), saved_bytes(lambda: _two_nodes(q, x))
    assert fused < x.numel() * 4 * 1.1  # x plus the (small) weight and scales
    assert split > x.numel() * 4 * 1.9  # x for the quantizer and q(x) for the conv


def test_unfusable_convs_take_the_two_node_path():
    # 'same' padding is a string and reflect padding is not zeros: the fused node takes neither.
    for kwargs in ({"padding": "same"}, {"padding": 1, "padding_mode": "reflect"}):
        conv = nn.Conv2d(3, 4, 3, **kwargs)
        q = QuantConv2d.from_float(conv, 4, 4, QuantConfig())
        x = torch.randn(2, 3, 8, 8)
        q.weight_quantizer.init_from(q.weight)
        q.act_quantizer.init_from(x)
        assert not fusable(q)
        out = q(x)
        torch.testing.assert_close(out, _two_nodes(q, x), rtol=0, atol=0)
        assert out.grad_fn is not None and "FakeQuantInputConv2d" not in type(out.grad_fn).__name__


def test_observing_and_soft_rounding_do_not_fuse():
    q, x = _qconv(CONVS[0], CONFIGS[0])
    q.act_quantizer.soft_round = 0.3
    assert not q.act_quantizer.plain
    q.act_quantizer.soft_round = None
    q.act_quantizer.start_observing()
    assert not q.act_quantizer.plain
    out = q(x)  # observing: the input passes unquantized
    torch.testing.assert_close(out, q._conv_forward(x, q.weight_quantizer(q.weight), q.bias))
    q.act_quantizer.stop_observing()
    assert q.act_quantizer.plain


def test_cpu_autocast_matches_two_nodes():
    q, x = _qconv((8, 8, 3, 1, 1, 1, 1, True), CONFIGS[0])
    grad = torch.randn(3, 8, 12, 12).to(torch.bfloat16)
    results = []
    for run in (lambda m, t: m(t), _two_nodes):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            results.append(_grads(q, x, run, grad))
    (out_f, gx_f, gp_f), (out_s, gx_s, gp_s) = results
    assert out_f.dtype == torch.bfloat16 and gx_f.dtype == torch.float32
    torch.testing.assert_close(out_f, out_s, rtol=0, atol=0)
    torch.testing.assert_close(gx_f, gx_s, rtol=1e-2, atol=1e-2)
    for name in gp_f:
        assert gp_f[name].dtype == torch.float32
        torch.testing.assert_close(gp_f[name], gp_s[name], rtol=2e-2, atol=2e-2, msg=name)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_amp_fused_equals_two_nodes():
    q, x = _qconv((16, 16, 3, 1, 1, 1, 1, True), CONFIGS[0])
    q, x = q.cuda(), torch.randn(4, 16, 64, 64, device="cuda")
    grad = torch.randn(4, 16, 64, 64, device="cuda").half()
    results = []
    for run in (lambda m, t: m(t), _two_nodes):
        with torch.autocast("cuda", dtype=torch.float16):
            results.append(_grads(q, x, run, grad))
    (out_f, gx_f, gp_f), (out_s, gx_s, gp_s) = results
    torch.testing.assert_close(out_f, out_s, rtol=0, atol=0)
    torch.testing.assert_close(gx_f, gx_s, rtol=1e-2, atol=1e-2)
    for name in gp_f:
        torch.testing.assert_close(gp_f[name], gp_s[name], rtol=2e-2, atol=2e-2, msg=name)
