"""EAGL (entropy approximation guided layer selection, arXiv 2301.13330, seed 001): a trained layer's weights,
put on the high-precision grid, carry about H bits per weight, H the entropy of their integers' empirical
distribution; a layer whose H is near the low bit width loses little when lowered, one with H near the high bit
width loses most. No data, no training: seconds for a whole model.

yoloq scores a bit width b by the information it keeps, min(H, b) bits per weight, so a layer's gain for
b over the lowest choice b0 is min(H, b) - min(H, b0): with two choices, the seed's ranking by H (a layer with
H <= b0 gains nothing from more bits), and it extends to a list of bit widths."""

from __future__ import annotations

import torch
from torch import nn

from yoloq.quant.grid import int_range
from yoloq.quant.lsq import LSQQuantizer
from yoloq.quant.prepare import quantizable_convs


def weight_entropy(weight: torch.Tensor, bits: int, per_channel: bool = False) -> float:
    """Entropy in bits of the weight's integers on a b-bit signed grid with an MSE-fitted scale (per output
    channel when per_channel, the channels' integers pooled)."""
    w = weight.detach().float()
    q = LSQQuantizer(bits, signed=True, per_channel=per_channel, channel_axis=0, init_method="mse",
                     num_channels=w.shape[0])
    q.init_from(w)
    scale = q.scale.detach().reshape(-1, *([1] * (w.dim() - 1))) if per_channel else q.scale.detach()
    qn, qp = int_range(bits, True)
    ints = torch.clamp(torch.round(w / scale), -qn, qp).to(torch.int64) + qn
    p = torch.bincount(ints.flatten(), minlength=qn + qp + 1).double() / ints.numel()
    p = p[p > 0]
    return float(-(p * p.log2()).sum())


def layer_entropies(model: nn.Module, bits: int, per_channel: bool = False) -> dict[str, float]:
    """weight_entropy of every quantizable conv, by module name (a transposed conv: per input-channel slices
    pooled the same way)."""
    return {name: weight_entropy(m.weight, bits, per_channel) for name, m in quantizable_convs(model).items()}


def eagl_gain(entropy: float, bits: int, lowest: int) -> float:
    """Bits per weight kept at `bits` beyond those kept at the lowest choice."""
    return min(entropy, bits) - min(entropy, lowest)
