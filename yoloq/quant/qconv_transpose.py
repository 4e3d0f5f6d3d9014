"""A ConvTranspose2d whose weight and input go through LSQ fake quantizers (e.g. the 2x upsampler of
YOLOv5-seg's prototype branch). Its weight is [in, out / groups, kH, kW]: per-channel scales run along
axis 1, the output channels (per-tensor when groups > 1, where that axis is not the output channel).

Unlike QuantConv2d it takes no QC correction and has no integer deploy form, and the oscillation
tracking, dampening and freezing of the methods follow QuantConv2d layers only."""

import torch
import torch.nn.functional as F
from torch import nn

from .config import QuantConfig
from .lsq import LSQQuantizer
from .qconv import _ACT_SIGNED, _copy_parameters


class QuantConvTranspose2d(nn.ConvTranspose2d):
    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, output_padding=0,
                 groups: int = 1, bias: bool = True, dilation=1, padding_mode: str = "zeros", device=None,
                 dtype=None, *, w_bits: int | None = None, a_bits: int | None = None,
                 config: QuantConfig | None = None):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, output_padding, groups, bias,
                         dilation, padding_mode, device, dtype)
        config = config if config is not None else QuantConfig()
        self.weight_quantizer = None
        if w_bits is not None:
            per_channel = config.per_channel and groups == 1
            self.weight_quantizer = LSQQuantizer(
                w_bits, signed=True, per_channel=per_channel, channel_axis=1, init_method=config.scale_init,
                num_channels=out_channels if per_channel else 1, device=device,
            )
        self.act_quantizer = None
        if a_bits is not None:
            self.act_quantizer = LSQQuantizer(
                a_bits, signed=_ACT_SIGNED[config.act_signed], asymmetric=config.act_asymmetric,
                integer_zero_point=config.act_zero_point == "integer",
                per_sample=True, init_method=config.scale_init, device=device,
            )

    @classmethod
    def from_float(cls, conv: nn.ConvTranspose2d, w_bits: int | None, a_bits: int | None,
                   config: QuantConfig) -> "QuantConvTranspose2d":
        """A quantized copy of conv (same values, no shared tensors)."""
        qconv = cls(**_hyperparameters(conv), w_bits=w_bits, a_bits=a_bits, config=config)
        _copy_parameters(conv, qconv)
        return qconv.train(conv.training)

    def to_float(self) -> nn.ConvTranspose2d:
        conv = nn.ConvTranspose2d(**_hyperparameters(self))
        _copy_parameters(self, conv)
        return conv.train(self.training)

    def forward(self, x: torch.Tensor, output_size=None) -> torch.Tensor:
        if self.act_quantizer is not None:
            x = self.act_quantizer(x)
        weight = self.weight if self.weight_quantizer is None else self.weight_quantizer(self.weight)
        output_padding = self._output_padding(x, output_size, self.stride, self.padding, self.kernel_size, 2,
                                              self.dilation)
        return F.conv_transpose2d(x, weight, self.bias, self.stride, self.padding, output_padding, self.groups,
                                  self.dilation)


def _hyperparameters(conv: nn.ConvTranspose2d) -> dict:
    return dict(in_channels=conv.in_channels, out_channels=conv.out_channels, kernel_size=conv.kernel_size,
                stride=conv.stride, padding=conv.padding, output_padding=conv.output_padding, groups=conv.groups,
                bias=conv.bias is not None, dilation=conv.dilation, padding_mode=conv.padding_mode,
                device=conv.weight.device, dtype=conv.weight.dtype)

