"""What a layer costs: MACs of every quantizable conv at the model's input size (one image), its BOPs (MACs x
weight bits x activation bits, the usual mixed-precision compute measure) and its weight bytes at its bit width."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from yoloq.quant.prepare import quantizable_convs

Bits = tuple[int, int]  # (weight bits, activation bits)


def probe_forward(model: nn.Module, imgsz: int, channels: int, handles: list) -> None:
    """One eval-mode, no-grad forward pass of a blank image for the hooks behind `handles` (removed after);
    the model's train/eval mode is restored."""
    training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, channels, imgsz, imgsz, device=next(model.parameters()).device))
    finally:
        model.train(training)
        for h in handles:
            h.remove()


def conv_macs(model: nn.Module, imgsz: int, channels: int = 3) -> dict[str, int]:
    """MACs of every quantizable conv (and transposed conv) for one imgsz x imgsz image, by module name, counted
    from the shapes a forward pass produces (so strides, padding and upsampling are the model's own)."""
    convs = quantizable_convs(model)
    names = {id(m): n for n, m in convs.items()}
    macs: dict[str, int] = {}

    def hook(module, inputs, output):
        k = module.weight[0].numel()  # in_channels / groups x kernel area (out / groups for a transposed conv)
        if isinstance(module, nn.ConvTranspose2d):  # every input element is spread over out_channels x kernel
            macs[names[id(module)]] = inputs[0][0].numel() * module.weight.shape[1] * module.weight[0, 0].numel()
        else:
            macs[names[id(module)]] = output[0].numel() * k

    probe_forward(model, imgsz, channels, [m.register_forward_hook(hook) for m in convs.values()])
    missing = [n for n in convs if n not in macs]
    if missing:
        raise ValueError(f"convs not reached by a forward pass, so without a cost: {', '.join(missing)}")
    return {n: macs[n] for n in convs}


def bops(macs: Mapping[str, int], bits: Mapping[str, Bits]) -> int:
    """Sum over layers of MACs x weight bits x activation bits."""
    return sum(m * bits[n][0] * bits[n][1] for n, m in macs.items())


def weight_bytes(model: nn.Module, bits: Mapping[str, Bits]) -> float:
    """The quantized convs' weights at their bit widths, in bytes (scales, biases and BN not counted)."""
    convs = quantizable_convs(model)
    return sum(convs[n].weight.numel() * bits[n][0] for n in bits) / 8


def model_cost(model: nn.Module, imgsz: int) -> dict:
    """A quantized model's compute and average precision, for results.json and the results table: GBOPs,
    the MAC-weighted average weight and activation bits (a float conv, e.g. unquantized, counts 32)."""
    macs = conv_macs(model, imgsz)
    convs = quantizable_convs(model)
    bits = {n: (getattr(convs[n], "w_bits", None) or 32, getattr(convs[n], "a_bits", None) or 32) for n in macs}
    total = sum(macs.values())
    return {"GBOPs": bops(macs, bits) / 1e9, "avg_w_bits": sum(macs[n] * bits[n][0] for n in macs) / total,
            "avg_a_bits": sum(macs[n] * bits[n][1] for n in macs) / total}
