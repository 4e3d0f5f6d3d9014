"""The mixed-precision frontier (issue 18): mAP50-95 against GBOPs for finished runs, one point per plan or
uniform bit width (mean over seeds, error bar = sample std), from each run's results.json (its QAT stage's
GBOPs; its final quantized mAP: folded after QC, else QAT). A run's label is its folder name without the
`-s<seed>` suffix, e.g. `uniform-w3`, `eagl-b3`, `random-b3` (scripts/mixed_frontier.sh names them so).
Below the table, each plan against what it must beat at its budget (uniform WbAb where b is a whole bit width,
and for EAGL / ALPS the random plan of that budget), paired on the seeds both ran, with a 95% interval.

    python -m yoloq.report.frontier runs/frontier/*      # -> frontier.md, frontier.csv, frontier.png"""

from __future__ import annotations

import csv
import io
import json
import re
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from matplotlib.figure import Figure
from omegaconf import OmegaConf

from yoloq.atomic import write_text_atomic
from yoloq.report.records import keep_records
from yoloq.report.stats import interval_cell, mean_interval
from yoloq.track.plots import save

FINAL = ("folded", "qat")  # the run's last quantized model
COLORS = {"uniform": "C0", "random": "C1", "alps": "C2", "eagl": "C3"}  # the same in every plot, whatever runs exist


def run_row(run: Path) -> dict | None:
    if not (run / "results.json").is_file():
        return None
    results = {r["stage"]: r for r in json.loads((run / "results.json").read_text())}
    qat = results.get("qat")
    if qat is None or "GBOPs" not in qat.get("extra", {}):
        return None
    final = next(results[s] for s in FINAL if s in results)
    seed = OmegaConf.load(run / "config.yaml").get("seed") if (run / "config.yaml").is_file() else None
    return {"run": str(run), "label": re.sub(r"-s\d+$", "", run.name), "seed": seed, "stage": final["stage"],
            "GBOPs": qat["extra"]["GBOPs"], "avg_w_bits": qat["extra"]["avg_w_bits"],
            "avg_a_bits": qat["extra"]["avg_a_bits"], "mAP50-95": final["metrics"]["mAP50-95"]}


def points(rows: list[dict]) -> list[dict]:
    """One point per label: GBOPs (the plan's, identical across seeds), mean and std of mAP50-95, n."""
    by = defaultdict(list)
    for r in rows:
        by[r["label"]].append(r)
    out = []
    for label, rs in by.items():
        maps = [r["mAP50-95"] for r in rs]
        out.append({"label": label, "GBOPs": statistics.fmean(r["GBOPs"] for r in rs), "n": len(rs),
                    "mean": statistics.fmean(maps), "std": statistics.stdev(maps) if len(maps) > 1 else float("nan")})
    return sorted(out, key=lambda p: p["GBOPs"])


def paired_gaps(rows: list[dict]) -> list[dict]:
    """Each `<search>-b<budget>` plan minus `uniform-w<budget>` and (unless it is random) `random-b<budget>`,
    per seed both ran; the mean with its interval. Pairing removes what a seed shares across plans."""
    by = defaultdict(dict)  # label -> {seed: mAP50-95}
    for r in rows:
        by[r["label"]][r["seed"]] = r["mAP50-95"]
    out = []
    plans = [(m.group(1), m.group(2), label) for label in by if (m := re.fullmatch(r"(.+)-b([\d.]+)", label))]
    for search, budget, label in sorted(plans, key=lambda p: (float(p[1]), p[0])):
        # budget=4.0 is W4A4's cost too
        for base in [f"uniform-w{float(budget):g}"] + ([f"random-b{budget}"] if search != "random" else []):
            seeds = sorted(set(by[label]) & set(by.get(base, {})))
            if not seeds:
                continue
            per_seed = [by[label][s] - by[base][s] for s in seeds]
            mean, low, high = mean_interval(per_seed)
            out.append({"plan": label, "baseline": base, "n": len(seeds), "seeds": seeds, "per_seed": per_seed,
                        "mean_diff": mean, "ci_low": low, "ci_high": high})
    return out


def gaps_table(gaps: list[dict]) -> str:
    lines = ["| plan | against | mean difference [95% CI] | per seed |", "|---|---|---|---|"]
    for g in gaps:
        per_seed = ", ".join(f"s{s}: {100 * d:+.1f}" for s, d in zip(g["seeds"], g["per_seed"]))
        lines.append(f"| {g['plan']} | {g['baseline']} | "
                     f"{interval_cell(g['mean_diff'], g['ci_low'], g['ci_high'], g['n'])} | {per_seed} |")
    return "\n".join(lines) + ("\n\nmAP50-95 x 100, paired on seeds (Student's t over the per-seed differences; "
                               "bold where the interval excludes 0)")


def frontier_plot(pts: list[dict], rows: list[dict]) -> Figure:
    """Mean ± std per plan; every seed's run as a faint dot, since a searched plan's BOPs differ between seeds."""
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    kinds = defaultdict(list)
    for p in pts:
        kinds[p["label"].split("-")[0]].append(p)
    for kind, ps in kinds.items():
        bars = ax.errorbar([p["GBOPs"] for p in ps], [100 * p["mean"] for p in ps],
                           yerr=[0 if p["std"] != p["std"] else 100 * p["std"] for p in ps], capsize=3,
                           marker="o" if kind == "uniform" else "s", ls="-" if kind == "uniform" else "none",
                           label=kind, color=COLORS.get(kind))
        runs = [r for r in rows if r["label"].split("-")[0] == kind]
        ax.scatter([r["GBOPs"] for r in runs], [100 * r["mAP50-95"] for r in runs], s=10, alpha=0.35,
                   color=bars.lines[0].get_color())
    placed: list[tuple[float, float]] = []
    for p in sorted(pts, key=lambda p: (p["GBOPs"], -p["mean"])):
        x, y = p["GBOPs"], 100 * p["mean"]
        near = sum(abs(x - px) < 0.3 and abs(y - py) < 2.5 for px, py in placed)  # a label there already: go below it
        ax.annotate(p["label"], (x, y), fontsize=7, xytext=(3, 3 - 9 * near), textcoords="offset points")
        placed.append((x, y))
    ax.set(xlabel="GBOPs (MACs x weight bits x activation bits)", ylabel="mAP50-95 x 100",
           title="mixed precision: accuracy against compute (mean ± std over seeds, dots: runs)")
    ax.legend(fontsize=8)
    return fig


def write_frontier(run_dirs: list[Path], out: Path) -> str:
    rows = [r for r in (run_row(Path(d)) for d in run_dirs) if r is not None]
    if not rows:
        raise SystemExit("error: no finished quantized runs with GBOPs among the folders given: give run folders "
                         "(e.g. runs/frontier/*) of runs made by this yoloq version")
    pts = points(rows)
    lines = ["| plan | GBOPs | mAP50-95 x 100 | n |", "|---|---|---|---|"]
    for p in pts:  # one seed has no spread: no '± nan'
        spread = f" ± {100 * p['std']:.1f}" if p["n"] > 1 else ""
        lines.append(f"| {p['label']} | {p['GBOPs']:.3f} | {100 * p['mean']:.1f}{spread} | {p['n']} |")
    table = "\n".join(lines)
    gaps = paired_gaps(rows)
    if gaps:
        table += "\n\n" + gaps_table(gaps)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "frontier.md", table + "\n")
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(out / "frontier.csv", buffer.getvalue())
    save(frontier_plot(pts, rows), out / "frontier.png")
    keep_records([Path(d) for d in run_dirs], out)
    return table


if __name__ == "__main__":
    dirs = [Path(a) for a in sys.argv[1:]]
    print(write_frontier(dirs, dirs[0].parent if dirs else Path(".")))
