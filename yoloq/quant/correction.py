"""Quantization correction (QC, PAPER.md §4): a learned affine `gamma * h + beta` on each quantized conv's
output, trained briefly after QAT and then folded away (into the following BN, or into the conv itself
where no BN follows), so it costs nothing at inference.

Model-agnostic: a "conv + BN" pair is any module with a `conv` QuantConv2d and a `bn` BatchNorm2d
attribute (ultralytics' Conv, and most conv blocks elsewhere); every other QuantConv2d has no BN.
"""

from __future__ import annotations

import torch
from torch import nn

from .lsq import LSQQuantizer
from .qconv import QuantConv2d


class ChannelAffine(nn.Module):
    """h -> gamma * h + beta over dim 1, one value per channel (or one for all); identity at init.

    scale/shift=False keeps gamma at 1 / beta at 0 (a buffer instead of a parameter: paper Table 7).
    """

    def __init__(self, channels: int, per_channel: bool = True, scale: bool = True, shift: bool = True):
        super().__init__()
        n = channels if per_channel else 1
        gamma, beta = torch.ones(n), torch.zeros(n)
        if scale:
            self.gamma = nn.Parameter(gamma)
        else:
            self.register_buffer("gamma", gamma)
        if shift:
            self.beta = nn.Parameter(beta)
        else:
            self.register_buffer("beta", beta)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (h.dim() - 2)
        return h * self.gamma.view(shape).to(h.dtype) + self.beta.view(shape).to(h.dtype)

    def extra_repr(self) -> str:
        return f"channels={self.gamma.numel()}"


def quantized_convs(model: nn.Module) -> list[QuantConv2d]:
    return [m for m in model.modules() if isinstance(m, QuantConv2d)]


def add_corrections(model: nn.Module, per_channel: bool = True, scale: bool = True,
                    shift: bool = True) -> list[nn.Parameter]:
    """Puts an identity ChannelAffine on every QuantConv2d; returns the new trainable parameters."""
    if not (scale or shift):
        raise ValueError("a correction that learns neither scale nor shift does nothing: enable one of them")
    params = []
    for conv in quantized_convs(model):
        p = conv.weight
        conv.correction = ChannelAffine(conv.out_channels, per_channel, scale, shift).to(p.device)
        params += list(conv.correction.parameters())
    return params


def conv_bn_blocks(model: nn.Module) -> list[nn.Module]:
    """Modules whose `conv` is a QuantConv2d followed by their `bn` BatchNorm2d."""
    return [m for m in model.modules()
            if isinstance(getattr(m, "conv", None), QuantConv2d) and isinstance(getattr(m, "bn", None), nn.BatchNorm2d)]


@torch.no_grad()
def fold_into_bn(correction: ChannelAffine, bn: nn.BatchNorm2d) -> None:
    """BN(gamma h + beta) == BN'(h) for eval-mode BN: w' = w gamma, b' = b + w (beta - mu + gamma mu) / sigma."""
    sigma = torch.sqrt(bn.running_var + bn.eps)
    gamma, beta = correction.gamma.expand_as(bn.weight), correction.beta.expand_as(bn.weight)
    bn.bias.add_(bn.weight * (beta - bn.running_mean + gamma * bn.running_mean) / sigma)
    bn.weight.mul_(gamma)


@torch.no_grad()
def fold_into_conv(conv: QuantConv2d, correction: ChannelAffine) -> None:
    """gamma (conv(a, s W_int) + b) + beta == conv(a, (s gamma) W_int) + (gamma b + beta).

    The weight scale becomes per-channel (s * gamma) and the latent weight is put exactly on the new grid,
    so the integer weights are unchanged; the bias takes gamma b + beta.
    """
    gamma = correction.gamma.expand(conv.out_channels).clone()
    beta = correction.beta.expand(conv.out_channels)
    wq = conv.weight_quantizer
    if wq is None:  # a float weight: scale it directly
        conv.weight.mul_(gamma.view(-1, 1, 1, 1))
    else:
        if (gamma <= 0).any():
            raise ValueError("a correction scale <= 0 cannot be folded into a weight scale: retrain QC with a "
                             "smaller learning rate")
        w_int = wq.integers(conv.weight)
        scale = (wq.scale.detach().expand(conv.out_channels) * gamma).clone()
        per_channel = LSQQuantizer(wq.bits, signed=bool(wq.signed), per_channel=True, channel_axis=0,
                                   init_method=wq.init_method, num_channels=conv.out_channels,
                                   device=scale.device)
        per_channel.scale.copy_(scale)
        per_channel.initialized.fill_(True)
        per_channel._refresh_cache()
        per_channel.train(wq.training)
        conv.weight.copy_(w_int * scale.view(-1, 1, 1, 1))
        conv.weight_quantizer = per_channel
    if conv.bias is None:
        conv.bias = nn.Parameter(beta.clone())
    else:
        conv.bias.mul_(gamma).add_(beta)


def fold_corrections(model: nn.Module) -> int:
    """Folds every correction into its BN (or its conv where no BN follows) and removes it; returns how many."""
    with_bn = {id(block.conv): block.bn for block in conv_bn_blocks(model)}
    n = 0
    for conv in quantized_convs(model):
        if conv.correction is None:
            continue
        bn = with_bn.get(id(conv))
        if bn is not None:
            fold_into_bn(conv.correction, bn)
        else:
            fold_into_conv(conv, conv.correction)
        conv.correction = None
        n += 1
    return n


def match_state(model: nn.Module, state: dict) -> nn.Module:
    """Gives a freshly quantized model the structure a saved state has after QC: corrections where the state
    holds them, per-channel weight scales where folding made them so. Then load_state_dict fits."""
    for name, conv in model.named_modules():
        if not isinstance(conv, QuantConv2d):
            continue
        gamma = state.get(f"{name}.correction.gamma")
        if gamma is not None and conv.correction is None:
            conv.correction = ChannelAffine(conv.out_channels, per_channel=gamma.numel() > 1)
        scale = state.get(f"{name}.weight_quantizer.scale")
        wq = conv.weight_quantizer
        if scale is not None and wq is not None and scale.dim() == 1 and not wq.per_channel:
            conv.weight_quantizer = LSQQuantizer(wq.bits, signed=bool(wq.signed), per_channel=True,
                                                 init_method=wq.init_method, num_channels=conv.out_channels)
        if conv.bias is None and f"{name}.bias" in state:
            conv.bias = nn.Parameter(torch.zeros(conv.out_channels))
    return model
