"""The diagnostic figures, drawn from the recorded series (grid.py, oscillation_history.py,
scale_history.py). Each function returns a matplotlib Figure built without pyplot (no global state, no GUI
backend, no font downloads); save() writes it as a PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure


def save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return Path(path)


def _short(name: str) -> str:
    return name.replace("model.", "").replace(".conv", "")


def grid_distribution(summaries: dict[str, dict]) -> Figure:
    """Left: density of the fractional part of w/s over the low-bit layers, one line per model (e.g. the
    trained latent weights and their EMA). Right: each layer's % of weights near a rounding threshold."""
    fig = Figure(figsize=(12, 4))
    ax, bars = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.6]})
    first = next(iter(summaries.values()))
    near = first["near"]
    ax.axvspan(0.5 - near, 0.5 + near, color="tab:red", alpha=0.12, label=f"within {near} of a threshold")
    for label, s in summaries.items():
        edges = np.asarray(s["bin_edges"])
        ax.plot((edges[:-1] + edges[1:]) / 2, s["density"], label=f"{label}: {s['near_pct']:.1f}% near")
    ax.axhline(1.0, color="gray", lw=0.8, ls="--")
    ax.set(xlabel="fractional part of w / s", ylabel="density", title="latent weights vs the grid", xlim=(0, 1))
    ax.legend(fontsize=8)
    width = 0.8 / len(summaries)
    for i, (label, s) in enumerate(summaries.items()):
        layers = list(s["per_layer_near_pct"])
        x = np.arange(len(layers)) + i * width
        bars.bar(x, [s["per_layer_near_pct"][n] for n in layers], width=width, label=label)
    bars.axhline(100 * 2 * near, color="gray", lw=0.8, ls="--", label="uniform")
    bars.set_xticks(np.arange(len(layers)) + 0.4 - width / 2, [_short(n) for n in layers], rotation=90, fontsize=6)
    bars.set(ylabel="% of weights near a threshold", title="per layer")
    bars.legend(fontsize=8)
    return fig


def oscillation_history(series: dict, threshold: float = 0.005) -> Figure:
    """Top: the overall % of oscillating weights over training. Bottom: per layer (rows) over steps."""
    fig = Figure(figsize=(10, 7))
    top, heat = fig.subplots(2, 1, gridspec_kw={"height_ratios": [1, 2]}, sharex=True)
    steps = np.asarray(series["steps"])
    top.plot(steps, series["overall_pct"], color="tab:red")
    top.set(ylabel="% oscillating", title=f"weights with oscillation frequency f > {threshold}")
    shares = np.asarray(series["oscillating_pct"]).T  # layers x steps
    if shares.size:
        pad = 0.5 if steps[0] == steps[-1] else 0.0  # one sample still gets a visible column
        image = heat.imshow(shares, aspect="auto", interpolation="nearest", cmap="magma",
                            extent=(steps[0] - pad, steps[-1] + pad, len(series["layers"]) - 0.5, -0.5))
        fig.colorbar(image, ax=[top, heat], label="% oscillating")  # both axes shrink alike: steps line up
    heat.set_yticks(range(len(series["layers"])), [_short(n) for n in series["layers"]], fontsize=6)
    heat.set(xlabel="QAT step", ylabel="layer")
    return fig


def pick_scales(series: dict, kind: str, k: int, max_bits: int = 4) -> list[int]:
    """The k low-bit quantizers of a kind (w or a) whose raw scale moved most (std / mean over the window)."""
    raw = np.asarray(series["raw"])
    idx = [i for i, (n, b) in enumerate(zip(series["names"], series["bits"])) if n.startswith(kind + "/")
           and b <= max_bits]
    if not raw.size or not idx:
        return []
    spread = raw[:, idx].std(0) / np.maximum(np.abs(raw[:, idx].mean(0)), 1e-12)
    return [idx[j] for j in np.argsort(-spread)[:k]]


def scale_trajectories(series: dict, k: int = 4) -> Figure:
    """Rows: weight and activation scales; columns: the k low-bit quantizers whose scale moved most. The
    trained model's scale (thin) and, when the method keeps one, its EMA (thick)."""
    fig = Figure(figsize=(3.2 * k, 5.5))
    axes = fig.subplots(2, k, squeeze=False)
    steps = np.asarray(series["steps"])
    raw = np.asarray(series["raw"])
    ema = None if series["ema"] is None else np.asarray(series["ema"])
    for row, kind in enumerate(("w", "a")):
        picks = pick_scales(series, kind, k)
        for col in range(k):
            ax = axes[row][col]
            if col >= len(picks):
                ax.set_axis_off()
                continue
            i = picks[col]
            ax.plot(steps, raw[:, i], lw=0.8, color="tab:blue", label="trained")
            if ema is not None:
                ax.plot(steps, ema[:, i], lw=2.0, color="tab:orange", label="EMA")
            ax.set_title(f"{'weight' if kind == 'w' else 'activation'} scale {_short(series['names'][i][2:])}",
                         fontsize=8)
            ax.tick_params(labelsize=7)
            if row == 1:
                ax.set_xlabel("QAT step", fontsize=8)
        axes[row][0].set_ylabel("scale s")
    axes[0][0].legend(fontsize=7)
    return fig


def method_comparison(cells: dict[tuple[str, str], list[float]], labels: list[str], bits: list[str],
                      fp: list[float], metric: str = "mAP50-95") -> Figure:
    """Grouped bars: methods along x, one bar per bit width, mean over seeds with min-max whiskers and the
    seeds as dots; the FP model as a dashed line."""
    fig = Figure(figsize=(max(6, 1.1 * len(labels) + 2), 4))
    ax = fig.subplots()
    width = 0.8 / max(len(bits), 1)
    for j, b in enumerate(bits):
        x = np.arange(len(labels)) + j * width
        vals = [100 * np.asarray(cells.get((m, b), [np.nan])) for m in labels]
        means = [v.mean() for v in vals]
        lo = [m - v.min() for m, v in zip(means, vals)]
        hi = [v.max() - m for m, v in zip(means, vals)]
        ax.bar(x, means, width=width, yerr=[lo, hi], capsize=3, label=b)
        for xi, v in zip(x, vals):
            ax.plot([xi] * len(v), v, "k.", ms=3)
    for v in fp:
        ax.axhline(100 * v, color="gray", ls="--", lw=1, label=f"FP {100 * v:.1f}")
    upright = max(map(len, labels), default=0) > 10  # long variant labels (`ema asym int-zp+QC[3 ep]`) overlap flat
    ax.set_xticks(np.arange(len(labels)) + 0.4 - width / 2, labels, rotation=90 if upright else 0)
    finite = [100 * x for vs in cells.values() for x in vs]
    if finite:
        ax.set_ylim(max(0, min(finite) - 10), max(finite + [100 * v for v in fp]) + 3)
    ax.set(ylabel=f"{metric} x 100", title="methods on one FP model (mean over seeds, min-max)")
    ax.legend(fontsize=8)
    return fig
