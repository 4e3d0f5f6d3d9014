"""A Conv2d whose weight and input go through LSQ fake quantizers."""

import torch
from torch import nn

from .config import QuantConfig
from .fused_conv import FakeQuantInputConv2d, fusable
from .lsq import LSQQuantizer

_ACT_SIGNED = {"auto": None, "signed": True, "unsigned": False}


class QuantConv2d(nn.Conv2d):
    """conv(act_quantizer(x), weight_quantizer(weight)) + bias.

    The float weight stays the trained (latent) parameter. A quantizer that is None (bits None)
    passes its tensor through unchanged. `correction`, when set (quantization correction, see
    correction.py), is applied to the conv's output: it sits before the BN that follows.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        device=None,
        dtype=None,
        *,
        w_bits: int | None = None,
        a_bits: int | None = None,
        config: QuantConfig | None = None,
    ):
        super().__init__(
            in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
            padding_mode, device, dtype,
        )
        config = config if config is not None else QuantConfig()
        self.weight_quantizer = None
        if w_bits is not None:
            self.weight_quantizer = LSQQuantizer(
                w_bits, signed=True, per_channel=config.per_channel, channel_axis=0,
                init_method=config.scale_init, num_channels=out_channels, device=device,
            )
        self.act_quantizer = None
        if a_bits is not None:
            self.act_quantizer = LSQQuantizer(
                a_bits, signed=_ACT_SIGNED[config.act_signed], asymmetric=config.act_asymmetric,
                integer_zero_point=config.act_zero_point == "integer",
                per_sample=True, init_method=config.scale_init, device=device,
            )
        self.register_module("correction", None)

    @property
    def w_bits(self) -> int | None:
        return None if self.weight_quantizer is None else self.weight_quantizer.bits

    @property
    def a_bits(self) -> int | None:
        return None if self.act_quantizer is None else self.act_quantizer.bits

    @classmethod
    def from_float(
        cls, conv: nn.Conv2d, w_bits: int | None, a_bits: int | None, config: QuantConfig
    ) -> "QuantConv2d":
        """A quantized copy of conv (same values, no shared tensors)."""
        qconv = cls(**_conv_hyperparameters(conv), w_bits=w_bits, a_bits=a_bits, config=config)
        _copy_parameters(conv, qconv)
        return qconv.train(conv.training)

    def to_float(self) -> nn.Conv2d:
        """A plain conv holding an exact copy of the latent float weight and bias."""
        conv = nn.Conv2d(**_conv_hyperparameters(self))
        _copy_parameters(self, conv)
        return conv.train(self.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight if self.weight_quantizer is None else self.weight_quantizer(self.weight)
        q = self.act_quantizer
        if q is not None and q.plain and fusable(self):
            # One node that saves x rather than both x and q(x) (fused_conv.py).
            out = FakeQuantInputConv2d.apply(
                x, *q.fake_quant_args(x), weight, self.bias, self.stride, self.padding, self.dilation, self.groups
            )
        else:
            out = self._conv_forward(x if q is None else q(x), weight, self.bias)
        return out if self.correction is None else self.correction(out)


def _conv_hyperparameters(conv: nn.Conv2d) -> dict:
    return dict(
        in_channels=conv.in_channels,
        out_channels=conv.out_channels,
        kernel_size=conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=conv.groups,
        bias=conv.bias is not None,
        padding_mode=conv.padding_mode,
        device=conv.weight.device,
        dtype=conv.weight.dtype,
    )


@torch.no_grad()
def _copy_parameters(src: nn.Conv2d, dst: nn.Conv2d) -> None:
    dst.weight.copy_(src.weight)
    dst.weight.requires_grad_(src.weight.requires_grad)
    if src.bias is not None:
        dst.bias.copy_(src.bias)
        dst.bias.requires_grad_(src.bias.requires_grad)
