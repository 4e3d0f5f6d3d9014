"""How far two forms of one model (QC and folded, folded and integer deploy, and later the exported graph)
are apart on a batch of images."""

from __future__ import annotations

import torch


def decoded(out) -> torch.Tensor:
    """The decoded predictions in an eval-mode output: (y, raw) for detection, ((y, protos), raw) for
    segmentation (there the mask coefficients are part of y)."""
    while isinstance(out, (tuple, list)):
        out = out[0]
    return out


@torch.no_grad()
def output_diff(a: torch.nn.Module, b: torch.nn.Module, imgs: torch.Tensor) -> tuple[float, float]:
    """(max, mean) absolute difference of two models' decoded predictions (boxes in pixels, class scores).

    Equal in exact arithmetic, the two can differ where float rounding moves an activation across a
    rounding threshold of the next quantizer: rare, but one such flip changes that activation by a whole
    step and the change cascades through the later low-bit layers (on the default W3A3 model the deploy
    form differs by > 1e-3 in half of the last layers' outputs, yet its mAP is the same to 0.001). The max
    is an outlier measure; the mean and the mAP say how much it matters.
    """
    outs = []
    for m in (a, b):
        m.eval()
        outs.append(decoded(m(imgs)))
    diff = (outs[0] - outs[1]).abs()
    return float(diff.max()), float(diff.mean())
