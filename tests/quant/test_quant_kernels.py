"""kernels.py: the compiled kernels against the eager math and the plain straight-through formula, and
what happens when compilation is not possible."""

import pytest
import torch

from yoloq.quant import kernels


def reference(x, scale, offset, qn, qp):
    """Plain-autograd LSQ (clamp before a straight-through round): values and gradients to compare with."""
    v = x if offset is None else x - offset
    t = torch.clamp(v / scale, -qn, qp)
    out = (t + (t.round() - t).detach()) * scale
    return out if offset is None else out + offset


CASES = [  # (x shape, scale/offset shape, offset?, qn, qp)
    ((4, 3, 8, 8), (), False, 4, 3),
    ((4, 3, 8, 8), (), False, 0, 7),
    ((4, 3, 8, 8), (1, 3, 1, 1), False, 128, 127),
    ((6, 3, 3, 3), (6, 1, 1, 1), False, 4, 3),
    ((4, 3, 8, 8), (), True, 0, 3),
    ((4, 5, 8, 8), (1, 5, 1, 1), True, 0, 31),
    ((16, 10), (), False, 2, 1),
]


def _inputs(case, seed=0):
    shape, sshape, has_offset, qn, qp = case
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=gen) * 2
    grad = torch.randn(shape, generator=gen)
    scale = torch.rand(sshape, generator=gen) * 0.4 + 0.1
    offset = -torch.rand(sshape, generator=gen) * 0.5 if has_offset else None
    dims = tuple(d for d in range(x.dim()) if ((1,) * (x.dim() - len(sshape)) + sshape)[d] == 1)
    return x, grad, scale, offset, qn, qp, dims


@pytest.mark.parametrize("mode", ["compiled", "eager"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-{c[1]}-offset{c[2]}-{c[3]}:{c[4]}")
def test_kernels_match_the_straight_through_reference(mode, case):
    x, grad, scale, offset, qn, qp, dims = _inputs(case)
    with kernels.forced(mode):
        out = kernels.fake_quant_forward(x, scale, offset, qn, qp)
        grad_x, grad_s, grad_o = kernels.fake_quant_backward(grad, x, scale, offset, qn, qp, dims)
        owned = grad.clone()
        in_place = kernels.fake_quant_backward(owned, x, scale, offset, qn, qp, dims, in_place=True)
    xr = x.clone().requires_grad_(True)
    sr = scale.clone().requires_grad_(True)
    orr = None if offset is None else offset.clone().requires_grad_(True)
    expected = reference(xr, sr, orr, qn, qp)
    expected.backward(grad)
    torch.testing.assert_close(out, expected.detach(), rtol=0, atol=1e-6)
    if offset is None:  # written into the caller's tensor (with an offset into new memory: kernels.py says why)
        assert in_place[0].data_ptr() == owned.data_ptr()
        torch.testing.assert_close(owned, grad_x, rtol=0, atol=0)
    else:
        assert in_place[0].data_ptr() != owned.data_ptr()
    for a, b in zip(in_place, (grad_x, grad_s, grad_o)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(grad_x, xr.grad, rtol=1e-6, atol=1e-6)  # autograd multiplies by s/s
    # Autograd's scale gradient, t + s * d(v/s)/ds, cancels in float32: equal to about 1e-5 relative.
    torch.testing.assert_close(grad_s.reshape(scale.shape), sr.grad, rtol=1e-4, atol=1e-4)
    if offset is not None:
        torch.testing.assert_close(grad_o.reshape(offset.shape), orr.grad, rtol=1e-5, atol=1e-5)
    else:
        assert grad_o is None


def test_compiled_equals_eager_on_a_large_tensor_in_low_precision():
    gen = torch.Generator().manual_seed(1)
    x = (torch.randn(2, 8, 96, 96, generator=gen) * 3).to(torch.bfloat16)
    grad = torch.randn(x.shape, generator=gen).to(torch.bfloat16)
    scale = torch.tensor(0.37)
    results = {}
    for mode in ("compiled", "eager"):
        with kernels.forced(mode):
            results[mode] = (kernels.fake_quant_forward(x, scale, None, 4, 3),
                             *kernels.fake_quant_backward(grad, x, scale, None, 4, 3, (0, 1, 2, 3))[:2])
    (out_c, gx_c, gs_c), (out_e, gx_e, gs_e) = results["compiled"], results["eager"]
    assert out_c.dtype == gx_c.dtype == torch.bfloat16
    torch.testing.assert_close(out_c, out_e, rtol=0, atol=0)
    torch.testing.assert_close(gx_c, gx_e, rtol=0, atol=0)
    torch.testing.assert_close(gs_c, gs_e, rtol=1e-4, atol=1e-3)  # summation order differs


def test_auto_uses_the_compiled_kernel_for_large_tensors_only():
    cpu = torch.device("cpu")
    with kernels.forced("auto"):
        assert kernels.uses_compiled(cpu, kernels.MIN_COMPILED_NUMEL)
        assert not kernels.uses_compiled(cpu, kernels.MIN_COMPILED_NUMEL - 1)
    with kernels.forced("eager"):
        assert not kernels.uses_compiled(cpu, 10**9)


def test_a_failing_compiler_falls_back_to_eager_once_with_a_warning(monkeypatch):
    def broken():
        raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found\nmore detail")

    monkeypatch.setattr(kernels._kernels, "get", broken)
    monkeypatch.setattr(kernels._kernels, "broken", {})
    x = torch.randn(4, 4, 128, 128)
    scale = torch.tensor(0.2)
    with kernels.forced("auto"):
        with pytest.warns(UserWarning, match="compiling the fake-quantization kernel failed on cpu .*No working C"):
            out = kernels.fake_quant_forward(x, scale, None, 4, 3)
        torch.testing.assert_close(out, kernels.forward_math(x, scale, None, 4, 3), rtol=0, atol=0)
        assert not kernels.uses_compiled(x.device, x.numel())  # no second attempt, no second warning
    with kernels.forced("compiled"), pytest.raises(RuntimeError, match="InvalidCxxCompiler"):
        kernels.fake_quant_forward(x, scale, None, 4, 3)


def test_unknown_kernel_setting_is_one_clear_error(monkeypatch):
    monkeypatch.setenv("YOLOQ_FAKE_QUANT_KERNEL", "fast")
    with pytest.raises(ValueError, match="YOLOQ_FAKE_QUANT_KERNEL='fast' is unknown: use one of auto, compiled, eager"):
        kernels.kernel_mode()
