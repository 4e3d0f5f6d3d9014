"""conv2d of a fake-quantized input as one autograd node that keeps the float input, not the quantized one.

Run as two nodes, autograd saves two full-size tensors per layer: the quantizer's input x (for
its own backward) and the conv's input q(x) (for the weight gradient). This node saves x alone
and recomputes q(x) in backward (one fused pass), so a quantized conv keeps as much for backward as
a float one. Values and gradients are those of the two nodes, bit for bit.
"""

import torch
import torch.nn.functional as F

from . import kernels
from .lsq import quantizer_backward


class FakeQuantInputConv2d(torch.autograd.Function):
    """conv2d(fake_quant(x), weight, bias); fake_quant as LSQFakeQuantize with (scale, offset, qn, qp,
    grad_scale), conv with (stride, padding, dilation, groups), padding given as integers."""

    @staticmethod
    def forward(ctx, x, scale, offset, qn, qp, grad_scale, weight, bias, stride, padding, dilation, groups):
        xq = kernels.fake_quant_forward(x, scale, offset, qn, qp)
        out = F.conv2d(xq, weight, bias, stride, padding, dilation, groups)
        ctx.save_for_backward(x, scale, offset, weight)
        ctx.quant = (qn, qp, grad_scale)
        ctx.conv = (stride, padding, dilation, groups)
        ctx.bias_sizes = None if bias is None else list(bias.shape)
        ctx.bias_dtype = None if bias is None else bias.dtype
        ctx.dtype = out.dtype  # the conv's compute dtype: autocast may have lowered it
        return out

    @staticmethod
    def backward(ctx, grad_out):
        x, scale, offset, weight = ctx.saved_tensors
        qn, qp, grad_scale = ctx.quant
        stride, padding, dilation, groups = ctx.conv
        need = ctx.needs_input_grad
        need_input = need[0] or need[1] or need[2]
        # One conv backward call for all three gradients (two calls cost more on CPU than the extra
        # elementwise pass that recomputes q(x) first). The input gradient needs only the input's shape.
        if need[6]:
            xq = kernels.fake_quant_forward(x, scale, offset, qn, qp).to(ctx.dtype)
        else:  # e.g. quantization correction, where every conv is frozen
            xq = grad_out.new_empty(1).expand(x.shape)
        grad_xq, grad_w, grad_b = torch.ops.aten.convolution_backward(
            grad_out.to(ctx.dtype), xq, weight.to(ctx.dtype), ctx.bias_sizes, stride, padding, dilation, False,
            [0, 0], groups, [need_input, need[6], need[7] and ctx.bias_sizes is not None])
        del xq  # free before the quantizer's backward
        grad_x = grad_s = grad_o = None
        if need_input:  # grad_xq is ours alone: the input gradient is written into it
            grad_x, grad_s, grad_o = quantizer_backward(grad_xq, x, scale, offset, qn, qp, grad_scale, in_place=True)
        grad_w = None if grad_w is None else grad_w.to(weight.dtype)
        grad_b = None if grad_b is None else grad_b.to(ctx.bias_dtype)
        return grad_x, grad_s, grad_o, None, None, None, grad_w, grad_b, None, None, None, None


def fusable(conv: torch.nn.Conv2d) -> bool:
    """Whether conv's arguments fit FakeQuantInputConv2d (zero padding given as integers)."""
    return conv.padding_mode == "zeros" and not isinstance(conv.padding, str)
