"""ALPS (accuracy-aware layer precision selection, arXiv 2301.13330, seed 001): from a model at the high
precision, lower one group of layers that must share a precision at a time, fine-tune briefly and measure the
mAP on images the fine-tuning never sees; a group whose lowering costs much mAP is worth keeping high.

Every candidate (the unlowered baseline too) starts from the same model and fine-tunes on the same images in the
same order, so the differences between candidates are the lowered layers' alone (paired). The held-out images are
the last `holdout` images of the training split (the val split stays the final test); the fine-tuning takes a
`fraction` of the others (the seed: one epoch, the default on a GPU; on CPU a tenth of one). Scores are kept in
alps_scores.json after every candidate, so a stopped search continues where it stopped."""

from __future__ import annotations

import copy
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from yoloq.atomic import write_json_atomic
from yoloq.data.epoch_loader import EpochLoader
from yoloq.data.loaders import IndexSubset, build_dataset
from yoloq.engine.trainer import Recipe, Trainer
from yoloq.errors import UserError
from yoloq.eval.coco_eval import CocoEvaluator
from yoloq.quant.qconv import QuantConv2d
from yoloq.quant.qconv_transpose import QuantConvTranspose2d

log = logging.getLogger("yoloq")
QUANT_CONVS = (QuantConv2d, QuantConvTranspose2d)


@dataclass
class HeldOut:
    """The search's data: a fine-tuning loader and an evaluator over disjoint images of the training split."""

    loader: EpochLoader
    evaluate: CocoEvaluator
    finetune_images: int
    holdout_images: int


CPU_FRACTION = 0.1  # a tenth of an epoch per candidate: a yolov5n search of 55 groups in 12-17 min on 2 CPU cores


def finetune_fraction(fraction, device: torch.device) -> float:
    """mixed.alps.fraction as a number: itself, or for `auto` the seed's one epoch on a GPU and a tenth of one on
    CPU."""
    if str(fraction) == "auto":
        return 1.0 if device.type == "cuda" else CPU_FRACTION
    try:
        return float(fraction)
    except (TypeError, ValueError):
        raise UserError(f"mixed.alps.fraction={fraction} is not a number: give a share of an epoch in (0, 1], "
                        "or auto (1 on a GPU, 0.1 on CPU)") from None


def split_indices(n: int, holdout: int, fraction: float) -> tuple[list[int], list[int]]:
    """(fine-tuning, held-out) image indices: the last `holdout` images held out, the first `fraction` of the
    rest for fine-tuning; disjoint by construction."""
    if not 0 < holdout <= n // 2:
        raise UserError(f"mixed.alps.holdout={holdout} must be from 1 to half the {n} training images: lower it")
    if not 0 < fraction <= 1:
        raise UserError(f"mixed.alps.fraction={fraction} must be in (0, 1]: the share of an epoch to fine-tune")
    rest = n - holdout
    return list(range(max(1, round(rest * fraction)))), list(range(rest, n))


def held_out_data(cfg, data, device: torch.device) -> HeldOut:
    """Loaders over the training split: the fine-tuning share (augmented, no mosaic: mosaic would draw
    held-out images in as partners) and the held-out images (as evaluation sees them), scored against the split's
    COCO json."""
    a, info = cfg.mixed.alps, data.info
    train = build_dataset(info, data.hyp, info.train_split, data.batch, train=True, mosaic=False)
    finetune, holdout = split_indices(len(train.im_files), int(a.holdout), finetune_fraction(a.fraction, device))
    loader = EpochLoader(IndexSubset(train, finetune), data.batch, data.workers, seed=int(cfg.seed))
    plain = build_dataset(info, data.hyp, info.train_split, data.batch * 2, train=False)
    subset = IndexSubset(plain, holdout)
    evaluator = CocoEvaluator(DataLoader(subset, batch_size=data.batch * 2, shuffle=False, num_workers=data.workers,
                                         collate_fn=subset.collate_fn),
                              info.annotations(info.train_split), info.category_ids, device, cfg.eval.conf,
                              cfg.eval.iou, cfg.eval.max_det, progress=False, task=str(cfg.model.get("task", "detect")))
    return HeldOut(loader, evaluator, len(finetune), len(holdout))


def layer_bits(model: nn.Module) -> dict[str, tuple[int | None, int | None]]:
    return {n: (m.w_bits, m.a_bits) for n, m in model.named_modules() if isinstance(m, QUANT_CONVS)}


@torch.no_grad()
def lower(model: nn.Module, names: list[str], bits: int, calib_batches: list[torch.Tensor]) -> None:
    """Put the named quantized convs at WbAb, in place, and initialise their scales for the new grid: weights from
    the weights, activations from the calibration images run through the model (the other layers as they are)."""
    modules = dict(model.named_modules())
    convs = [modules[n] for n in names]
    acts = []
    for conv in convs:
        conv.weight_quantizer.set_bits(bits)
        conv.weight_quantizer.init_from(conv.weight)
        if conv.act_quantizer is not None and all(conv.act_quantizer is not q for q in acts):
            conv.act_quantizer.set_bits(bits)
            acts.append(conv.act_quantizer)
    modes = {m: m.training for m in model.modules()}
    model.eval()
    for q in acts:
        q.start_observing()
    try:
        for imgs in calib_batches:
            model(imgs)
    finally:
        observers = [q.stop_observing() for q in acts]
        for m, training in modes.items():
            m.training = training
    for q, observer in zip(acts, observers):
        q.init_from_observer(observer)


def finetune_recipe(cfg) -> Recipe:
    """The QAT recipe's optimiser at ALPS's own constant lr, no warm-up: a short nudge, the same for every candidate
    (the QAT stage's lr0, meant to follow a warm-up, knocks a freshly lowered model about more than the layer does)."""
    q = cfg.trainer.qat
    return Recipe(epochs=1, optimizer=str(q.optimizer), lr0=float(cfg.mixed.alps.lr), lrf=1.0, momentum=float(q.momentum),
                  weight_decay=float(q.weight_decay), warmup_epochs=0, quant_lr=float(q.quant_lr),
                  act_quant_lr=None if q.get("act_quant_lr") is None else float(q.act_quant_lr), eval_every=1)


def candidate_key(group: list[str], bits: int) -> str:
    return f"{group[0]}@{bits}"


def alps_scores(cfg, model: nn.Module, groups: list[list[str]], choices: list[int], held: HeldOut,
                calib_batches: list[torch.Tensor], device: torch.device, scores_path, identity: dict,
                progress: bool = True) -> tuple[dict[str, float], dict]:
    """mAP50-95 on the held-out images of the model (at choices[0] everywhere) fine-tuned as is ('base') and with
    each group lowered to each other choice ('<group's first layer>@<bits>'), and the search's cost. Finished
    candidates of an earlier, stopped search with the same identity are reused from scores_path."""
    scores_path = Path(scores_path)
    done: dict[str, float] = {}
    earlier = {"seconds": 0.0, "steps": 0}  # the cost of the candidates scored before (a stopped or reused search)
    if scores_path.is_file():
        saved = json.loads(scores_path.read_text())
        if saved.get("identity") == identity:
            done = saved["mAP"]
            earlier = saved.get("cost", earlier)
            log.info("ALPS: %d candidate(s) already scored in %s", len(done), scores_path)
    reused = len(done)
    todo = [("base", None, None)] + [(candidate_key(g, b), g, b) for g in groups for b in choices[1:]]
    recipe = finetune_recipe(cfg)
    start, steps = time.time(), 0
    bar = tqdm([t for t in todo if t[0] not in done], desc="ALPS", unit="candidate", disable=not progress)
    for key, group, bits in bar:
        candidate = copy.deepcopy(model).to(device)
        if group is not None:
            lower(candidate, group, bits, calib_batches)
        trainer = Trainer("alps", candidate, held.loader, held.evaluate, recipe, device, progress=False)
        quiet = log.level
        log.setLevel(logging.WARNING)  # one "epoch 1/1" line per candidate would bury the bar
        try:
            metrics = trainer.fit()
        finally:
            log.setLevel(quiet)
        steps += trainer.step
        done[key] = float(metrics["mAP50-95"])
        spent = {"seconds": earlier["seconds"] + time.time() - start, "steps": earlier["steps"] + steps}
        write_json_atomic(scores_path, {"identity": identity, "mAP": done, "cost": spent})
        bar.set_postfix({"last": key, "mAP": f"{done[key]:.4f}", "base": f"{done.get('base', float('nan')):.4f}"})
    # the whole search's cost, the candidates reused from alps_scores.json included (0 s for them would mislead)
    cost = {"alps_seconds": round(earlier["seconds"] + time.time() - start, 1),
            "alps_finetune_steps": earlier["steps"] + steps, "alps_candidates": len(todo),
            "alps_reused_candidates": reused, "alps_steps_per_candidate": len(held.loader),
            "alps_finetune_images": held.finetune_images, "alps_holdout_images": held.holdout_images}
    return done, cost


def alps_gain(scores: dict[str, float], choices: list[int]) -> Callable[[list[str], int], float]:
    """The knapsack's gain of a group at b bits over the lowest choice: the mAP its lowering to the lowest choice
    cost minus what lowering it to b costs (a drop below zero, noise, counts as none)."""

    def drop(group: list[str], b: int) -> float:
        return 0.0 if b == choices[0] else max(scores["base"] - scores[candidate_key(group, b)], 0.0)

    return lambda group, b: drop(group, choices[-1]) - drop(group, b)


def check_high(model: nn.Module, groups: list[list[str]], high: int) -> None:
    """ALPS lowers layers of a model at the high precision: a quantized start must have every free layer there."""
    bits = layer_bits(model)
    off = [n for g in groups for n in g if bits.get(n, (high, high)) != (high, high)]
    if off:
        raise UserError(f"ALPS starts from a model at W{high}A{high}, but {off[0]} (and {len(off) - 1} other layers) "
                        f"are at W{bits[off[0]][0]}A{bits[off[0]][1]}: give +checkpoint= of a W{high}A{high} run, "
                        "or none (the FP model, quantized at the high precision)")
