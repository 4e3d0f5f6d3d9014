"""Collect finished runs (their results.json) into a paper-style table: rows are methods, columns bit
widths, cells mAP@0.5:0.95 as mean ± std over seeds; also as CSV and a bar chart. A `_qc` run contributes
two rows: its QAT stage under the base method's name and its folded QC stage as `<base>+QC`."""

from __future__ import annotations

import csv
import json
import statistics
from collections import defaultdict
from pathlib import Path

from omegaconf import OmegaConf

from yoloq.track.plots import method_comparison, save

METRICS = ("mAP50-95", "mAP50", "mask_mAP50-95", "mask_mAP50")  # box, and mask for -seg runs
ORDER = ["lsq", "lsq+QC", "dampen", "dampen+QC", "freeze", "freeze+QC", "ema", "ema+QC"]


def _rows_of_run(run: Path) -> list[dict]:
    results = json.loads((run / "results.json").read_text())
    cfg = OmegaConf.load(run / "config.yaml")
    rows = []
    for r in results:
        base = r["method"].removesuffix("_qc")
        label = {"qat": base, "folded": f"{base}+QC", "fp": "FP"}.get(r["stage"])
        if label is not None:
            metrics = {k: r["metrics"][k] for k in METRICS if r["metrics"].get(k) is not None}
            rows.append({"run": str(run), "label": label, "bits": r["bits"], "seed": cfg.seed, **metrics})
    return rows


def collect(run_dirs: list[Path]) -> list[dict]:
    """One row per (run, stage of interest); runs without results.json (unfinished) are skipped."""
    rows = []
    for run in run_dirs:
        if (run / "results.json").is_file():
            rows += _rows_of_run(run)
    return rows


def _cell(values: list[float]) -> str:
    mean = statistics.fmean(values)
    spread = statistics.stdev(values) if len(values) > 1 else float("nan")
    return f"{100 * mean:.1f} ± {100 * spread:.1f} (n={len(values)})"


def grid(rows: list[dict], metric: str = "mAP50-95"):
    """(cells {(label, bits): values over seeds}, labels in paper order, bits high to low, FP values)."""
    rows = [r for r in rows if metric in r]
    cells = defaultdict(list)
    for r in rows:
        if r["label"] != "FP":
            cells[(r["label"], r["bits"])].append(r[metric])
    fp = sorted({r[metric] for r in rows if r["label"] == "FP"})
    bits = sorted({b for _, b in cells}, key=lambda b: -int(b[1:b.index("A")]))
    labels = [m for m in ORDER if any((m, b) in cells for b in bits)]
    labels += sorted({m for m, _ in cells} - set(labels))
    return dict(cells), labels, bits, fp


def markdown_table(rows: list[dict], metric: str = "mAP50-95") -> str:
    """Methods x bits; FP appears once per FP model (identical across runs sharing it)."""
    cells, labels, bits, fp = grid(rows, metric)
    lines = [f"| method | {' | '.join(bits)} |", "|---|" + "---|" * len(bits)]
    for m in labels:
        lines.append(f"| {m} | " + " | ".join(_cell(cells[(m, b)]) if (m, b) in cells else "" for b in bits) + " |")
    note = f"\n\n{metric} x 100, mean ± sample std over seeds; FP model: {', '.join(f'{100 * v:.1f}' for v in fp)}"
    return "\n".join(lines) + note


def write_report(rows: list[dict], out: Path, metric: str = "mAP50-95") -> str:
    """compare.md (the table), compare.csv (one row per run and stage) and compare.png (the bar chart)."""
    out.mkdir(parents=True, exist_ok=True)
    table = markdown_table(rows, metric)
    (out / "compare.md").write_text(table + "\n")
    with open(out / "compare.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))  # seg runs add mask
        writer.writeheader()
        writer.writerows(rows)
    save(method_comparison(*grid(rows, metric), metric=metric), out / "compare.png")
    return table
