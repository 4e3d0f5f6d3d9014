"""The deploy form of a fake-quantized model: BN (and any QC correction) folded into each quantized conv.

Each QuantConv2d followed by an eval-mode BN becomes a DeployConv2d holding the *same* integer weights,
one float scale per output channel (a per-tensor weight scale becomes per-channel, as BN folding always
does) and a float bias; the BN becomes an identity. This is what an integer runtime executes: integer
weights times a per-channel requantization factor.

For conv -> [correction] -> BN, with W = s * W_int:
    y = w_bn (gamma (conv(a, W) + b) + beta - mu) / sigma + b_bn
      = conv(a, W_int) * (s gamma w_bn / sigma) + (w_bn (gamma b + beta - mu) / sigma + b_bn)
"""

from __future__ import annotations

import torch
from torch import nn

from .correction import conv_bn_blocks, quantized_convs
from .prepare import _swap
from .qconv import QuantConv2d


class DeployConv2d(nn.Module):
    """conv(act_quantizer(x), weight_int * channel_scale) + bias, with weight_int stored as integers."""

    def __init__(self, qconv: QuantConv2d, weight_int: torch.Tensor, channel_scale: torch.Tensor,
                 bias: torch.Tensor):
        super().__init__()
        self.stride, self.padding, self.dilation, self.groups = (qconv.stride, qconv.padding, qconv.dilation,
                                                                 qconv.groups)
        self.act_quantizer = qconv.act_quantizer
        self.register_buffer("weight_int", weight_int.to(torch.int8))
        self.register_buffer("channel_scale", channel_scale.detach().clone())
        self.register_buffer("bias", bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.act_quantizer is not None:
            x = self.act_quantizer(x)
        weight = self.weight_int.to(x.dtype) * self.channel_scale.view(-1, 1, 1, 1).to(x.dtype)
        return nn.functional.conv2d(x, weight, self.bias.to(x.dtype), self.stride, self.padding, self.dilation,
                                    self.groups)


@torch.no_grad()
def _fold(qconv: QuantConv2d, bn: nn.BatchNorm2d | None) -> DeployConv2d:
    c = qconv.out_channels
    wq = qconv.weight_quantizer
    if wq is None:
        raise ValueError("the deploy form needs quantized weights: this conv has no weight quantizer")
    scale = wq.scale.detach().float().expand(c)
    bias = qconv.bias.detach().float() if qconv.bias is not None else torch.zeros(c, device=scale.device)
    if qconv.correction is not None:
        gamma = qconv.correction.gamma.float().expand(c)
        scale, bias = scale * gamma, gamma * bias + qconv.correction.beta.float().expand(c)
    if bn is not None:
        k = bn.weight.float() / torch.sqrt(bn.running_var.float() + bn.eps)
        scale, bias = scale * k, k * (bias - bn.running_mean.float()) + bn.bias.float()
    return DeployConv2d(qconv, wq.integers(qconv.weight), scale, bias)


def to_deploy(model: nn.Module) -> nn.Module:
    """Replaces, in place, every QuantConv2d (with its BN and correction) by a DeployConv2d; returns model.

    Only for evaluation: BN statistics are taken as they are (eval mode). 8-bit layers fold the same way
    (their integers fit int8); float convs (e.g. a fixed DFL projection) are left alone.
    """
    blocks = {id(block.conv): block for block in conv_bn_blocks(model)}
    folded = {}
    for conv in quantized_convs(model):
        if conv.w_bits is not None and conv.w_bits > 8:
            raise ValueError(f"{conv.w_bits}-bit weights do not fit the int8 deploy form")
        block = blocks.get(id(conv))
        folded[id(conv)] = _fold(conv, None if block is None else block.bn)
        if block is not None:
            block.bn = nn.Identity()
    return _swap(model, folded)
