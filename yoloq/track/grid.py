"""Where the latent weights sit relative to the quantization grid (PAPER.md Fig. 2a): the fractional part
of w/s of every unclipped weight of the low-bit layers. A weight within 0.05 of 0.5 sits next to a rounding
threshold, where a small update flips its integer: the weights that oscillate. Uniformly spread weights
would put 10% there."""

from __future__ import annotations

import numpy as np
import torch

from yoloq.methods.oscillation import tracked_convs

NEAR = 0.05  # distance from a rounding threshold that counts as "near"


@torch.no_grad()
def grid_offsets(model, max_bits: int = 4) -> dict[str, np.ndarray]:
    """Per low-bit conv: the fractional parts (w - offset)/s - floor(...) of its weights inside the clip range."""
    out = {}
    for name, conv in tracked_convs(model, max_bits).items():
        q = conv.weight_quantizer
        x = conv.weight.detach() / q.scale_like(conv.weight)
        inside = (x > -q.qn - 0.5) & (x < q.qp + 0.5)  # clipped weights do not round to their nearest level
        x = x[inside]
        out[name] = (x - torch.floor(x)).float().cpu().numpy()
    return out


def near_threshold_share(fracs: np.ndarray, near: float = NEAR) -> float:
    return float(np.mean(np.abs(fracs - 0.5) < near)) if fracs.size else float("nan")


def grid_summary(model, max_bits: int = 4, bins: int = 50) -> dict:
    """The histogram of fractional parts over all low-bit layers, and each layer's share near a threshold."""
    offsets = grid_offsets(model, max_bits)
    every = np.concatenate(list(offsets.values())) if offsets else np.zeros(0)
    density, edges = np.histogram(every, bins=bins, range=(0.0, 1.0), density=every.size > 0)
    return {"bin_edges": edges.tolist(), "density": density.tolist(), "near": NEAR,
            "near_pct": 100 * near_threshold_share(every),
            "per_layer_near_pct": {n: 100 * near_threshold_share(f) for n, f in offsets.items()}}
