"""Shared helpers for the quantization tests."""

import torch

from yoloq.quant import LSQQuantizer


def ready_quantizer(bits, scale, signed=True, offset=None, **kwargs) -> LSQQuantizer:
    """An initialised quantizer with the given scale (and offset), set through load_state_dict."""
    scale = torch.as_tensor(scale, dtype=torch.float32)
    asymmetric = offset is not None or kwargs.get("integer_zero_point", False)
    q = LSQQuantizer(
        bits, signed=False if asymmetric else signed, asymmetric=asymmetric,
        num_channels=max(scale.numel(), 1), **kwargs,
    )
    state = {"scale": scale, "signed": torch.tensor(signed and not asymmetric), "initialized": torch.tensor(True)}
    if asymmetric:
        state["offset"] = torch.as_tensor(offset, dtype=torch.float32)
    q.load_state_dict(state)
    return q


def quantize_with_grads(q: LSQQuantizer, x, grad_out=None):
    """Output and the gradients of sum(out * grad_out) w.r.t. x, scale and offset."""
    x = torch.as_tensor(x, dtype=torch.float32).clone().requires_grad_(True)
    out = q(x)
    out.backward(torch.ones_like(out) if grad_out is None else grad_out)
    offset_grad = None if q.offset is None else q.offset.grad
    return out.detach(), x.grad, q.scale.grad, offset_grad
