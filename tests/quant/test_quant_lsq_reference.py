"""The custom autograd Function against plain-torch LSQ with straight-through rounding.

gradcheck does not apply (rounding is not differentiable), so the reference is Esser et al.'s
formula round_ste(clamp(v/s, -Qn, Qp)) * s: clamping before rounding judges "inside" on the
unrounded v/s, and the straight-through round gives the scale gradient round(v/s) - v/s.
"""

import math

import pytest
import torch
from quant_testutils import ready_quantizer

from yoloq.quant import LSQQuantizer, kernels


def reference(x, scale, offset, qn, qp):
    v = x if offset is None else x - offset
    t = torch.clamp(v / scale, -qn, qp)
    t = t + (t.round() - t).detach()
    out = t * scale
    return out if offset is None else out + offset


MODES = [
    dict(bits=4, signed=True),
    dict(bits=4, signed=False),
    dict(bits=8, signed=True),
    dict(bits=3, signed=True, per_channel=True, channel_axis=0),
    dict(bits=3, signed=False, per_channel=True, channel_axis=1),
    dict(bits=4, signed=True, per_sample=True),
    dict(bits=2, signed=False, per_sample=True),
    dict(bits=2, asymmetric=True, per_sample=True),
    dict(bits=5, asymmetric=True, per_channel=True, channel_axis=1),
]


@pytest.mark.parametrize("kernel", ["compiled", "eager"])
@pytest.mark.parametrize("mode", MODES, ids=lambda m: "-".join(f"{k}={v}" for k, v in m.items()))
def test_function_matches_reference(mode, kernel):
    with kernels.forced(kernel):
        _check_against_reference(mode)


def _check_against_reference(mode):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, 5, 5, generator=gen) * 2
    grad_out = torch.randn(x.shape, generator=gen)
    per_channel, asymmetric = mode.get("per_channel", False), mode.get("asymmetric", False)
    axis = mode.get("channel_axis", 0)
    channels = x.shape[axis] if per_channel else 1
    scale = torch.rand(channels, generator=gen) * 0.5 + 0.1
    offset = -torch.rand(channels, generator=gen) * 0.5 if asymmetric else None
    if not per_channel:
        scale = scale[0]
        offset = None if offset is None else offset[0]

    kwargs = {k: v for k, v in mode.items() if k not in ("bits", "signed", "asymmetric")}
    q = ready_quantizer(mode["bits"], scale, signed=mode.get("signed", False), offset=offset, **kwargs)
    x_mine = x.clone().requires_grad_(True)
    q(x_mine).backward(grad_out)

    # Independent gradient scale: N = elements of one sample, of one channel, or of the tensor.
    if mode.get("per_sample"):
        n = x[0].numel()
    else:
        n = x.numel() // channels
    g = 1 / math.sqrt(n * q.qp)
    shape = [1] * x.dim()
    shape[axis] = -1
    s_ref = scale.clone().requires_grad_(True)
    b_ref = None if offset is None else offset.clone().requires_grad_(True)
    x_ref = x.clone().requires_grad_(True)
    view = (lambda p: p.view(shape)) if per_channel else (lambda p: p)
    out_ref = reference(x_ref, view(s_ref), None if b_ref is None else view(b_ref), q.qn, q.qp)
    out_ref.backward(grad_out)

    torch.testing.assert_close(q(x), out_ref.detach(), rtol=0, atol=1e-6)
    torch.testing.assert_close(x_mine.grad, x_ref.grad, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(q.scale.grad, s_ref.grad * g, rtol=1e-5, atol=1e-6)
    if offset is not None:
        torch.testing.assert_close(q.offset.grad, b_ref.grad * g, rtol=1e-5, atol=1e-6)


def test_low_precision_input_computes_in_float32():
    q = ready_quantizer(4, 0.3)
    x = torch.randn(2, 3, 4, 4).to(torch.bfloat16).requires_grad_(True)
    out = q(x)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out, q(x.detach().float()).to(torch.bfloat16), rtol=0, atol=0)
    out.sum().backward()
    assert x.grad.dtype == torch.bfloat16 and q.scale.grad.dtype == torch.float32


def test_forward_never_reads_tensors_back(monkeypatch):
    # A read-back (.item(), bool(tensor)) would stall the GPU pipeline on every call.
    q = LSQQuantizer(4, signed=None)
    x = torch.randn(2, 3, 4, 4)
    q(x)  # first-batch init may read back
    q(x).sum().backward()  # and so may compiling the kernels, once

    def forbidden(*args):
        raise AssertionError("forward read a tensor back to python")

    for name in ("item", "__bool__", "tolist"):
        monkeypatch.setattr(torch.Tensor, name, forbidden)
    q(x).sum().backward()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_autocast_matches_cpu():
    q = ready_quantizer(4, 0.3, per_sample=True)
    x = torch.randn(2, 3, 8, 8).half()
    expected = q(x.float()).half()
    q.cuda()
    x_cuda = x.cuda().requires_grad_(True)
    with torch.autocast("cuda", dtype=torch.float16):
        out = q(x_cuda)
    assert out.dtype == torch.float16
    torch.testing.assert_close(out.cpu(), expected, rtol=0, atol=0)
    out.float().sum().backward()
    assert x_cuda.grad.dtype == torch.float16 and torch.isfinite(q.scale.grad)
