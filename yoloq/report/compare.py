"""Collect finished runs (their results.json) into a paper-style table: rows are methods, columns bit
widths, cells mAP@0.5:0.95 as mean ± std over seeds; also as CSV and a bar chart. A `_qc` run contributes
two rows: its QAT stage under the base method's name and its folded QC stage as `<base>+QC`; a run with
`eval.soft_round` adds `<base> soft`. Layout and QC variants are labelled (`ema*`, `lsq pc-W`,
`ema+QC[per-tensor]`, a QC trained otherwise `ema+QC[lr 0.0001]`). A `qat_from` run's QAT and soft rows are its
source run's model: they count once, and only where no run of the collection trained that method, bits and seed
itself (e.g. the source is not among the runs).

Below the table, each method against LSQ paired on the seeds both ran (LSQ on the method's own activation grid,
` asym` in the labels, so that no method is credited with what its grid gains; that grid's LSQ against the signed
LSQ): the mean difference with its 95% confidence interval (Student's t over the per-seed differences) and the
number of seeds, so a reader sees which gaps are larger than the seed-to-seed noise. Pairing removes what the
seeds share (the data order, the calibration batches), which is most of the spread."""

from __future__ import annotations

import csv
import functools
import io
import json
import re
import statistics
from collections import defaultdict
from pathlib import Path

from omegaconf import OmegaConf

from yoloq.atomic import write_text_atomic
from yoloq.config import CONF_DIR
from yoloq.report.stats import interval_cell, mean_interval
from yoloq.track.plots import method_comparison, save

METRICS = ("mAP50-95", "mAP50", "mask_mAP50-95", "mask_mAP50")  # box, and mask for -seg runs
ORDER = ["lsq", "lsq+QC", "dampen", "dampen+QC", "freeze", "freeze+QC", "ema", "ema+QC"]  # then the variants


ASYM, ASYM_INT_ZP = " asym", " asym int-zp"  # the label parts of asymmetric activations (float / integer zero point)
ACT_GRIDS = (ASYM_INT_ZP, ASYM)  # longest first, for activation_grid


def _variant(cfg) -> str:
    """What sets a run apart from the paper's default layout, appended to its method's label: `*` for first and
    last layers at the run's bits too (paper Table 4), ` pc-W` for per-channel weight scales, ` asym` for asymmetric
    activations (` asym int-zp` on integer zero points), ` mixed` for a per-layer plan (quant.layer_bits: its own
    column would mislead, see report/frontier.py)."""
    quant = cfg.get("quant", {})
    asym = (ASYM_INT_ZP if quant.get("act_zero_point") == "integer" else ASYM) if quant.get("act_asymmetric") else ""
    return ("*" if quant.get("first_last_bits", 8) is None else "") + (" pc-W" if quant.get("per_channel") else "") + (
        asym) + (" mixed" if quant.get("layer_bits") else "")


def activation_grid(label: str) -> str:
    """A label's activation grid as _variant wrote it ('' for the paper's signed grid)."""
    return next((g for g in ACT_GRIDS if g in label), "")


def activation_grids(labels) -> list[str]:
    """The distinct activation grids of some labels, the paper's signed grid ('') first."""
    return sorted({activation_grid(label) for label in labels})


def on_grid(label: str, act_grid: str) -> str:
    """A signed-grid label moved to another activation grid, where _variant puts it: before ` soft` or `+QC`
    (`ema+QC` -> `ema asym int-zp+QC`), after `*` and ` pc-W`."""
    cut = min((i for i in (label.find("+QC"), label.find(" soft")) if i >= 0), default=len(label))
    return label[:cut] + act_grid + label[cut:]


# How a QC stage trained, as trainer.qc keys: (key, the value as compared and shown, its label's format).
QC_TRAINING = (("lr", float, "lr {:g}"), ("epochs", int, "{} ep"), ("fraction", lambda v: 100 * float(v), "{:g}% data"))


@functools.cache
def _default_qc_training() -> dict:
    return OmegaConf.to_container(OmegaConf.load(CONF_DIR / "trainer" / "default.yaml").qc)


def _qc_training(cfg) -> list[str]:
    """How a run's QC stage trained where it differs from trainer/default.yaml's (the learning rate, the epochs,
    the share of the training set): `lr 0.0001`, `3 ep`, `10% data`; runs that do not record it count as default."""
    qc, default = OmegaConf.select(cfg, "trainer.qc") or {}, _default_qc_training()
    return [label.format(as_value(qc.get(key))) for key, as_value, label in QC_TRAINING
            if qc.get(key) is not None and as_value(qc.get(key)) != as_value(default[key])]


def _qc_variant(cfg) -> str:
    """A QC other than the default one, e.g. `+QC[per-tensor, scale only]` (paper Table 7) or `+QC[lr 0.0001]`:
    what it learns (per-channel scale + shift by default), then how it trained (_qc_training)."""
    qc = OmegaConf.select(cfg, "method.qc") or {}
    parts = ([] if qc.get("per_channel", True) else ["per-tensor"]) + (
        ["scale only"] if not qc.get("shift", True) else ["shift only"] if not qc.get("scale", True) else [])
    parts += _qc_training(cfg)
    return f"[{', '.join(parts)}]" if parts else ""


def qat_label(method: str, cfg) -> str:
    """The label of a run's QAT model: its base method (a `_qc` method's QAT stage is the base's) and variant."""
    return method.removesuffix("_qc") + _variant(cfg)


def _rows_of_run(run: Path) -> list[tuple[dict, str | None]]:
    """(row, source) pairs: source names the qat_from run whose QAT model a borrowed row scores, else None."""
    results = json.loads((run / "results.json").read_text())
    cfg = OmegaConf.load(run / "config.yaml")
    source = str(cfg.get("qat_from")).removesuffix("/qat.pt").rstrip("/") if cfg.get("qat_from") else None
    rows = []
    for r in results:
        base = qat_label(r["method"], cfg)
        label = {"qat": base, "qat-soft": f"{base} soft", "folded": f"{base}+QC{_qc_variant(cfg)}",
                 "fp": "FP"}.get(r["stage"])
        if label is not None:
            metrics = {k: r["metrics"][k] for k in METRICS if r["metrics"].get(k) is not None}
            row = {"run": str(run), "model": OmegaConf.select(cfg, "model.name", default=None) or "", "label": label,
                   "bits": r["bits"], "seed": cfg.seed, **metrics}
            rows.append((row, source if r["stage"] in ("qat", "qat-soft") else None))
    return rows


def collect(run_dirs: list[Path]) -> list[dict]:
    """One row per (run, stage of interest); runs without results.json (unfinished) are skipped. A borrowed row
    (a qat_from run's QAT or soft score) is dropped where a run of its own covers its label, bits and seed, and
    kept once per source otherwise, so that e.g. five QC variants of one QAT model count that model once."""
    pairs = [pair for run in run_dirs if (run / "results.json").is_file() for pair in _rows_of_run(run)]
    own = {(r["label"], r["bits"], r["seed"]) for r, source in pairs if source is None}
    rows, borrowed_seen = [], set()
    for r, source in pairs:
        key = (r["label"], r["bits"], r["seed"])
        if source is not None:
            if key in own or (source, key) in borrowed_seen:
                continue
            borrowed_seen.add((source, key))
        rows.append(r)
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
    return dict(cells), paper_order(m for m, _ in cells), bits_order(b for _, b in cells), fp


def paper_order(labels) -> list[str]:
    """Distinct labels in the paper's order, one activation grid after another (the signed grid first): ORDER,
    then that grid's variants (soft, Table 7, `*`, pc-W) by their base method in ORDER, alphabetically within
    one. Every table and chart of a report lists its methods the same way."""
    present = set(labels)
    bases = [m for m in ORDER if "+" not in m]
    base_rank = lambda label: next((i for i, m in enumerate(bases) if re.match(rf"{m}\b", label)),  # noqa: E731
                                   len(bases))
    out = []
    for g in activation_grids(present):
        main = [on_grid(m, g) for m in ORDER if on_grid(m, g) in present]
        variants = sorted((label for label in present if activation_grid(label) == g and label not in main),
                          key=lambda label: (base_rank(label), label))
        out += main + variants
    return out


def bits_order(bits) -> list[str]:
    """Distinct bit widths ('W4A4', 'W3A3', ...), the widest weights first, as the paper's tables go."""
    return sorted(set(bits), key=lambda b: -int(b[1:b.index("A")]))


def markdown_table(rows: list[dict], metric: str = "mAP50-95") -> str:
    """Methods x bits; FP appears once per FP model (identical across runs sharing it)."""
    cells, labels, bits, fp = grid(rows, metric)
    lines = [f"| method | {' | '.join(bits)} |", "|---|" + "---|" * len(bits)]
    for m in labels:
        lines.append(f"| {m} | " + " | ".join(_cell(cells[(m, b)]) if (m, b) in cells else "" for b in bits) + " |")
    note = f"\n\n{metric} x 100, mean ± sample std over seeds; FP model: {', '.join(f'{100 * v:.1f}' for v in fp)}"
    return "\n".join(lines) + note


def _by_seed(rows: list[dict], metric: str) -> dict:
    """{(label, bits): {seed: value}}; two runs of one cell and seed (e.g. on two FP models) are averaged."""
    values = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if metric in r and r["label"] != "FP":
            values[(r["label"], r["bits"])][r["seed"]].append(r[metric])
    return {cell: {seed: statistics.fmean(v) for seed, v in seeds.items()} for cell, seeds in values.items()}


def _paired(by_seed: dict, method: str, baseline: str, bits: str) -> dict | None:
    """method minus baseline at one bit width over the seeds both ran, or None where there are none."""
    a, b = by_seed.get((method, bits)), by_seed.get((baseline, bits))
    seeds = sorted(set(a) & set(b)) if a and b else []
    if not seeds:
        return None
    mean, low, high = mean_interval([a[s] - b[s] for s in seeds])
    return {"method": method, "baseline": baseline, "bits": bits, "n": len(seeds), "seeds": seeds,
            "mean_diff": mean, "ci_low": low, "ci_high": high}


def _baseline_of(label: str, baseline: str) -> str:
    """The baseline on the label's own activation grid, so that methods are compared where they trained
    (`ema asym` against `lsq asym`); the baseline itself on another grid is compared with the signed one."""
    own = on_grid(baseline, activation_grid(label))
    return own if label != own else baseline


def paired_differences(rows: list[dict], metric: str = "mAP50-95", baseline: str = "lsq") -> list[dict]:
    """Each method minus the baseline (on the method's activation grid) at the same bit width, over the seeds both
    ran: n, the mean difference and its 95% confidence interval (t with n - 1 degrees of freedom; none for one
    seed)."""
    by_seed = _by_seed(rows, metric)
    _, labels, bits, _ = grid(rows, metric)
    pairs = (_paired(by_seed, m, _baseline_of(m, baseline), b) for b in bits for m in labels if m != baseline)
    return [p for p in pairs if p is not None]


def qc_gains(rows: list[dict], metric: str = "mAP50-95") -> list[dict]:
    """Each QC row (`ema+QC`, `ema+QC[per-tensor]`, ...) minus the QAT model it corrected (the label before
    `+QC`), paired per seed: what QC adds, per base method and QC variant (the form of the paper's Table 7)."""
    by_seed = _by_seed(rows, metric)
    _, labels, bits, _ = grid(rows, metric)
    pairs = (_paired(by_seed, m, m.split("+QC")[0], b) for b in bits for m in labels if "+QC" in m)
    return [p for p in pairs if p is not None]


def _differences_table(diffs: list[dict], header: str, note: str) -> str:
    if not diffs:
        return ""
    bits = bits_order(d["bits"] for d in diffs)
    methods = paper_order(d["method"] for d in diffs)  # the main table's order, whichever bits a method ran at
    cell = {(d["method"], d["bits"]): interval_cell(d["mean_diff"], d["ci_low"], d["ci_high"], d["n"])
            for d in diffs}
    lines = [f"| {header} | {' | '.join(bits)} |", "|---|" + "---|" * len(bits)]
    lines += [f"| {m} | " + " | ".join(cell.get((m, b), "") for b in bits) + " |" for m in methods]
    return "\n".join(lines) + "\n\n" + note


def paired_table(rows: list[dict], metric: str = "mAP50-95", baseline: str = "lsq") -> str:
    """Methods x bits: the paired difference to the baseline, or '' where there is nothing to pair."""
    diffs = paired_differences(rows, metric, baseline)
    act = next((activation_grid(d["method"]) for d in diffs if activation_grid(d["method"])), "")
    grids = (f"; a row on asymmetric activations against `{on_grid(baseline, act)}` (its own grid), and "
             f"`{on_grid(baseline, act)}` against the signed `{baseline}`" if act else "")
    return _differences_table(
        diffs, f"vs {baseline}, paired",
        f"{metric} x 100: mean of the per-seed differences to {baseline} on the seeds both ran, [95% confidence "
        f"interval, Student's t], n seeds; in bold where the interval excludes 0{grids}")


def qc_gain_table(rows: list[dict], metric: str = "mAP50-95") -> str:
    """QC rows x bits: what QC adds to the QAT model it corrected, or '' where no QC row has its base."""
    return _differences_table(
        qc_gains(rows, metric), "what QC adds, paired",
        f"{metric} x 100: each QC model minus the QAT model it corrected (the label before +QC), per seed; mean [95% "
        "confidence interval], n seeds; in bold where the interval excludes 0")


def _sections(rows: list[dict], metric: str) -> str:
    """The table, the paired differences to LSQ, what QC adds and the paper's claims, for one model and metric;
    each extra table is left out where the runs give it nothing to show."""
    from yoloq.report.claims import claims_table  # it builds on this module

    table = markdown_table(rows, metric)
    for extra in (paired_table(rows, metric), qc_gain_table(rows, metric), claims_table(rows, metric)):
        if extra:
            table += "\n\n" + extra
    return table


def _write_csv(rows: list[dict], path: Path) -> None:
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))  # seg runs add mask
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, buffer.getvalue())


def _metrics(rows: list[dict], metric: str) -> list[str]:
    """The report's metric, and for -seg runs its mask counterpart after it."""
    mask = "mask_" + metric
    return [metric] + ([mask] if mask in METRICS and any(mask in r for r in rows) else [])


def _headed(metric: str, text: str, n_metrics: int) -> str:
    return f"### {metric}\n\n{text}" if n_metrics > 1 else text


def write_report(rows: list[dict], out: Path, metric: str = "mAP50-95") -> str:
    """compare.md (the table, the paired differences to LSQ, what QC adds, the paper's claims checked and the QAT
    curves; for -seg runs the mask tables follow the box ones), compare.csv (one row per run and stage),
    compare.png (the bar chart) and curves.png (mAP by QAT epoch). Runs of several models (e.g.
    `experiment=other_models`) are never pooled: each model gets its own report in `out/<model>/`, and the
    top-level compare.md holds each model's tables and a link to its report."""
    out.mkdir(parents=True, exist_ok=True)
    models = sorted({r.get("model", "") for r in rows})
    if len(models) > 1:
        parts = []
        for model in models:
            name = model or "unnamed"  # runs whose config names no model
            own = [r for r in rows if r.get("model", "") == model]
            write_report(own, out / name, metric)
            metrics = _metrics(own, metric)
            tables = "\n\n".join(_headed(m, markdown_table(own, m), len(metrics)) for m in metrics)
            parts.append(f"## {name}\n\n{tables}\n\nFull report: [{name}/compare.md]({name}/compare.md)")
        table = "\n\n".join(parts)
        write_text_atomic(out / "compare.md", table + "\n")
        _write_csv(rows, out / "compare.csv")
        return table
    from yoloq.report.curves import collect_curves, curves_figure, curves_table  # it builds on this module

    metrics = _metrics(rows, metric)
    table = "\n\n".join(_headed(m, _sections(rows, m), len(metrics)) for m in metrics)
    curves = collect_curves(sorted({Path(r["run"]) for r in rows}), metric)
    if curves:
        table += "\n\n" + curves_table(curves, metric) + "\n\n![QAT curves](curves.png)"
        save(curves_figure(curves, metric), out / "curves.png")
    write_text_atomic(out / "compare.md", table + "\n")
    _write_csv(rows, out / "compare.csv")
    save(method_comparison(*grid(rows, metric), metric=metric), out / "compare.png")
    return table
