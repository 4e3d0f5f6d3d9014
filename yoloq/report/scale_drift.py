"""How far QAT moved the quantization scales from where calibration put them: `yoloq scale-drift START.pt END.pt`,
START the calibrated model (a run of `trainer.qat.epochs=0`, same seed) and END a trained one. Per kind (weight and
activation quantizers), the median over quantizers of each scale's relative change |end - start| / |start| (a
per-channel scale: the mean over its channels), its 10th and 90th percentiles, the signed median and the share
of quantizers whose scale grew. Adam moves a parameter by about its lr per step whatever its size, so scales of
different magnitude move at different relative speeds; this shows whether a kind barely moved at all."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from yoloq.checkpoint import load_checkpoint
from yoloq.errors import UserError

KINDS = {"weight": "weight_quantizer.scale", "activation": "act_quantizer.scale"}


def _relative_changes(start: dict, end: dict, suffix: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(|relative change|, signed relative change, the start scales' means), one entry per quantizer."""
    keys = sorted(k for k in start if k.endswith(suffix))
    unmatched = [k for k in keys if k not in end or end[k].shape != start[k].shape]  # e.g. per-tensor vs per-channel
    if unmatched:
        raise UserError(f"the second checkpoint has no {unmatched[0]} of the same shape (and {len(unmatched) - 1} "
                        "more): the two are not the same quantized model; give the calibrated start and a trained "
                        "run of one config")
    rel = [((end[k].float() - start[k].float()) / start[k].float().abs()) for k in keys]
    return (torch.stack([r.abs().mean() for r in rel]), torch.stack([r.mean() for r in rel]),
            torch.stack([start[k].float().mean() for k in keys]))


def scale_drift(start: dict, end: dict) -> dict[str, dict]:
    """{kind: {n, start_median, median, p10, p90, signed_median, share_up}} for the kinds present in start."""
    out = {}
    for kind, suffix in KINDS.items():
        if not any(k.endswith(suffix) for k in start):
            continue
        moved, signed, size = _relative_changes(start, end, suffix)
        out[kind] = {"n": len(moved), "start_median": size.median().item(), "median": moved.median().item(),
                     "p10": moved.quantile(0.1).item(), "p90": moved.quantile(0.9).item(),
                     "signed_median": signed.median().item(), "share_up": (signed > 0).float().mean().item()}
    if not out:
        raise UserError("the first checkpoint holds no quantizer scales: give a quantized model (qat.pt of a run)")
    return out


def format_drift(drift: dict[str, dict]) -> str:
    lines = ["| quantizers | n | scale at start (median) | relative change: median [p10, p90] | signed median | grew |",
             "|---|---|---|---|---|---|"]
    for kind, d in drift.items():
        lines.append(f"| {kind} | {d['n']} | {d['start_median']:.4g} | {100 * d['median']:.1f}% "
                     f"[{100 * d['p10']:.1f}%, {100 * d['p90']:.1f}%] | {100 * d['signed_median']:+.1f}% | "
                     f"{100 * d['share_up']:.0f}% |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="yoloq scale-drift", description=__doc__.splitlines()[0])
    parser.add_argument("start", type=Path, help="the calibrated model: qat.pt of a trainer.qat.epochs=0 run")
    parser.add_argument("end", type=Path, help="a trained model of the same config: qat.pt of a run")
    args = parser.parse_args(argv)
    try:
        start, end = (load_checkpoint(p, "give qat.pt of a run of scripts/train.py")["model"]
                      for p in (args.start, args.end))
        print(format_drift(scale_drift(start, end)))
    except (UserError, KeyError) as e:
        msg = e if isinstance(e, UserError) else f"a checkpoint has no {e} entry: give qat.pt of a run"
        print(f"error: {msg}", file=sys.stderr)
        return 2
    return 0
