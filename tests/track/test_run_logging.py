"""A real tiny run with logger=wandb: the local metrics.jsonl and the offline W&B run hold the same
numbers as results.json, and the QAT diagnostics land in the run folder."""

import json

from PIL import Image

from tests.conftest import TINY, compose_config
from tests.track.wandb_records import read_offline_run
from yoloq.engine.pipeline import train
from yoloq.track.local_log import read_jsonl


def test_tiny_run_logs_locally_and_to_offline_wandb(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    run_dir = tmp_path / "run"
    cfg = compose_config(TINY + [f"cache_dir={tmp_path / 'cache'}", f"run_dir={run_dir}", "bits=3", "method=ema_qc",
                                 "trainer.qat.epochs=2", "logger=wandb", "logger.wandb.mode=offline",
                                 "logger.log_every=2", "experiment_name=tiny-exp",
                                 "logger.wandb.log_checkpoint=true"])
    results = {r.stage: r for r in train(cfg)}
    n_qat_steps = 2 * 6  # 48 images / batch 8, two epochs

    records = read_jsonl(run_dir / "metrics.jsonl")
    qat_steps = [r for r in records if r["kind"] == "qat"]
    assert [r["step"] for r in qat_steps] == [6 + s for s in range(2, n_qat_steps + 1, 2)]  # after 6 FP steps
    assert all(r["box_loss"] > 0 and "lr/pg0" in r and "lr/quant" in r for r in qat_steps)
    qat_epochs = [r for r in records if r["kind"] == "qat-epoch"]
    assert [r["epoch"] for r in qat_epochs] == [1, 2]
    assert qat_epochs[-1]["mAP50-95"] == results["qat"].metrics["mAP50-95"]
    assert qat_epochs[-1]["oscillating_pct"] == results["qat"].extra["oscillating_pct"]
    scales = [r for r in records if r["kind"] == "qat-scale"][-1]
    assert scales["w/model.2.cv1.conv"] > 0 and scales["a/model.2.cv1.conv"] > 0
    summary = [r for r in records if r["kind"] == "summary"][-1]
    assert summary["folded/mAP50-95"] == results["folded"].metrics["mAP50-95"]
    assert {r["key"] for r in records if r["kind"] == "image"} == {
        "diagnostics/grid", "diagnostics/oscillations", "diagnostics/scales"}

    run = read_offline_run(run_dir)
    assert run["group"] == "tiny-exp" and run["tags"] == ["yolov5n", "w3a3", "ema_qc"]
    history = {row["_step"]: row for row in run["history"]}
    last = qat_steps[-1]
    assert history[last["step"]]["qat/box_loss"] == last["box_loss"]
    assert any(row.get("qat-epoch/mAP50-95") == results["qat"].metrics["mAP50-95"] for row in run["history"])
    assert run["summary"]["folded/mAP50-95"] == results["folded"].metrics["mAP50-95"]
    assert run["artifacts"] == [{"name": "run-folded", "type": "model", "files": ["folded.pt"]}]

    diag = json.loads((run_dir / "diagnostics.json").read_text())
    assert diag["oscillations"]["steps"] == list(range(2, n_qat_steps + 1, 2))
    assert len(diag["scales"]["steps"]) == n_qat_steps and diag["scales"]["ema"] is not None
    assert set(diag["grid"]) == {"trained", "EMA"}
    for name in ("grid", "oscillations", "scales"):
        with Image.open(run_dir / f"{name}.png") as im:
            assert im.format == "PNG"
