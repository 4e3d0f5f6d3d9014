"""The paper's claims checked on a collection of runs (issue 16): each claim is a signed sum of method rows at
one bit width (e.g. `ema+QC - ema`), taken per seed over the seeds that ran every term, then its mean with a
95% confidence interval (report/stats.py). The verdict follows from the interval alone, with a margin of
LEVEL points below which a gap counts as level:
- a claim that A beats B is *reproduced* when the interval lies above 0 (*reproduced, under LEVEL* when it
  also lies below +LEVEL: a real gain, smaller than any the paper reports), and *not reproduced* when it lies
  below +LEVEL without excluding 0 (no gain worth the name, or a loss);
- a claim that A is at least as good as B is *reproduced* when the interval lies above -LEVEL, and *not
  reproduced* when it lies below 0;
- anything else is *unclear at n seeds*, and so is one seed (no interval). A claim without runs is listed as
  not measured, with the experiment file that measures it.
Each claim is checked on every activation grid the runs trained on, within that grid (`ema asym int-zp - lsq asym
int-zp`), never across grids."""

from __future__ import annotations

from dataclasses import dataclass

from yoloq.report.compare import _by_seed, activation_grids, grid, on_grid
from yoloq.report.stats import mean_interval

LEVEL = 0.005  # half a mAP point: below the seed spread of every cell measured so far


@dataclass(frozen=True)
class Claim:
    text: str  # the claim as the paper states it
    source: str  # where in the paper
    terms: tuple[tuple[str, int], ...]  # (label, +1 or -1): the claim is that the sum is positive
    strict: bool = True  # A beats B; False: A is at least as good as B
    measured_by: str = "experiment=paper_grid"


QC_BASES = ("lsq", "dampen", "freeze", "ema")
CLAIMS = (
    Claim("dampening beats LSQ", "baselines table", (("dampen", 1), ("lsq", -1))),
    Claim("freezing beats LSQ", "Nagel et al. (ImageNet)", (("freeze", 1), ("lsq", -1))),
    Claim("EMA beats LSQ", "baselines table", (("ema", 1), ("lsq", -1))),
    Claim("EMA is at least as good as dampening", "baselines table", (("ema", 1), ("dampen", -1)), strict=False),
    Claim("EMA+QC beats dampening (the paper's best other baseline)", "baselines table",
          (("ema+QC", 1), ("dampen", -1))),
    *(Claim(f"QC helps {m}", "QC text, baselines table", ((f"{m}+QC", 1), (m, -1))) for m in QC_BASES),
    Claim("per-channel QC beats per-tensor QC", "Table 7", (("ema+QC", 1), ("ema+QC[per-tensor]", -1)),
          measured_by="experiment=qc_ablation"),
    Claim("scale + shift beats scale only", "Table 7", (("ema+QC", 1), ("ema+QC[scale only]", -1)),
          measured_by="experiment=qc_ablation"),
    Claim("scale + shift beats shift only", "Table 7", (("ema+QC", 1), ("ema+QC[shift only]", -1)),
          measured_by="experiment=qc_ablation"),
    *(Claim(f"soft rounding beats hard ({m})", "Table 1", ((f"{m} soft", 1), (m, -1))) for m in QC_BASES),
    Claim("per-channel weights alone are not better than per-tensor", "per-channel text",
          (("ema", 1), ("ema pc-W", -1)), strict=False, measured_by="experiment=per_channel_weights"),
    Claim("the `*` model (first and last layers low-bit) gains most from QC", "headline table",
          (("ema*+QC", 1), ("ema*", -1), ("ema+QC", -1), ("ema", 1)), measured_by="experiment=first_last_low"),
)


def verdict(low: float, high: float, n: int, strict: bool) -> str:
    if n < 2:
        return f"unclear at n={n}"
    if strict:
        if low > 0:
            return "reproduced" if high >= LEVEL else f"reproduced, under {100 * LEVEL:.1f} points"
        return "not reproduced" if high < LEVEL else f"unclear at n={n}"
    return "reproduced" if low > -LEVEL else "not reproduced" if high < 0 else f"unclear at n={n}"


def check(rows: list[dict], metric: str = "mAP50-95") -> list[dict]:
    """One entry per claim, activation grid and bit width the runs measure, with the claim's terms on that grid;
    a claim no run measures gets one `bits=None` entry."""
    by_seed = _by_seed(rows, metric)
    _, labels, all_bits, _ = grid(rows, metric)
    out = []
    for claim in CLAIMS:
        found = False
        for act in activation_grids(labels):
            terms = tuple((on_grid(label, act), sign) for label, sign in claim.terms)
            for bits in all_bits:
                cells = [by_seed.get((label, bits), {}) for label, _ in terms]
                seeds = sorted(set.intersection(*(set(c) for c in cells)))
                if not seeds:
                    continue
                found = True
                diffs = [sum(sign * c[s] for (_, sign), c in zip(terms, cells)) for s in seeds]
                mean, low, high = mean_interval(diffs)
                out.append({"claim": claim, "terms": terms, "bits": bits, "n": len(seeds), "mean": mean, "low": low,
                            "high": high, "verdict": verdict(low, high, len(seeds), claim.strict)})
        if not found:
            out.append({"claim": claim, "terms": claim.terms, "bits": None, "n": 0, "verdict": "not measured"})
    return out


def _expression(terms: tuple[tuple[str, int], ...]) -> str:
    text = " ".join(f"{'+' if sign > 0 else '-'} {label}" for label, sign in terms).removeprefix("+ ")
    return text.replace("- ", "− ")


def claims_table(rows: list[dict], metric: str = "mAP50-95") -> str:
    """Markdown: claim, paper source, what is compared, bits, our paired difference [95% CI] (n), verdict; empty
    when the runs measure none of the claims (e.g. a mixed-precision or -seg-only collection)."""
    entries = check(rows, metric)
    if not any(e["bits"] for e in entries):
        return ""
    lines = ["| paper's claim | paper | compared (per seed) | bits | yoloq, paired | verdict |",
             "|---|---|---|---|---|---|"]
    for e in entries:
        c = e["claim"]
        if e["bits"] is None:
            ours = f"not measured: `{c.measured_by}`"
        elif e["n"] < 2:
            ours = f"{100 * e['mean']:+.1f} (n=1)"
        else:
            ours = f"{100 * e['mean']:+.1f} [{100 * e['low']:+.1f}, {100 * e['high']:+.1f}] (n={e['n']})"
        lines.append(f"| {c.text} | {c.source} | {_expression(e['terms'])} | {e['bits'] or ''} | {ours} "
                     f"| {e['verdict']} |")
    note = (f"\n\n{metric} x 100. Verdicts from the 95% interval (Student's t over the per-seed values), with gaps "
            f"under {100 * LEVEL:.1f} points counted as level: 'A beats B' is reproduced when the interval lies "
            f"above 0 (noted when it also lies below +{100 * LEVEL:.1f}) and not reproduced when it lies below "
            f"+{100 * LEVEL:.1f} otherwise; 'A is at least as good as B' is "
            f"reproduced above -{100 * LEVEL:.1f} and not reproduced below 0; otherwise unclear.")
    return "\n".join(lines) + note
