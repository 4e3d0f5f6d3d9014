"""The QAT stage's diagnostics: three PNGs in the run folder (grid.png, oscillations.png, scales.png),
their data in diagnostics.json, and the images in the run log (W&B when enabled)."""

from __future__ import annotations

import logging
import math
from pathlib import Path

from yoloq.track import plots
from yoloq.track.grid import grid_summary
from yoloq.atomic import write_json_atomic

log = logging.getLogger("yoloq")


def write_qat_diagnostics(run_dir: Path, model, ema_model, osc_history, scale_history, run_log,
                          max_bits: int = 4, threshold: float = 0.005) -> dict:
    """model: the trained (latent) model; ema_model: its EMA copy, or None when the method keeps none."""
    grids = {"trained": grid_summary(model, max_bits)}
    if ema_model is not None:
        grids["EMA"] = grid_summary(ema_model, max_bits)
    data = {"grid": grids, "oscillations": osc_history.series(), "scales": scale_history.series()}
    write_json_atomic(Path(run_dir) / "diagnostics.json", data, indent=None)
    figures = {"grid": plots.grid_distribution(grids),
               "oscillations": plots.oscillation_history(data["oscillations"], threshold),
               "scales": plots.scale_trajectories(data["scales"])}
    for name, fig in figures.items():
        path = plots.save(fig, Path(run_dir) / f"{name}.png")
        run_log.image(f"diagnostics/{name}", path)
    log.info("QAT diagnostics: %s; %s", ", ".join(f"{n}.png" for n in figures), threshold_note(grids["trained"], max_bits))
    return data


def threshold_note(summary: dict, max_bits: int) -> str:
    """The log's words for the share of weights next to a rounding threshold; a model with no layer at `max_bits`
    or fewer (an 8-bit control) has none to place on the grid, which is not a share of nan%."""
    if math.isnan(summary["near_pct"]):
        return f"no layer at {max_bits} bits or fewer, so no weights next to a rounding threshold to count"
    return f"{summary['near_pct']:.1f}% of the latent weights lie within {summary['near']:g} of a rounding threshold"
