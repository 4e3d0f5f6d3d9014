"""The deploy form as ONNX's QDQ vocabulary: modules whose forward is the deploy form's arithmetic and whose trace
(torch.onnx.export, TorchScript exporter) is QuantizeLinear -> [Clip] -> DequantizeLinear for activations and an
integer initializer -> DequantizeLinear for weights.

A b-bit activation (b <= 8) is quantized to int8 (signed grid) or uint8 (unsigned) with zero point 0, then
clipped to its b-bit range -Qn..Qp (the Clip is left out at 8 bits, where the range is the type's own), then
dequantized: clip(round(x / s), -Qn, Qp) * s, exactly LSQ's forward. An asymmetric grid trained with an integer
zero point z (quant.act_zero_point=integer) is uint8 with that zero point: (clip(round(x / s) + z, 0, Qp) - z) * s.
LSQ+'s float offset is not a whole number of steps, so it cannot be a zero point without changing the model: it
stays a float Sub before and Add after the QDQ pair. Weights are the deploy form's integers as an int8 initializer
with its per-channel scales (BN and QC folded in); the float DFL projection is an ordinary Conv.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from yoloq.errors import UserError
from yoloq.quant.deploy import DeployConv2d
from yoloq.quant.grid import fake_quantize
from yoloq.quant.lsq import LSQQuantizer
from yoloq.quant.prepare import _swap
from yoloq.quant.qconv_transpose import QuantConvTranspose2d

IMAGE_GRID = 1 / 255  # the stem's 8-bit input grid (quant.input_grid)


class QuantizeDequantize(torch.autograd.Function):
    """(clip(round(x / s) + z, lo, hi) - z) * s with zero point z (0 on a signed grid), traced as
    QuantizeLinear -> Clip(lo, hi) -> DequantizeLinear."""

    @staticmethod
    def forward(ctx, x, scale, lo: int, hi: int, zero: int = 0):
        if zero == 0:
            return fake_quantize(x, scale, -lo, hi)
        return (torch.clamp(torch.round(x / scale) + zero, lo, hi) - zero) * scale

    @staticmethod
    def symbolic(g, x, scale, lo: int, hi: int, zero: int = 0):
        dtype = torch.int8 if lo < 0 else torch.uint8
        zero = g.op("Constant", value_t=torch.tensor(zero, dtype=dtype))
        q = g.op("QuantizeLinear", x, scale, zero)
        info = torch.iinfo(dtype)
        if (lo, hi) != (info.min, info.max):
            q = g.op("Clip", q, g.op("Constant", value_t=torch.tensor(lo, dtype=dtype)),
                     g.op("Constant", value_t=torch.tensor(hi, dtype=dtype)))
        return g.op("DequantizeLinear", q, scale, zero)


class DequantizeWeight(torch.autograd.Function):
    """integers * scale (one scale per slice along `axis`, or one for all), traced as DequantizeLinear."""

    @staticmethod
    def forward(ctx, integers, scale, axis: int):
        shape = [1] * integers.dim()
        if scale.dim():
            shape[axis] = -1
        return integers.float() * scale.float().view(shape)

    @staticmethod
    def symbolic(g, integers, scale, axis: int):
        n = scale.type().sizes()
        zero = g.op("Constant", value_t=torch.zeros(n, dtype=torch.int8))
        if n:
            return g.op("DequantizeLinear", integers, scale, zero, axis_i=axis)
        return g.op("DequantizeLinear", integers, scale, zero)


def is_image_grid(q: LSQQuantizer) -> bool:
    """The stem's fixed 8-bit unsigned grid of the image (1/255): exact on images, whose values are k/255."""
    return (q.bits == 8 and q.qn == 0 and q.scale.numel() == 1
            and (q.offset is None or not bool(q.offset.detach().any()))  # an asymmetric one fixed at offset 0
            and math.isclose(float(q.scale.detach()), IMAGE_GRID, rel_tol=1e-6))


class QDQActivation(nn.Module):
    """An LSQQuantizer's forward as QDQ with its integer zero point, or as (Sub offset) -> QDQ -> (Add offset) for
    a float offset."""

    def __init__(self, q: LSQQuantizer):
        super().__init__()
        if q.per_channel:
            raise ValueError("per-channel activation quantizers have no QDQ export")
        self.lo, self.hi = -q.qn, q.qp
        self.zero = int(q.zero_point())
        self.scale = nn.Parameter(q.scale.detach().float().clone(), requires_grad=False)
        self.offset = nn.Parameter(q.offset.detach().float().clone(), requires_grad=False) if q.float_offset else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = x if self.offset is None else x - self.offset
        out = QuantizeDequantize.apply(v, self.scale, self.lo, self.hi, self.zero)
        return out if self.offset is None else out + self.offset


def _activation(q: LSQQuantizer | None, tensorrt: bool) -> nn.Module:
    if q is None or (tensorrt and is_image_grid(q)):  # images arrive on the grid: the QDQ pair is an identity
        return nn.Identity()
    return QDQActivation(q)


class QDQConv2d(nn.Module):
    """A DeployConv2d: conv(QDQ(x), DequantizeLinear(weight_int, channel_scale)) + bias."""

    def __init__(self, deploy: DeployConv2d, tensorrt: bool = False):
        super().__init__()
        self.stride, self.padding, self.dilation, self.groups = (deploy.stride, deploy.padding, deploy.dilation,
                                                                 deploy.groups)
        self.act = _activation(deploy.act_quantizer, tensorrt)
        self.register_buffer("weight_int", deploy.weight_int.clone())
        self.register_buffer("weight_scale", deploy.channel_scale.float().clone())
        self.register_buffer("bias", deploy.bias.float().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = DequantizeWeight.apply(self.weight_int, self.weight_scale, 0)
        return F.conv2d(self.act(x), weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


class QDQConvTranspose2d(nn.Module):
    """A QuantConvTranspose2d (the -seg prototype upsampler, which has no BN to fold): its weight integers and
    scales (per output channel along axis 1, or one), and its input QDQ."""

    def __init__(self, conv: QuantConvTranspose2d, tensorrt: bool = False):
        super().__init__()
        wq = conv.weight_quantizer
        if wq is None or wq.bits > 8:
            raise ValueError("the QDQ export needs weights of at most 8 bits on every quantized transposed conv")
        self.stride, self.padding, self.output_padding = conv.stride, conv.padding, conv.output_padding
        self.groups, self.dilation = conv.groups, conv.dilation
        self.act = _activation(conv.act_quantizer, tensorrt)
        self.register_buffer("weight_int", wq.integers(conv.weight).to(torch.int8))
        self.register_buffer("weight_scale", wq.scale.detach().float().clone())
        self.register_buffer("bias", None if conv.bias is None else conv.bias.detach().float().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = DequantizeWeight.apply(self.weight_int, self.weight_scale, 1)
        return F.conv_transpose2d(self.act(x), weight, self.bias, self.stride, self.padding, self.output_padding,
                                  self.groups, self.dilation)


def to_qdq(model: nn.Module, tensorrt: bool = False) -> nn.Module:
    """Replaces, in place, every DeployConv2d and QuantConvTranspose2d by its QDQ module; returns the model.
    tensorrt=True drops the QDQ pair of the image grid (TensorRT takes signed int8 only, and that pair is exact
    on images) and refuses any other unsigned or asymmetric activation."""
    swaps = {}
    for name, m in model.named_modules():
        if isinstance(m, (DeployConv2d, QuantConvTranspose2d)):
            if tensorrt:
                _check_tensorrt(name, m)
            swaps[id(m)] = (QDQConv2d if isinstance(m, DeployConv2d) else QDQConvTranspose2d)(m, tensorrt)
    return _swap(model, swaps)


def _check_tensorrt(name: str, m: nn.Module) -> None:
    q = m.act_quantizer  # weights of fewer bits are int8 values in a smaller range: TensorRT runs them as they are
    if q is not None and q.bits != 8:
        raise UserError(f"layer {name} takes {q.bits}-bit activations: the TensorRT QDQ graph is for W8A8 models "
                        "(bits=8), whose activations need no Clip; export lower bits without export.tensorrt=true")
    if q is not None and not is_image_grid(q) and (q.offset is not None or q.qn == 0):
        raise UserError(f"layer {name} has an unsigned or asymmetric activation grid, which TensorRT does not take "
                        "(signed int8, zero point 0): train with quant.act_signed=signed quant.act_asymmetric=false")
