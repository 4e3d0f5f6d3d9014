"""Slow (`python -m pytest -m slow`): on a small but learnable set, the FP model learns, W4A4 QAT keeps
much of it, and QC's folded and integer deploy forms score what the QC model scores. The tiny runs of
the default suite are too small to learn anything, so only this test would notice a method that breaks
learning."""

import pytest

from tests.conftest import compose_config
from yoloq.engine.pipeline import train

SMALL = ["data.n_train=600", "data.n_val=100", "data.img_size=128", "data.imgsz=128", "data.max_object=64",
         "trainer.batch=8", "trainer.workers=2", "trainer.fp.epochs=8", "trainer.fp.eval_every=8",
         "trainer.qat.epochs=2", "quant.calib_batches=2", "progress=false"]


@pytest.mark.slow
def test_fp_learns_and_qat_qc_fold_keep_it(tmp_path):
    cfg = compose_config(SMALL + [f"cache_dir={tmp_path / 'cache'}", f"run_dir={tmp_path / 'run'}", "bits=4",
                                  "method=ema_qc"])
    fp, qat, qc, folded = train(cfg)
    assert fp.metrics["mAP50-95"] > 0.1, fp.metrics
    assert 0.3 * fp.metrics["mAP50-95"] < qat.metrics["mAP50-95"] <= fp.metrics["mAP50-95"] + 0.02
    assert abs(folded.metrics["mAP50-95"] - qc.metrics["mAP50-95"]) < 0.01
    assert abs(folded.extra["deploy_mAP50-95"] - folded.metrics["mAP50-95"]) < 0.01
