"""How far the exported graph's outputs are from the PyTorch deploy form's on a batch, in LSB.

The outputs are floats (decoded boxes in pixels, sigmoid scores, mask coefficients, prototypes), not quantized
tensors, so each output part gets the step of an 8-bit grid over its own range in the reference:
LSB = (max - min) / 255, and for the class scores, which are probabilities, at least 1/255 (an untrained model's
scores span almost nothing). Exact arithmetic would give 0; float rounding in another runtime can move an activation
across a rounding threshold of the next quantizer, and that one step cascades through the later low-bit
layers (eval/output_diff.py), so the check reports the share of elements within 2 LSB as well as the maximum.
"""

from __future__ import annotations

import torch

TOLERANCE_LSB = 2.0
MIN_RANGE = {"scores": 1.0}  # sigmoid outputs: the 8-bit grid of [0, 1] at the least


def output_parts(out, nc: int) -> dict[str, torch.Tensor]:
    """An eval-mode output split into its parts: boxes, scores, and for -seg models mask coefficients and
    prototypes."""
    y = out[0]
    protos = None
    if isinstance(y, (tuple, list)):  # segmentation: ((decoded, prototypes), raw)
        y, protos = y
    parts = {"boxes": y[:, :4], "scores": y[:, 4:4 + nc]}
    if protos is not None:
        parts["mask_coefficients"] = y[:, 4 + nc:]
        parts["prototypes"] = protos
    return parts


@torch.no_grad()
def compare_outputs(reference: torch.nn.Module, exported: torch.nn.Module, images: torch.Tensor, nc: int) -> dict:
    """onnx_max_diff / onnx_mean_diff (absolute), onnx_max_lsb (the largest difference in LSB of its part) and
    onnx_within_2lsb (the share of all elements within 2 LSB), plus the same per part under "parts"."""
    reference.eval()
    ref = output_parts(reference(images), nc)
    got = output_parts(exported(images), nc)
    per_part, within, total, max_diff, sum_diff = {}, 0, 0, 0.0, 0.0
    for name, r in ref.items():
        r, g = r.float().cpu(), got[name].float().cpu()
        if r.shape != g.shape:
            raise ValueError(f"exported output {name} has shape {tuple(g.shape)}, the deploy form {tuple(r.shape)}")
        lsb = max(float(r.max() - r.min()), MIN_RANGE.get(name, 0.0), 1e-12) / 255
        diff = (r - g).abs()
        ok = int((diff <= TOLERANCE_LSB * lsb).sum())
        per_part[name] = {"lsb": lsb, "max_diff": float(diff.max()), "max_lsb": float(diff.max()) / lsb,
                          "within_2lsb": ok / diff.numel()}
        within, total = within + ok, total + diff.numel()
        max_diff, sum_diff = max(max_diff, float(diff.max())), sum_diff + float(diff.sum())
    return {"onnx_max_diff": max_diff, "onnx_mean_diff": sum_diff / total,
            "onnx_max_lsb": max(p["max_lsb"] for p in per_part.values()), "onnx_within_2lsb": within / total,
            "parts": per_part}
