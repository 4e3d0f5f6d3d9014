"""Initial quantizer scales from data."""

import math

import torch

from .grid import fake_quantize

INIT_METHODS = ("lsq", "mse", "minmax")
# Candidate scales of the MSE search, as fractions of the max-based scale: below 1 the grid
# clips outliers to resolve the bulk of the values more finely.
MSE_FRACTIONS = torch.linspace(0.05, 1.0, 100).tolist()
# Candidates x values evaluated at once by the MSE search: few kernel launches, ~16 MiB temporaries.
MSE_CHUNK_ELEMENTS = 2**22
# Keeps v / s finite for all-zero data (e.g. a dead channel).
MIN_SCALE = 1e-8


def initial_scale(
    v: torch.Tensor, vmin: torch.Tensor, vmax: torch.Tensor, qn: int, qp: int, method: str
) -> torch.Tensor:
    """Scale per row of v ([C, K] -> [C]) for the grid -Qn..Qp.

    vmin/vmax ([C]) are the extremes the grid should reach; they may come from more data than
    the rows of v (a sample).
    "lsq": 2 * mean|v| / sqrt(Qp) (Esser et al.). "minmax": the smallest scale that clips
    nothing. "mse": the candidate scale with the least mean squared quantization error on v.
    """
    if method == "lsq":
        return (2 * v.abs().mean(dim=1) / math.sqrt(qp)).clamp(min=MIN_SCALE)
    reach = torch.maximum(-vmin, vmax) if qn > 0 else vmax.clamp(min=0)
    max_scale = (reach / qp).clamp(min=MIN_SCALE)
    if method == "minmax":
        return max_scale
    if method == "mse":
        return _mse_search(v, max_scale, qn, qp)
    raise ValueError(f"init_method={method!r} is unknown: use one of {', '.join(INIT_METHODS)}")


def _mse_search(v: torch.Tensor, max_scale: torch.Tensor, qn: int, qp: int) -> torch.Tensor:
    fractions = torch.tensor(MSE_FRACTIONS, device=v.device)
    candidates = (fractions[:, None] * max_scale[None, :]).clamp(min=MIN_SCALE)  # [T, C]
    chunk = max(1, MSE_CHUNK_ELEMENTS // v.numel())
    errors = torch.cat([
        (fake_quantize(v, scales[:, :, None], qn, qp) - v).square().mean(dim=2)
        for scales in candidates.split(chunk)
    ])  # [T, C]
    best = errors.argmin(dim=0)  # the first (smallest) candidate among equals
    return candidates.gather(0, best[None])[0]
