"""A run's results: one entry per stage in results.json, and the final printed table."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from yoloq.eval.coco_eval import finite


@dataclass
class StageResult:
    stage: str  # fp | qat | ...
    method: str
    w_bits: int
    a_bits: int
    metrics: dict
    wall_time_s: float
    checkpoint: str
    cached: bool = False  # the FP stage was reused from the cache; wall_time_s is the original training time
    extra: dict = field(default_factory=dict)

    @property
    def bits(self) -> str:
        return "FP32" if self.w_bits >= 32 else f"W{self.w_bits}A{self.a_bits}"


def results_rows(results: list[StageResult]) -> list[dict]:
    """results.json's rows: one per stage, NaN metrics as null."""
    return [{**asdict(r), "bits": r.bits, "metrics": finite(r.metrics)} for r in results]


def format_table(results: list[StageResult]) -> str:
    """One row per stage: box mAP, and mask mAP for segmentation models."""
    masks = any("mask_mAP50-95" in r.metrics for r in results)
    cols = [("mAP50-95", 8), ("mAP50", 6)] + ([("mask_mAP50-95", 13), ("mask_mAP50", 10)] if masks else [])
    cost = next((r.extra for r in results if "GBOPs" in r.extra), None)  # the quantized model's (every stage's)
    head = f" | {'avg W/A bits':>12} | {'GBOPs':>6}" if cost else ""
    lines = [f"{'stage':<8} | {'bits':<6} | " + " | ".join(f"{c:>{w}}" for c, w in cols) + f" | {'time':>9}" + head,
             f"{'-' * 8}-+-{'-' * 6}-+-" + "-+-".join("-" * w for _, w in cols) + f"-+-{'-' * 9}"
             + ("-+-" + "-" * 12 + "-+-" + "-" * 6 if cost else "")]
    for r in results:
        t = f"{r.wall_time_s / 60:.1f} min" + ("*" if r.cached else "")
        values = " | ".join(f"{r.metrics.get(c, float('nan')):>{w}.4f}" for c, w in cols)
        tail = ""
        if cost:
            tail = (f" | {'':>12} | {'':>6}" if r.stage == "fp" else
                    f" | {cost['avg_w_bits']:>5.2f}/{cost['avg_a_bits']:<6.2f} | {cost['GBOPs']:>6.2f}")
        lines.append(f"{r.stage:<8} | {r.bits:<6} | {values} | {t:>9}{tail}")
    if any(r.cached for r in results):
        lines.append("* reused from the FP cache; time of the original training")
    return "\n".join(lines)


def print_table(results: list[StageResult]) -> None:
    print("\n" + format_table(results), flush=True)
