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


def zero_point_scale(
    v: torch.Tensor, vmin: torch.Tensor, vmax: torch.Tensor, qp: int, method: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, zero point) per row of v for the grid 0..Qp used as (q - z) * s with an integer z in 0..Qp.

    The scale is chosen as for the unsigned grid over v - vmin, with z = round(-vmin / s); "mse" scores each
    candidate with its own rounded z (rounding z after the search would shift the grid by up to half a step from
    the one the search scored)."""
    shifted_max = vmax - vmin
    if method != "mse":
        scale = initial_scale(v - vmin[:, None], torch.zeros_like(vmin), shifted_max, 0, qp, method)
    else:
        scale = _mse_search(v, (shifted_max / qp).clamp(min=MIN_SCALE), 0, qp, vmin)
    return scale, _zero_point(vmin, scale, qp)


def _zero_point(vmin: torch.Tensor, scale: torch.Tensor, qp: int) -> torch.Tensor:
    return torch.round(-vmin / scale).clamp(0, qp)


def _mse_search(v: torch.Tensor, max_scale: torch.Tensor, qn: int, qp: int,
                vmin: torch.Tensor | None = None) -> torch.Tensor:
    """The candidate scale with the least squared error on v; with vmin, on the grid shifted by each candidate's
    integer zero point (zero_point_scale)."""
    fractions = torch.tensor(MSE_FRACTIONS, device=v.device)
    candidates = (fractions[:, None] * max_scale[None, :]).clamp(min=MIN_SCALE)  # [T, C]
    chunk = max(1, MSE_CHUNK_ELEMENTS // v.numel())
    errors = []
    for scales in candidates.split(chunk):
        s = scales[:, :, None]
        shift = 0.0 if vmin is None else _zero_point(vmin[None, :, None], s, qp) * s
        errors.append((fake_quantize(v + shift, s, qn, qp) - shift - v).square().mean(dim=2))
    best = torch.cat(errors).argmin(dim=0)  # [T, C] -> [C]: the first (smallest) candidate among equals
    return candidates.gather(0, best[None])[0]
