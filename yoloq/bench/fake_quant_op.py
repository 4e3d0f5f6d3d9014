"""Fake-quant forward+backward over one large tensor: ours, PyTorch's builtin learnable fake quant, the
plain-ops formula, and the memory-bandwidth floor of the data a forward+backward must move."""

from __future__ import annotations

import math

import torch

from yoloq.quant import kernels
from yoloq.quant.lsq import LSQFakeQuantize

from .measure import interleaved_times, median, median_ratio


def _reference(x, scale, qn, qp):
    """LSQ written with plain torch ops and a straight-through round (what autograd alone gives)."""
    t = torch.clamp(x / scale, -qn, qp)
    return (t + (t.round() - t).detach()) * scale


def bench_fake_quant_op(numel: int, bits: int, device: torch.device, repeats: int, warmup: int,
                        per_channel: bool = False, channels: int = 64, dtype: torch.dtype = torch.float32) -> dict:
    """Medians of one forward+backward on a [N, C, H, W] tensor of about numel elements (float16: the
    activations an autocast step quantizes; PyTorch's builtin gets float32, which it needs on every device)."""
    hw = max(1, round(math.sqrt(numel / (8 * channels))))
    shape = (8, channels, hw, hw)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=gen).to(device, dtype).requires_grad_(True)
    grad = torch.randn(shape, generator=gen).to(device, dtype)
    x32 = x.detach().float().requires_grad_(True)
    qn, qp = 2 ** (bits - 1), 2 ** (bits - 1) - 1
    n_scales = channels if per_channel else 1
    scale = torch.full((n_scales,), 3.0 / qp, device=device, requires_grad=True)
    scale_view = scale.view(1, -1, 1, 1) if per_channel else scale.view(())
    zero_point = torch.zeros(n_scales, device=device)
    grad_factor = 1.0 / math.sqrt(x.numel() / n_scales * qp)

    def fwd_bwd(forward):
        def run():
            x.grad = x32.grad = scale.grad = None
            out = forward()
            out.backward(grad.to(out.dtype))
        return run

    def builtin():
        if per_channel:
            return torch._fake_quantize_learnable_per_channel_affine(x32, scale, zero_point, 1, -qn, qp, grad_factor)
        return torch._fake_quantize_learnable_per_tensor_affine(x32, scale, zero_point, -qn, qp, grad_factor)

    def ours(mode):
        def forward():
            with kernels.forced(mode):
                return LSQFakeQuantize.apply(x, scale_view, None, qn, qp, grad_factor)
        return forward

    out_buf, grad_buf = torch.empty_like(x), torch.empty_like(x)

    def floor_fresh():  # a forward+backward writes two new tensors: read x, write out; read grad, write grad_x
        x.detach().clone()
        grad.clone()

    def floor_reused():  # the same traffic into memory that is already mapped
        out_buf.copy_(x.detach())
        grad_buf.copy_(grad)

    fns = {
        "ours": fwd_bwd(ours("auto")),
        "ours_eager": fwd_bwd(ours("eager")),
        "builtin": fwd_bwd(builtin),
        "plain_ops": fwd_bwd(lambda: _reference(x, scale_view, qn, qp)),
        "floor_fresh": floor_fresh,
        "floor_reused": floor_reused,
    }
    times = interleaved_times(fns, repeats, warmup, device)
    result = {"shape": list(shape), "numel": x.numel(), "bits": bits, "per_channel": per_channel, "dtype": str(dtype),
              "compiled": kernels.uses_compiled(device, x.numel()), "repeats": repeats}
    result["ms"] = {name: median(t) * 1e3 for name, t in times.items()}
    result["builtin_over_ours"] = median_ratio(times["builtin"], times["ours"])
    result["ours_over_floor_fresh"] = median_ratio(times["ours"], times["floor_fresh"])
    result["ours_over_floor_reused"] = median_ratio(times["ours"], times["floor_reused"])
    moved = 4 * x.numel() * x.element_size()
    result["floor_gb_per_s"] = moved / median(times["floor_reused"]) / 1e9
    return result
