"""Every method runs end to end (tiny data, one QAT epoch) on one shared cached FP model."""

import json

import pytest
import torch

from tests.conftest import TINY, compose_config
from yoloq.engine.pipeline import train
from yoloq.eval.checkpoint_eval import evaluate_checkpoint
from yoloq.eval.coco_eval import finite

METHODS = ["lsq", "dampen", "freeze", "ema", "lsq_qc", "dampen_qc", "freeze_qc", "ema_qc"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("methods-cache")


def run(cache, tmp_path, *overrides):
    cfg = compose_config(TINY + [f"cache_dir={cache}", f"run_dir={tmp_path / 'run'}", *overrides])
    return cfg, train(cfg)


@pytest.mark.parametrize("method, extra", [(m, []) for m in METHODS] + [
    *(pytest.param(m, ["quant.per_channel=true"], marks=pytest.mark.slow) for m in ("dampen", "freeze_qc")),
    ("ema_qc", ["quant.per_channel=true", "method.qc.per_channel=false"]),
    # every method family on the v7 and the seg model (EMA+QC in the default run, the others with -m slow)
    ("ema_qc", ["model=yolov7-tiny"]), ("ema_qc", ["model=yolov5n-seg"]),
    *(pytest.param(m, [f"model={model}"], marks=pytest.mark.slow)
      for m, model in (("freeze", "yolov7-tiny"), ("dampen_qc", "yolov7-tiny"), ("lsq_qc", "yolov7-tiny"),
                       ("dampen", "yolov5n-seg"), ("freeze_qc", "yolov5n-seg"), ("lsq", "yolov5n-seg"))),
])
def test_method_runs_end_to_end(cache, tmp_path, method, extra):
    cfg, results = run(cache, tmp_path, f"method={method}", "bits=3", *extra)
    stages = [r.stage for r in results]
    assert stages == (["fp", "qat", "qc", "folded"] if method.endswith("_qc") else ["fp", "qat"])
    assert all(r.method == method for r in results[1:])
    qat = torch.load(results[1].checkpoint, weights_only=True)
    assert "TrackOscillations" in qat["callbacks"]
    assert ("EMACallback" in qat["callbacks"]) == method.startswith("ema")
    assert 0 <= results[1].extra["oscillating_pct"] <= 100
    assert all(("mask_mAP50-95" in r.metrics) == ("-seg" in cfg.model.name) for r in results)
    per_layer = json.loads((tmp_path / "run" / "oscillations.json").read_text())["per_layer"]
    assert per_layer and all("model.0." not in name for name in per_layer)  # the 8-bit stem is not tracked
    if method.endswith("_qc"):
        folded = results[3]
        # equal up to rare rounding-threshold flips (a wrong fold is off by pixels everywhere)
        assert folded.extra["fold_mean_diff"] < 0.05 and folded.extra["deploy_mean_diff"] < 0.05
        assert abs(folded.extra["deploy_mAP50-95"] - folded.metrics["mAP50-95"]) < 0.02
        qc_state = torch.load(results[2].checkpoint, weights_only=True)["model"]
        assert any(k.endswith("correction.gamma") for k in qc_state)
        # scripts/eval.py rebuilds the QC and the folded model from their checkpoints and scores them the same
        for stage in results[2:]:
            ev = compose_config(TINY + [f"cache_dir={cache}", f"+checkpoint={stage.checkpoint}"])
            assert finite(evaluate_checkpoint(ev, tmp_path / f"eval-{stage.stage}")["pycocotools"]) == \
                finite(stage.metrics)


def test_soft_rounding_adds_a_row(cache, tmp_path):
    _, results = run(cache, tmp_path, "method=lsq", "bits=3", "eval.soft_round=0.45")
    assert [r.stage for r in results] == ["fp", "qat", "qat-soft"]
    assert results[2].extra == {"soft_round": 0.45} and results[2].checkpoint == results[1].checkpoint


def test_seed_varies_qat_but_not_the_fp_model(cache, tmp_path):
    _, a = run(cache, tmp_path, "method=lsq", "seed=0")
    _, b = run(cache, tmp_path, "method=lsq", "seed=1", f"run_dir={tmp_path / 'run-seed1'}")
    assert b[0].cached and b[0].checkpoint == a[0].checkpoint
    wa = torch.load(a[1].checkpoint, weights_only=True)["model"]
    wb = torch.load(b[1].checkpoint, weights_only=True)["model"]
    assert any(not torch.equal(wa[k], wb[k]) for k in wa)  # other augmentation and batch order


def test_distillation_changes_qat_and_records_its_error_per_epoch(cache, tmp_path):
    _, plain = run(cache, tmp_path, "method=ema", "seed=0")
    _, distilled = run(cache, tmp_path, "method=ema", "seed=0", "trainer.qat.distill=1.0",
                       f"run_dir={tmp_path / 'run-distill'}")
    assert distilled[0].cached
    history = torch.load(distilled[1].checkpoint, weights_only=True)["history"]
    assert all(row["distill_error"] > 0 for row in history)  # the relative feature error of each epoch
    assert "distill_error" not in torch.load(plain[1].checkpoint, weights_only=True)["history"][0]
    wa = torch.load(plain[1].checkpoint, weights_only=True)["model"]
    wb = torch.load(distilled[1].checkpoint, weights_only=True)["model"]
    assert any(not torch.equal(wa[k], wb[k]) for k in wa)  # same seed and data: only the term differs
