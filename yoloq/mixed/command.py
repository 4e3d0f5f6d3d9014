"""`scripts/mixed_precision.py search=eagl|alps|random high=4 low=2 budget=3` (or `yoloq mixed ...`): a
per-layer precision plan for a trained model (the cached FP model, trained first if missing, or
`+checkpoint=` a run's checkpoint) within a BOPs budget, written to <run folder>/layer_bits.yaml and printed.
Train it with `python scripts/train.py quant.layer_bits=<run folder>/layer_bits.yaml method=ema_qc`."""

from __future__ import annotations

import copy
import logging
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from yoloq.config import quant_config, resolve_device
from yoloq.errors import UserError
from yoloq.mixed.alps import (QUANT_CONVS, alps_gain, alps_scores, candidate_key, check_high, finetune_fraction,
                              finetune_recipe, held_out_data, split_indices)
from yoloq.mixed.cost import conv_macs, weight_bytes
from yoloq.mixed.eagl import eagl_gain, layer_entropies
from yoloq.mixed.groups import shared_input_groups
from yoloq.mixed.plan import write_plan
from yoloq.mixed.search import Choice, choose, random_gains, uniform_bops
from yoloq.models.build import high_precision_layers

log = logging.getLogger("yoloq")
SEARCHES = ("eagl", "alps", "random")


def bit_choices(m) -> list[int]:
    """The candidate bit widths, high to low: mixed.bits (a list: multiple choice) or mixed.high / mixed.low."""
    bits = list(m.bits) if m.get("bits") else [m.high, m.low]
    if any(isinstance(b, bool) or not isinstance(b, int) or not 2 <= b <= 8 for b in bits) or len(set(bits)) < 2:
        raise UserError(f"mixed bit widths {bits} are not two or more different integers from 2 to 8: e.g. "
                        "high=4 low=2, or bits=[4,3,2]")
    return sorted(set(bits), reverse=True)


def validate_mixed(m) -> None:
    if m.search not in SEARCHES:
        raise UserError(f"search={m.search} is unknown: use one of {', '.join(SEARCHES)}")
    bit_choices(m)
    if m.search == "alps":  # before any training; the held-out share of the images is checked with the data
        split_indices(10**9, int(m.alps.holdout), finetune_fraction(m.alps.fraction, torch.device("cpu")))
    if m.get("budget_bops") is None and (isinstance(m.budget, bool) or not isinstance(m.budget, (int, float))
                                         or not 2 <= m.budget <= 8):
        raise UserError(f"budget={m.budget} must be a bit width from 2 to 8 (the BOPs of uniform WbAb with first and "
                        "last layers at 8), or give an absolute budget_bops=")


def trained_model(cfg, run_dir: Path):
    """(model, config it was trained with, where it came from): +checkpoint=, else the cached FP model."""
    if cfg.get("checkpoint"):
        from yoloq.eval.checkpoint_eval import model_from_checkpoint, read_run_checkpoint, with_saved_settings
        from yoloq.models.build import hyperparameters

        path, ckpt, saved = read_run_checkpoint(cfg)
        names = ckpt.get("names")
        if not names:
            raise UserError(f"{path} does not record its class names: give a checkpoint written by scripts/train.py")
        model = model_from_checkpoint(ckpt, saved, tuple(names), hyperparameters())
        return model.eval(), with_saved_settings(cfg, saved), f"checkpoint {path}"
    from yoloq.engine.preemption import StopSignal
    from yoloq.engine.run import Run
    from yoloq.engine.run_folder import RunFolder
    from yoloq.engine.stages.fp import fp_stage
    from yoloq.factory import build_data
    from yoloq.track.run_log import NullRunLog

    device = resolve_device(str(cfg.device))
    data = build_data(cfg, device)
    with StopSignal() as stop:
        run = Run(cfg, data, device, RunFolder(run_dir, cfg, data.info.names, NullRunLog(), False), stop)
        model, result = fp_stage(run)
    return model.cpu().eval(), cfg, f"FP model {result.checkpoint} (mAP50-95 {result.metrics['mAP50-95']:.4f})"


def run_alps(cfg, model, groups, choices, run_dir: Path, source: str):
    """ALPS's held-out mAP per candidate (yoloq/mixed/alps.py) from `model` at choices[0], and its cost."""
    from yoloq.factory import build_data, calibration_batches
    from yoloq.quant import quantize_model

    device = resolve_device(str(cfg.device))
    data = build_data(cfg, device)
    held = held_out_data(cfg, data, device)
    calib = calibration_batches(cfg, data, device)
    high = choices[0]
    if any(isinstance(m, QUANT_CONVS) for m in model.modules()):
        check_high(model, groups, high)
        start_model = model
    else:  # the FP model at the high precision everywhere but the first and last layers
        start_model = quantize_model(copy.deepcopy(model).to(device), quant_config(cfg), calib,
                                     high_precision_layers(model), layer_bits={n: (high, high) for g in groups for n in g})
    a = cfg.mixed.alps
    identity = {"source": source, "choices": choices, "holdout": int(a.holdout),
                "fraction": finetune_fraction(a.fraction, device),
                "seed": int(cfg.seed), "recipe": str(finetune_recipe(cfg)), "calib_batches": int(cfg.quant.calib_batches)}
    scores, cost = alps_scores(cfg, start_model.to(device), groups, choices, held, calib, device,
                               run_dir / "alps_scores.json", identity, progress=bool(cfg.progress))
    log.info("ALPS: %d candidates (%d fine-tuning steps each on %d images, held-out %d images; %d scored before, "
             "in alps_scores.json) in %.1f min; held-out mAP50-95 at W%dA%d %.4f", cost["alps_candidates"],
             cost["alps_steps_per_candidate"], cost["alps_finetune_images"], cost["alps_holdout_images"],
             cost["alps_reused_candidates"], cost["alps_seconds"] / 60, high, high, scores["base"])
    return scores, {**cost, "alps_base_mAP50-95": scores["base"]}


def table(groups, macs, choice: Choice, scores: dict[str, float] | None, score_name: str = "score") -> str:
    lines = [f"{'bits':>4} | {'MMACs':>7} | {score_name:>8} | layers", f"{'-' * 4}-+-{'-' * 7}-+-{'-' * 8}-+-{'-' * 30}"]
    chosen = {n: b for n, (b, _) in choice.plan.items()}
    for g in groups:
        if g[0] not in chosen:
            continue
        score = "" if scores is None else f"{sum(scores[n] for n in g) / len(g):8.4f}"
        lines.append(f"{chosen[g[0]]:>4} | {sum(macs[n] for n in g) / 1e6:7.2f} | {score:>8} | {', '.join(g)}")
    return "\n".join(lines)


def mixed_search(cfg, run_dir: str | Path) -> dict:
    m = cfg.mixed
    validate_mixed(m)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    choices = bit_choices(m)
    model, cfg, source = trained_model(cfg, run_dir)
    start = time.time()
    imgsz = int(cfg.data.imgsz)
    macs = conv_macs(model, imgsz)
    high = high_precision_layers(model)
    qcfg = quant_config(cfg)
    fixed = {n: qcfg.for_layer(True) for n in high}
    groups = shared_input_groups(model)
    budget = int(m.budget_bops) if m.get("budget_bops") is not None else int(uniform_bops(macs, float(m.budget), fixed))
    scores, extra, prefer = None, {}, None
    if m.search == "eagl":
        scores = layer_entropies(model, choices[0], bool(cfg.quant.per_channel))
        gain = lambda g, b: sum(eagl_gain(scores[n], b, choices[-1]) for n in g)  # noqa: E731
    elif m.search == "alps":
        free = [g for g in groups if not set(g) & set(fixed)]
        alps, extra = run_alps(cfg, model, free, choices, run_dir, source)
        gain = alps_gain(alps, choices)
        scores = {n: alps["base"] - alps[candidate_key(g, choices[-1])] for g in free for n in g}
        prefer = lambda g: scores[g[0]]  # noqa: E731  (the raw drop: spare budget goes to the likeliest to matter)
    else:
        gain = random_gains(int(cfg.seed))
    choice = choose(groups, macs, choices, gain, budget, fixed, prefer)
    seconds = time.time() - start
    all_bits = {**fixed, **choice.plan}
    figures = {
        "search": m.search, "source": source, "choices": choices, "budget_bops": choice.budget_bops,
        "bops": choice.bops, "budget_uniform_bits": None if m.get("budget_bops") is not None else m.budget,
        "uniform_bops": {f"W{b}A{b}": uniform_bops(macs, b, fixed) for b in choices},
        "size_bytes": weight_bytes(model, all_bits), "predicted_gain": choice.predicted_gain,
        "groups_raised_to_fill_budget": choice.raised_to_fill,
        "avg_bits": sum(macs[n] * all_bits[n][0] for n in macs) / sum(macs.values()),
        "imgsz": imgsz, "search_seconds": round(seconds, 2), **extra,
    }
    write_plan(run_dir / "layer_bits.yaml", choice.plan, **figures)
    print(table(groups, macs, choice, scores if m.search != "random" else None,
                "H bits" if m.search == "eagl" else "mAP drop"))
    filled = (f" ({choice.raised_to_fill} groups of no measured gain kept high in budget the optimum left)"
              if choice.raised_to_fill else "")
    print(f"\n{m.search}: {len(choice.plan)} layers in {sum(1 for g in groups if g[0] in choice.plan)} groups; "
          f"{choice.bops / 1e9:.3f} GBOPs of a {choice.budget_bops / 1e9:.3f} budget{filled}; weights "
          f"{figures['size_bytes'] / 1024:.1f} KiB; searched in {seconds:.1f} s\n"
          f"wrote {run_dir / 'layer_bits.yaml'}; train it with: python scripts/train.py "
          f"quant.layer_bits={run_dir / 'layer_bits.yaml'} method=ema_qc", flush=True)
    return figures
