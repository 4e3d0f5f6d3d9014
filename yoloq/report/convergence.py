"""The doubling test of issue 16 (item 2): is a QAT recipe converged? Runs of one recipe at several QAT lengths
(`trainer.qat.epochs`), each with one or more seeds, are grouped by model, method, bits and recipe. For every
length E that was also run at 2E, the report gives the gain of the longer run, paired on the seeds both ran (mean
and a 95% interval), against the seed-to-seed spread of single runs (the sample std over seeds at E, else at 2E,
else at the nearest length run with several seeds). The recipe counts as converged at E when doubling it gains
less than that spread: a longer run would then change a comparison less than running another seed does.

    python scripts/convergence.py runs/e8-* runs/e16-* runs/e32-* --out docs/compare/convergence

The runs of a group share everything that shapes training except the QAT length (and how often it is evaluated):
the FP model, the QAT optimizer and schedule, the data, the quantizer and method settings. Runs of several
recipes are split into one group per recipe, named by the keys that differ (e.g. `trainer.qat.lr0=0.002`), since
a gain between two recipes is not a convergence test. A run of 0 QAT epochs (`trainer.qat.epochs=0`) is the
recipe's start, the calibrated model before any training: it is shown next to the FP model, never doubled.

An 8-bit control (the same recipe at `bits=8`, same lengths and seeds) separates the two things a longer QAT run
gains: what quantization recovers, and what the detector learns from more training, which an FP model that is not
itself converged still does at 8 bits. Where a group has one, the report adds the gap to it (low-bit minus 8-bit,
paired on seed and length) and whether doubling changes that gap by less than the low-bit seed spread."""

from __future__ import annotations

import argparse
import csv
import io
import json
import statistics
import sys
import textwrap
from collections import defaultdict
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from omegaconf import OmegaConf

from yoloq.atomic import write_text_atomic
from yoloq.errors import UserError
from yoloq.report.compare import METRICS, qat_label
from yoloq.report.curves import qat_points
from yoloq.report.records import keep_records
from yoloq.report.stats import interval_cell, mean_interval
from yoloq.track.plots import save

RECIPE = ("trainer", "data", "quant", "method")  # the config sections that must agree within a group
NOT_RECIPE = {"trainer.qat.epochs", "trainer.qat.eval_every", "trainer.workers", "trainer.threads",
              "trainer.adapt_threads", "method.name", "data.workers"}  # length, bookkeeping, and the QC stage
NOT_RECIPE_PREFIXES = ("trainer.qc.", "method.qc.")  # after QAT: a _qc run's QAT stage is its base method's
# Settings added after records were written, with the value those records ran at: a record without the key and a
# new run at that value are one recipe (a new run at another value is another recipe, e.g. re-estimated BN).
ADDED_LATER = {"trainer.qat.bn_refresh": 0}


def _flat(node, prefix: str = "") -> dict:
    if isinstance(node, dict):
        return {k: v for key, value in node.items() for k, v in _flat(value, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): node}


def _config_keys(cfg, sections: tuple[str, ...]) -> dict:
    """{dotted key: value} of the given config sections (dotted paths; a section may be a single value)."""
    found = {s: OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
             for s in sections if (node := OmegaConf.select(cfg, s)) is not None}
    return _flat(found)


def _recipe(cfg) -> dict:
    """The dotted config keys that shape QAT, without the length."""
    keys = {**ADDED_LATER, **_config_keys(cfg, RECIPE)}
    return {k: v for k, v in keys.items() if k not in NOT_RECIPE and not k.startswith(NOT_RECIPE_PREFIXES)}


def run_row(run: Path, metric: str = "mAP50-95") -> dict | None:
    """One finished run's QAT result, or None (unfinished, or QC on another run's QAT model)."""
    if not (run / "results.json").is_file() or not (run / "config.yaml").is_file():
        return None
    cfg = OmegaConf.load(run / "config.yaml")
    results = json.loads((run / "results.json").read_text())
    qat = [r for r in results if r["stage"] == "qat"]
    fp = next((r["metrics"].get(metric) for r in results if r["stage"] == "fp"), None)
    epochs = OmegaConf.select(cfg, "trainer.qat.epochs")
    if cfg.get("qat_from") or not qat or epochs is None or qat[0]["metrics"].get(metric) is None:
        return None
    return {"run": str(run), "model": OmegaConf.select(cfg, "model.name", default=None) or "",
            "label": qat_label(qat[0]["method"], cfg), "bits": qat[0]["bits"], "epochs": int(epochs),
            "seed": cfg.get("seed"), metric: qat[0]["metrics"][metric], "fp": fp,
            "recipe": {**_recipe(cfg), "the FP model's mAP": fp},  # one config can train two FP models (machines)
            "fp_epochs": OmegaConf.select(cfg, "trainer.fp.epochs"), "fp_seed": OmegaConf.select(cfg, "trainer.fp.seed"),
            "fp_recipe": json.dumps(_fp_recipe(cfg), sort_keys=True, default=str)}


FP_RECIPE = ("model", "data", "trainer.batch", "trainer.fp", "trainer.augment")  # what the FP cache is keyed by
NOT_FP_RECIPE = {"trainer.fp.epochs", "trainer.fp.seed", "trainer.fp.eval_every", "data.workers"}  # length, seed


def _fp_recipe(cfg) -> dict:
    """The dotted config keys that shape the FP model, without its length and seed."""
    return {k: v for k, v in _config_keys(cfg, FP_RECIPE).items() if k not in NOT_FP_RECIPE}


def _shown(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def groups(rows: list[dict]) -> dict[tuple[str, str, str, str], list[dict]]:
    """{(model, label, bits, recipe): rows}. Runs of one model, method and bits but of different recipes (e.g. two
    learning rates, or two FP models) form one group per recipe, named by the keys that set them apart, since a
    gain between two recipes is no convergence test; `recipe` is "" where there is one. Each row gets it too."""
    by_method = defaultdict(list)
    for r in rows:
        by_method[(r["model"], r["label"], r["bits"])].append(r)
    out = defaultdict(list)
    for key, rs in by_method.items():
        keys = set().union(*(r["recipe"] for r in rs))
        differ = sorted(k for k in keys if len({json.dumps(r["recipe"].get(k)) for r in rs}) > 1)
        for r in rs:
            r["recipe_name"] = ", ".join(f"{k}={_shown(r['recipe'].get(k))}" for k in differ)
            out[(*key, r["recipe_name"])].append(r)
    return dict(out)


def _title(key: tuple) -> str:
    model, label, bits, recipe = key
    return " ".join(filter(None, (model, label, bits))) + (f" ({recipe})" if recipe else "")


def _by_length(rs: list[dict], metric: str) -> dict[int, dict]:
    """{epochs: {seed: value}} of trained runs; a repeated run is averaged. 0 epochs is the calibrated start: no
    length to double, and no spread of trained runs."""
    runs = defaultdict(lambda: defaultdict(list))
    for r in rs:
        runs[r["epochs"]][r["seed"]].append(r[metric])
    return {e: {s: statistics.fmean(v) for s, v in seeds.items()} for e, seeds in runs.items() if e > 0}


def _paired_doublings(by: dict[int, dict], spread_by: dict[int, dict], either_way: bool = False) -> list[dict]:
    """For each length E in `by` also run at 2E: the change of 2E over E paired on seeds, judged against the seed
    spread of `spread_by`'s single runs (at E, else at 2E, else at the nearest length that ran several seeds).
    either_way: a change below the spread in size passes in either direction (a gap), else only from above."""
    out = []
    for e in sorted(by):
        if 2 * e not in by:
            continue
        seeds = sorted(set(by[e]) & set(by[2 * e]))
        several = sorted((x for x in spread_by if len(spread_by[x]) > 1), key=lambda x: (abs(np.log2(x / e) - 0.5), x))
        spread_at = next((x for x in (e, 2 * e) if len(spread_by.get(x, ())) > 1), several[0] if several else None)
        spread = statistics.stdev(spread_by[spread_at].values()) if spread_at else None
        row = {"epochs": e, "doubled": 2 * e, "seeds": seeds, "spread": spread, "spread_at": spread_at,
               "n_spread": len(spread_by[spread_at]) if spread_at else 0}
        if seeds:
            row["per_seed"] = [by[2 * e][s] - by[e][s] for s in seeds]
            row["gain"], row["low"], row["high"] = mean_interval(row["per_seed"])
            change = abs(row["gain"]) if either_way else row["gain"]
            row["verdict"] = ("no seed spread: run a second seed" if spread is None else
                              "converged" if change < spread else "not converged")
        else:
            row["verdict"] = "no seed ran both lengths"
        out.append(row)
    return out


def doublings(rs: list[dict], metric: str = "mAP50-95") -> list[dict]:
    """For each length E run at 2E too: the paired gain of 2E over E and the seed spread it is judged against."""
    by = _by_length(rs, metric)
    return _paired_doublings(by, by)


CONTROL_BITS = "W8A8"
BIT_KEYS = {"quant.w_bits", "quant.a_bits"}  # the only recipe keys in which a group and its control may differ


def _without_bits(r: dict) -> tuple:
    recipe = {k: v for k, v in r["recipe"].items() if k not in BIT_KEYS}
    return r["model"], r["label"], json.dumps(recipe, sort_keys=True, default=str)


def control_gaps(rs: list[dict], rows: list[dict], metric: str = "mAP50-95") -> dict | None:
    """The gap of a low-bit group to its 8-bit control among rows: {"lengths": {epochs: {seed: gap}},
    "doublings": [...]} with each doubling's change in the gap paired on seeds, judged against the low-bit
    group's seed spread (as in doublings); None where the group is 8-bit itself or has no control run."""
    if not rs or rs[0]["bits"] == CONTROL_BITS:
        return None
    key = _without_bits(rs[0])
    control = _by_length([r for r in rows if r["bits"] == CONTROL_BITS and _without_bits(r) == key], metric)
    low = _by_length(rs, metric)
    gaps = {e: {s: v - control[e][s] for s, v in by_seed.items() if s in control.get(e, {})}
            for e, by_seed in low.items()}  # low-bit minus 8-bit, paired on length and seed
    gaps = {e: by_seed for e, by_seed in gaps.items() if by_seed}
    if not gaps:
        return None
    return {"lengths": gaps, "doublings": _paired_doublings(gaps, low, either_way=True)}


def _per_seed(by_seed: dict, fmt: str) -> str:
    """'s0: +1.00, s1: -0.50' in points (x 100), seeds in order."""
    return ", ".join(f"s{s}: {100 * v:{fmt}}" for s, v in sorted(by_seed.items(), key=lambda x: str(x[0])))


def _control_section(bits: str, gaps: dict) -> str:
    lines = [f"Against the 8-bit control (the same recipe at {CONTROL_BITS}: what more training gains without "
             "low-bit quantization):", "", f"| QAT epochs | {bits} minus {CONTROL_BITS} x 100 | per seed |",
             "|---|---|---|"]
    for e, by_seed in sorted(gaps["lengths"].items()):
        per_seed = _per_seed(by_seed, "+.2f")
        lines.append(f"| {e} | {100 * statistics.fmean(by_seed.values()):+.2f} (n={len(by_seed)}) | {per_seed} |")
    if gaps["doublings"]:
        table = _doublings_table(gaps["doublings"]).replace("| gain, paired", "| change in the gap, paired", 1)
        lines += ["", table]
    return "\n".join(lines)


def fp_doublings(rows: list[dict]) -> dict[tuple[str, str], dict]:
    """{(model, FP recipe): {"lengths": {fp epochs: {fp seed: mAP}}, "doublings": [...]}} for each FP recipe whose
    runs started from FP models of more than one length: the FP stage's own doubling test (as `doublings`)."""
    models = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for r in rows:
        if r["fp"] is not None and r["fp_epochs"]:
            models[(r["model"], r["fp_recipe"])][int(r["fp_epochs"])][r["fp_seed"]].append(r["fp"])
    out = {}
    for key, by_length in models.items():
        if len(by_length) > 1:
            by = {e: {s: statistics.fmean(v) for s, v in seeds.items()} for e, seeds in by_length.items()}
            out[key] = {"lengths": by, "doublings": _paired_doublings(by, by)}
    return out


def _fp_section(fp_models: dict, metric: str) -> str:
    lines = ["## The FP models", "",
             "The FP stage's own doubling test: the FP models these runs start from, by `trainer.fp.epochs` (the rest"
             " of their recipe equal). A seed spread needs the FP stage run with another `trainer.fp.seed`."]
    for (model, _), fp in sorted(fp_models.items()):
        lines += ["", f"| {model} FP epochs | {metric} x 100 | per FP seed |", "|---|---|---|"]
        for e, by_seed in sorted(fp["lengths"].items()):
            per_seed = _per_seed(by_seed, ".2f")
            lines.append(f"| {e} | {100 * statistics.fmean(by_seed.values()):.2f} (n={len(by_seed)}) | {per_seed} |")
        if fp["doublings"]:
            lines += ["", _doublings_table(fp["doublings"])]
    return "\n".join(lines)


def _lengths_table(rs: list[dict], metric: str) -> str:
    by = defaultdict(list)
    for r in sorted(rs, key=lambda r: (r["epochs"], str(r["seed"]))):
        by[r["epochs"]].append(r)
    lines = [f"| QAT epochs | {metric} x 100 | per seed |", "|---|---|---|"]
    for e, runs in sorted(by.items()):
        values = [r[metric] for r in runs]
        spread = f" ± {100 * statistics.stdev(values):.2f}" if len(values) > 1 else ""
        per_seed = ", ".join(f"s{r['seed']}: {100 * r[metric]:.2f}" for r in runs)
        length = f"{e} (the calibrated start)" if e == 0 else e
        lines.append(f"| {length} | {100 * statistics.fmean(values):.2f}{spread} (n={len(values)}) | {per_seed} |")
    return "\n".join(lines)


def _doublings_table(rows: list[dict]) -> str:
    lines = ["| doubling | gain, paired on seeds [95% CI] | per seed | seed spread (std) | verdict |",
             "|---|---|---|---|---|"]
    for d in rows:
        # Two decimals, as the seed spread it is judged against (a gap's change is often below 0.1).
        gain = interval_cell(d["gain"], d["low"], d["high"], len(d["seeds"]), digits=2) if d["seeds"] else ""
        per_seed = ", ".join(f"s{s}: {100 * g:+.2f}" for s, g in zip(d["seeds"], d.get("per_seed", [])))
        spread = (f"{100 * d['spread']:.2f} (at {d['spread_at']} epochs, n={d['n_spread']})"
                  if d["spread"] is not None else "")
        lines.append(f"| {d['epochs']} -> {d['doubled']} | {gain} | {per_seed} | {spread} | {d['verdict']} |")
    return "\n".join(lines)


def convergence_figure(grouped: dict, metric: str = "mAP50-95") -> Figure:
    """One panel per group: the QAT model's mAP by epoch for each length (mean over seeds, min-max band), the
    FP model it started from as a dashed line, and the calibrated start (0-epoch runs) as a square at epoch 0."""
    cols = min(3, len(grouped))
    rows = -(-len(grouped) // cols)
    fig = Figure(figsize=(5.5 * cols, 4 * rows), layout="constrained")  # long titles must not overlap
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[len(grouped):]:
        ax.set_visible(False)
    for ax, (key, rs) in zip(axes, sorted(grouped.items())):
        lengths = sorted({r["epochs"] for r in rs} - {0})
        for i, e in enumerate(lengths):
            curves = defaultdict(list)
            for r in rs:
                if r["epochs"] == e and (Path(r["run"]) / "metrics.jsonl").is_file():
                    for epoch, value in qat_points(Path(r["run"]), metric).items():
                        curves[epoch].append(100 * value)
            if not curves:
                continue
            epochs = sorted(curves)
            ax.plot(epochs, [np.mean(curves[x]) for x in epochs], marker="o", ms=3, color=f"C{i % 10}",
                    label=f"{e} epochs (n={sum(r['epochs'] == e for r in rs)})")
            ax.fill_between(epochs, [min(curves[x]) for x in epochs], [max(curves[x]) for x in epochs],
                            color=f"C{i % 10}", alpha=0.2, lw=0)
        for fp in {r["fp"] for r in rs if r["fp"] is not None}:  # one: the FP model is part of the recipe
            ax.axhline(100 * fp, color="0.4", ls="--", lw=1, label=f"FP {100 * fp:.1f}")
        starts = [100 * r[metric] for r in rs if r["epochs"] == 0]
        if starts:  # where every curve comes from: the calibrated model, before QAT
            start = float(np.mean(starts))
            ax.plot([0], [start], marker="s", color="k", ls="none", label=f"calibrated start {start:.1f}")
        ax.set(xlabel="QAT epoch", ylabel=f"{metric} x 100")
        ax.set_title(textwrap.fill(_title(key), 50), fontsize=10)  # recipe names run long
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return fig


def write_convergence(run_dirs: list[Path], out: Path, metric: str = "mAP50-95") -> str:
    """convergence.md (per group: each length's result and each doubling's verdict), .csv (one row per run) and
    .png (the curves) in `out`; returns the markdown."""
    rows = [r for r in (run_row(Path(d), metric) for d in run_dirs) if r is not None]
    if not rows:
        raise UserError("none of the given folders is a finished QAT run: pass run folders holding results.json "
                        "and config.yaml, e.g. runs/*")
    grouped = groups(rows)
    sections = []
    for key, rs in sorted(grouped.items()):
        fp = {r["fp"] for r in rs if r["fp"] is not None}
        section = f"## {_title(key)}\n\n{_lengths_table(rs, metric)}" + (
            f"\n\nThe FP model they start from: {100 * fp.pop():.2f}" if len(fp) == 1 else "")
        d = doublings(rs, metric)
        section += ("\n\n" + _doublings_table(d)) if d else "\n\nNo length was also run at twice its epochs."
        gaps = control_gaps(rs, rows, metric)
        if gaps:
            section += "\n\n" + _control_section(key[2], gaps)
        sections.append(section)
    fp_models = fp_doublings(rows)
    if fp_models:
        sections.append(_fp_section(fp_models, metric))
    text = "\n\n".join(sections) + (
        f"\n\n{metric} x 100 of the QAT model after its last epoch (0 epochs: the calibrated model, untrained)."
        " A doubling's gain is paired on the seeds that ran both lengths (Student's t; bold where the interval"
        " excludes 0); converged: the gain is below the seed spread, the sample std over seeds of single runs (from"
        " two or three seeds, a rough estimate). Against an 8-bit control the same test is applied to the"
        " gap, in either direction."
        "\n\n![QAT curves by run length](convergence.png)")
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "convergence.md", text + "\n")
    buffer = io.StringIO(newline="")
    fields = ["run", "model", "label", "bits", "recipe_name", "epochs", "seed", metric, "fp"]
    writer = csv.DictWriter(buffer, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(sorted(rows, key=lambda r: (r["model"], r["label"], r["bits"], r["recipe_name"], r["epochs"],
                                                 str(r["seed"]))))
    write_text_atomic(out / "convergence.csv", buffer.getvalue())
    save(convergence_figure(grouped, metric), out / "convergence.png")
    keep_records([Path(r["run"]) for r in rows], out)
    return text


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="yoloq convergence", description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path,
                        help="finished run folders at several QAT lengths (each recipe a group)")
    parser.add_argument("--out", type=Path, default=None, help="folder for convergence.md, .csv and .png "
                        "(default: the first run's parent)")
    parser.add_argument("--metric", default="mAP50-95", choices=METRICS, help="mask_* for -seg runs")
    args = parser.parse_args(argv)
    out = args.out or args.runs[0].parent
    try:
        print(write_convergence(args.runs, out, args.metric))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out / 'convergence.md'}, convergence.csv and convergence.png")
    return 0
