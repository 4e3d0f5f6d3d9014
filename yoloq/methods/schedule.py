"""The cosine annealing that dampening (lambda) and freezing (threshold) share (Nagel et al., 2022)."""

from __future__ import annotations

import math


def cosine_anneal(start: float, end: float, progress: float, begin: float = 0.0) -> float:
    """`start` until `begin` (a share of training), then a half cosine from `start` to `end` at progress 1."""
    if progress <= begin:
        return start
    p = min((progress - begin) / max(1.0 - begin, 1e-12), 1.0)
    return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * p))
