"""Quantization correction (PAPER.md §4): learn a per-channel affine after each quantized conv for one epoch
with everything else frozen, then fold it into BN and check the folded and integer deploy forms against it."""

from __future__ import annotations

import copy
import logging
import time

from yoloq.checkpoint import save_atomic
from yoloq.engine import distributed
from yoloq.engine.report import StageResult
from yoloq.engine.rng import seed_everything
from yoloq.engine.run import Run
from yoloq.engine.trainer import Recipe
from yoloq.eval.code_flips import code_flips, flip_summary
from yoloq.eval.output_diff import output_diff
from yoloq.methods.correction import FrozenBatchNorm
from yoloq.quant.correction import add_corrections, fold_corrections
from yoloq.quant.deploy import to_deploy
from yoloq.track.log_callback import LogMetrics

log = logging.getLogger("yoloq")


def qc_model(cfg, model, device):
    """A copy of the QAT model with everything frozen and a trainable correction after each quantized conv."""
    qc = cfg.method.qc
    model = copy.deepcopy(model).to(device)
    for p in model.parameters():
        p.requires_grad_(False)
    add_corrections(model, qc.per_channel, qc.scale, qc.shift)
    return model


def qc_recipe(cfg) -> Recipe:
    r = cfg.trainer.qc
    return Recipe(epochs=r.epochs, optimizer="adamw", lr0=r.lr, lrf=1.0, momentum=0.9, weight_decay=0.0,
                  warmup_epochs=0, eval_every=r.epochs)


def qc_stage(run: Run, model, calib_batches, source: StageResult):
    """([qc result, folded result], the folded model: None on ranks other than 0)."""
    cfg, run_dir = run.cfg, run.run_dir
    run.check_stop()
    seed_everything(cfg.seed)
    model = qc_model(cfg, model, run.device)
    done = run.folder.finished("qc")
    if done is not None:
        model.load_state_dict(done["model"])
        metrics, wall_time = done["metrics"], done["wall_time"]
    else:
        recipe_cfg = cfg.trainer.qc
        loader = run.data.train_loader(f"{cfg.seed}-qc", fraction=float(recipe_cfg.fraction), mosaic=recipe_cfg.mosaic)
        trainer = run.trainer("qc", model, loader, qc_recipe(cfg), [FrozenBatchNorm(), LogMetrics(run.log, "qc")])
        metrics = trainer.fit()
        wall_time = trainer.wall_time
        run.folder.save_final("qc", {"model": model.state_dict(), "metrics": metrics, "history": trainer.history,
                                     "wall_time": wall_time})
        run.stage_done("qc", trainer)
    qc_result = StageResult("qc", source.method, source.w_bits, source.a_bits, metrics, wall_time,
                            str(run_dir / "qc.pt"))
    kept = {}  # the folded model stays on rank 0: only the result is broadcast

    def fold() -> StageResult:
        result, kept["folded"] = fold_and_check(run, model, calib_batches[0], source)
        return result

    return [qc_result, distributed.from_main(fold)], kept.get("folded")


def fold_and_check(run: Run, model, imgs, source: StageResult):
    """Fold the corrections into BN; compare the folded and integer deploy forms with the QC model. Returns the
    folded stage's result and the folded model."""
    start = time.time()
    folded = copy.deepcopy(model).eval()
    n = fold_corrections(folded)
    deploy = to_deploy(copy.deepcopy(folded))
    fold_max, fold_mean = output_diff(model, folded, imgs)
    deploy_max, deploy_mean = output_diff(folded, deploy, imgs)
    log.info("QC: folded %d corrections; |output difference| folded vs QC: max %.3g mean %.3g; deploy form vs "
             "folded: max %.3g mean %.3g", n, fold_max, fold_mean, deploy_max, deploy_mean)
    # a large maximum is a flipped activation code; where it starts tells a harmless flip at the head from a cascade
    flips = code_flips(model, folded, imgs)
    log.info("QC: folded vs QC model, %s", flip_summary(flips))
    folded_metrics = run.data.evaluator(folded)
    # a flip in one low-bit activation cascades through later layers, so judge the deploy form by its mAP too
    deploy_map = run.data.evaluator(deploy)["mAP50-95"]
    log.info("QC: mAP50-95 folded %.4f, integer deploy form %.4f", folded_metrics["mAP50-95"], deploy_map)
    path = save_atomic({"model": folded.state_dict(), "metrics": folded_metrics, "config": run.folder.config(),
                        "names": list(run.data.info.names)},
                       run.run_dir / "folded.pt")
    extra = {"fold_max_diff": fold_max, "fold_mean_diff": fold_mean,
             "fold_flipped_layers": sum(share > 0 for share in flips.values()), "deploy_max_diff": deploy_max,
             "deploy_mean_diff": deploy_mean, "deploy_mAP50-95": deploy_map}
    run.log.log("folded", {**folded_metrics, **extra})
    return StageResult("folded", source.method, source.w_bits, source.a_bits, folded_metrics, time.time() - start,
                       str(path), extra=extra), folded

