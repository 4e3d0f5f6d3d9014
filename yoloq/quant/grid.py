"""The integer grid of a b-bit quantizer and rounding onto it (no gradients here)."""

import torch


def int_range(bits: int, signed: bool) -> tuple[int, int]:
    """(Qn, Qp): the grid is the integers -Qn..Qp."""
    if signed:
        return 2 ** (bits - 1), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


def fake_quantize(v: torch.Tensor, scale: torch.Tensor, qn: int, qp: int) -> torch.Tensor:
    """clip(round(v / s), -Qn, Qp) * s. torch.round sends ties to the even integer."""
    return torch.clamp(torch.round(v / scale), -qn, qp) * scale


def soft_round(x: torch.Tensor, k: float) -> torch.Tensor:
    """round(x) where x is within k of an integer, else x unchanged (the paper's Table 1 analysis)."""
    r = torch.round(x)
    return torch.where((x - r).abs() <= k, r, x)
