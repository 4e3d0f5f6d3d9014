"""QAT learning curves of a collection of runs: each method's mAP at every evaluated QAT epoch, over seeds, read
from the runs' metrics.jsonl. They show what a final number hides: whether the runs still improve at their last
epoch (issue 16's convergence question) and when a method's lead appears or fades (e.g. EMA's lead while the
learning rate is high). A qat_from run trained no QAT stage, so it adds no curve."""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from omegaconf import OmegaConf

from yoloq.report.compare import bits_order, paper_order, qat_label


def qat_points(run: Path, metric: str = "mAP50-95") -> dict[int, float]:
    """{epoch: metric} of the QAT model at each evaluated epoch, from the run's metrics.jsonl."""
    points = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        try:
            row = json.loads(line) if line.strip() else {}
        except json.JSONDecodeError:  # a line cut short by a killed run (the log is appended, then resumed)
            continue
        if row.get("kind") == "qat-epoch" and row.get(metric) is not None:
            points[int(row["epoch"])] = row[metric]  # a resumed epoch logged twice keeps its last value
    return points


def collect_curves(run_dirs: list[Path], metric: str = "mAP50-95") -> dict[tuple[str, str], dict[int, list[float]]]:
    """{(label, bits): {epoch: values over the runs}} for finished runs that trained their QAT stage."""
    curves = defaultdict(lambda: defaultdict(list))
    for run in run_dirs:
        if not (run / "results.json").is_file() or not (run / "metrics.jsonl").is_file():
            continue
        cfg = OmegaConf.load(run / "config.yaml")
        qat = [r for r in json.loads((run / "results.json").read_text()) if r["stage"] == "qat"]
        if cfg.get("qat_from") or not qat:
            continue
        label = qat_label(qat[0]["method"], cfg)
        for epoch, value in qat_points(run, metric).items():
            curves[(label, qat[0]["bits"])][epoch].append(value)
    return {key: dict(sorted(points.items())) for key, points in curves.items()}


def curves_table(curves: dict, metric: str = "mAP50-95") -> str:
    """Markdown: one row per method and bits, one column per evaluated epoch, mean ± std (n)."""
    epochs = sorted({e for points in curves.values() for e in points})
    lines = [f"| QAT {metric}, by epoch | bits | " + " | ".join(str(e) for e in epochs) + " |",
             "|---|---|" + "---|" * len(epochs)]
    rows = [(label, b) for b in bits_order(b for _, b in curves) for label in paper_order(m for m, _ in curves)
            if (label, b) in curves]  # the order of the report's main table
    for label, bits in rows:
        points = curves[(label, bits)]
        cells = []
        for e in epochs:
            v = points.get(e, [])
            spread = f" ± {100 * statistics.stdev(v):.1f}" if len(v) > 1 else ""
            cells.append(f"{100 * statistics.fmean(v):.1f}{spread} (n={len(v)})" if v else "")
        lines.append(f"| {label} | {bits} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + f"\n\n{metric} x 100 of the QAT model at each evaluated epoch, mean ± std over seeds"


def curves_figure(curves: dict, metric: str = "mAP50-95") -> Figure:
    """One panel per bit width: each method's mean curve, its seeds' min-max as a band."""
    bits = bits_order(b for _, b in curves)
    fig = Figure(figsize=(5.5 * len(bits), 4))
    axes = np.atleast_1d(fig.subplots(1, len(bits), squeeze=False)[0])
    labels = paper_order(label for label, _ in curves)
    colors = {label: f"C{i % 10}" for i, label in enumerate(labels)}  # one colour per method in every panel
    for ax, b in zip(axes, bits):
        for label in labels:
            if (label, b) not in curves:
                continue
            points = curves[(label, b)]
            epochs = list(points)
            values = [100 * np.asarray(points[e]) for e in epochs]
            ax.plot(epochs, [v.mean() for v in values], marker="o", ms=3, label=label, color=colors[label])
            ax.fill_between(epochs, [v.min() for v in values], [v.max() for v in values], color=colors[label],
                            alpha=0.2, lw=0)
        ax.set(xlabel="QAT epoch", ylabel=f"{metric} x 100", title=f"{b}: QAT model by epoch (mean, seeds' min-max)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return fig
