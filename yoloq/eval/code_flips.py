"""Where two fake-quantized forms of one model part: per quantized conv, the share of its input activation codes
that differ on a batch (e.g. the QC model and its BN-folded form).

Folding changes float rounding by ~1e-7 relative, so an activation that lies that close to a rounding threshold
flips to the next code. A flip in an early layer spreads through the later low-bit layers: on the issue 16 runs
one flipped code at the input of the second conv reached 4-10% of the head's codes and a maximum output
difference of 33-59 pixels, while a flip at the 8-bit head alone gave under 0.1 (docs/RESULTS.md)."""

from __future__ import annotations

import torch
from torch import nn

from yoloq.quant.qconv import QuantConv2d


@torch.no_grad()
def activation_codes(model: nn.Module, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each QuantConv2d's input integers (its act quantizer's codes, int16: up to 8 bits) on `images`, in forward
    order; puts the model in eval mode."""
    codes, hooks = {}, []

    def keep(name, quantizer):
        return lambda _, inputs: codes.__setitem__(name, quantizer.integers(inputs[0]).to(torch.int16))

    for name, conv in model.named_modules():
        if isinstance(conv, QuantConv2d) and conv.act_quantizer is not None:
            hooks.append(conv.register_forward_pre_hook(keep(name, conv.act_quantizer)))
    try:
        model.eval()(images)
    finally:
        for hook in hooks:
            hook.remove()
    return codes


def code_flips(a: nn.Module, b: nn.Module, images: torch.Tensor) -> dict[str, float]:
    """layer -> share of its input codes that differ between models a and b (same architecture), in forward order."""
    codes_a, codes_b = activation_codes(a, images), activation_codes(b, images)
    return {name: (codes_a[name] != codes_b[name]).float().mean().item() for name in codes_a if name in codes_b}


def flip_summary(flips: dict[str, float]) -> str:
    """One line for the log: where the first flipped code is and how far the flips spread."""
    flipped = [name for name, share in flips.items() if share > 0]
    if not flipped:
        return f"no activation code differs in {len(flips)} quantized layers"
    last = next(reversed(flips))
    return (f"activation codes differ in {len(flipped)} of {len(flips)} quantized layers, first at {flipped[0]} "
            f"({100 * flips[flipped[0]]:.4f}% of its codes), {100 * flips[last]:.4f}% at the last ({last})")
