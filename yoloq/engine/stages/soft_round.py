"""The QAT model evaluated with soft rounding (PAPER.md §6): no training, a Table 1 analysis."""

from __future__ import annotations

import logging
import time

from yoloq.engine import distributed
from yoloq.engine.report import StageResult
from yoloq.engine.run import Run
from yoloq.quant.prepare import soft_rounding

log = logging.getLogger("yoloq")


def soft_round_stage(run: Run, model, source: StageResult) -> StageResult:
    k = float(run.cfg.eval.soft_round)
    start = time.time()
    with soft_rounding(model, k):
        metrics = distributed.from_main(lambda: run.data.evaluator(model))
    log.info("soft rounding k=%g: mAP50-95 %.4f (hard %.4f)", k, metrics["mAP50-95"], source.metrics["mAP50-95"])
    run.log.log(f"{source.stage}-soft", {**metrics, "soft_round": k})
    return StageResult(f"{source.stage}-soft", source.method, source.w_bits, source.a_bits, metrics,
                       time.time() - start, source.checkpoint, extra={"soft_round": k})
