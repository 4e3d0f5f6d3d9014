import json

import torch

from tests.conftest import TINY, compose_config
from yoloq.engine.pipeline import train
from yoloq.eval.checkpoint_eval import evaluate_checkpoint
from yoloq.export.command import export_checkpoint
from yoloq.eval.coco_eval import finite
from yoloq.quant import QuantConv2d


def test_tiny_end_to_end_run_and_fp_cache(tiny_cfg, tmp_path, capsys):
    cfg = tiny_cfg("bits=3", "method=lsq", "export.onnx=true")
    results = train(cfg)

    run = tmp_path / "run"
    rows = json.loads((run / "results.json").read_text())
    assert [r["stage"] for r in rows] == ["fp", "qat", "onnx"]
    # the run ends with its ONNX export, checked against the deploy form and scored by onnxruntime
    onnx_row = rows[2]
    assert onnx_row["checkpoint"] == str(run / "model.onnx") and (run / "model.json").is_file()
    assert onnx_row["extra"]["onnx_within_2lsb"] >= 0.999 and "deploy_mAP50-95" in onnx_row["extra"]
    assert set(onnx_row["metrics"]) >= {"mAP50-95", "mAP50"}
    check = json.loads((run / "onnx_check.json").read_text())
    assert set(check["parts"]) == {"boxes", "scores"} and check["onnx_mAP50-95"] == onnx_row["metrics"]["mAP50-95"]
    assert rows[1]["bits"] == "W3A3" and rows[1]["method"] == "lsq"
    for r in rows:
        assert set(r["metrics"]) >= {"mAP50-95", "mAP50", "AR100"} and r["wall_time_s"] > 0
    assert (run / "config.yaml").is_file() and (run / "train.log").is_file() and (run / "fp.pt").is_file()
    table = capsys.readouterr().out
    assert "stage" in table and "W3A3" in table and "FP32" in table and "onnx" in table

    # the same export from the command's code path, and the ONNX model scored like a checkpoint
    exported = export_checkpoint(compose_config([f"+checkpoint={run / 'qat.pt'}", f"cache_dir={tmp_path / 'cache'}"]),
                                 tmp_path / "export")
    assert exported["check"]["onnx_within_2lsb"] >= 0.999 and (tmp_path / "export" / "model.onnx").is_file()
    assert exported["check"]["images"] == "16 training images"  # trainer.batch: the default config's 16
    # a checkpoint whose dataset is not on this machine is checked on noise images (its class names are recorded)
    moved = torch.load(run / "qat.pt", weights_only=True)
    moved["config"]["data"] = {**moved["config"]["data"], "name": "coco", "root": str(tmp_path / "no-coco")}
    torch.save(moved, tmp_path / "moved.pt")
    exported = export_checkpoint(compose_config([f"+checkpoint={tmp_path / 'moved.pt'}",
                                                 f"cache_dir={tmp_path / 'cache'}"]), tmp_path / "export-moved")
    assert exported["check"]["images"] == "4 noise images" and exported["check"]["onnx_within_2lsb"] >= 0.999
    scored = evaluate_checkpoint(compose_config(TINY + [f"+onnx={tmp_path / 'export' / 'model.onnx'}",
                                                        f"cache_dir={tmp_path / 'cache'}"]), tmp_path / "eval")
    assert scored["pycocotools"]["mAP50-95"] == onnx_row["metrics"]["mAP50-95"]

    qat = torch.load(run / "qat.pt", weights_only=True)
    assert any(k.endswith("weight_quantizer.scale") for k in qat["model"])
    fp_ckpt = results[0].checkpoint

    assert rows[1]["extra"]["batch"] == 8 and rows[1]["extra"]["steps"] == 6  # 48 images a QAT epoch, trainer.batch
    # a second run with other bits and its own QAT batch starts from the identical cached FP model
    again = train(tiny_cfg("bits=4", f"run_dir={tmp_path / 'run2'}", "trainer.qat.batch=4"))  # (ema_qc, no export)
    assert again[0].cached and again[0].checkpoint == fp_ckpt
    assert finite(again[0].metrics) == finite(results[0].metrics)
    assert again[1].bits == "W4A4" and again[1].extra["batch"] == 4 and again[1].extra["steps"] == 12

    # qat_from: a per-tensor QC on that run's QAT model, which is loaded, not trained again
    qc_only = train(tiny_cfg("bits=4", f"run_dir={tmp_path / 'run3'}", f"qat_from={tmp_path / 'run2'}",
                             "method.qc.per_channel=false"))
    assert [r.stage for r in qc_only] == ["fp", "qat", "qc", "folded"]
    assert finite(qc_only[1].metrics) == finite(again[1].metrics) and qc_only[1].checkpoint == str(tmp_path / "run2" / "qat.pt")
    assert not (tmp_path / "run3" / "qat.pt").exists() and (tmp_path / "run3" / "folded.pt").is_file()
    per_channel, per_tensor = (torch.load(tmp_path / r / "folded.pt", weights_only=True)["model"] for r in ("run2", "run3"))
    assert any(not torch.equal(per_channel[k], per_tensor[k]) for k in per_channel)  # another correction folded in


def test_bits_apart_and_first_last_rule():
    cfg = compose_config(["w_bits=4", "a_bits=8"])
    assert (cfg.quant.w_bits, cfg.quant.a_bits) == (4, 8)
    cfg = compose_config(["bits=3"])
    assert (cfg.quant.w_bits, cfg.quant.a_bits, cfg.quant.first_last_bits) == (3, 3, 8)


def test_quantized_layers_and_bits(tiny_cfg):
    from yoloq.config import quant_config
    from yoloq.models.build import build_model, high_precision_layers
    from yoloq.quant import quantize_model

    cfg = tiny_cfg("bits=3")
    model = build_model("yolov5n.yaml", ("a", "b"))
    n_conv = sum(isinstance(m, torch.nn.Conv2d) for m in model.modules())
    quantize_model(model, quant_config(cfg), [torch.rand(2, 3, 64, 64)], high_precision_layers(model))
    q = {n: m for n, m in model.named_modules() if isinstance(m, QuantConv2d)}
    plain = [n for n, m in model.named_modules() if type(m) is torch.nn.Conv2d]
    assert plain == ["model.24.dfl.conv"]  # ultralytics' fixed DFL projection stays float
    assert len(q) == n_conv - 1
    eight = {n for n, m in q.items() if (m.w_bits, m.a_bits) == (8, 8)}
    assert eight == set(high_precision_layers(model))
    assert all((m.w_bits, m.a_bits) == (3, 3) for n, m in q.items() if n not in eight)


def test_checkpoint_eval_reproduces_the_run(tiny_cfg, tmp_path):
    from yoloq.eval.checkpoint_eval import evaluate_checkpoint

    results = train(tiny_cfg("bits=4", "trainer.qat.bn_refresh=2"))  # (ema_qc: the EMA copy is re-estimated)
    qat = next(stage for stage in results if stage.stage == "qat")
    saved = torch.load(qat.checkpoint, weights_only=True)
    # the stage scores the re-estimated model and records what the statistics training left scored
    assert qat.extra["bn_refresh"] == 2 and qat.extra["mAP50-95_saved_bn"] == saved["history"][-1]["mAP50-95"]
    assert finite(saved["metrics"]) == finite(qat.metrics)
    for stage in results:  # the FP cache file and the QAT checkpoint (re-estimated statistics) rebuild their model
        cfg = tiny_cfg(f"+checkpoint={stage.checkpoint}", "eval.ultralytics_check=true")
        metrics = evaluate_checkpoint(cfg, tmp_path / f"eval-{stage.stage}")
        assert finite(metrics["pycocotools"]) == finite(stage.metrics)
        assert set(metrics["ultralytics"]) == {"mAP50-95", "mAP50"}
        assert (tmp_path / f"eval-{stage.stage}" / "eval.json").is_file()
    refreshed = evaluate_checkpoint(tiny_cfg(f"+checkpoint={qat.checkpoint}", "eval.bn_refresh=2"),
                                    tmp_path / "eval-bn")  # re-estimated BN statistics: another model, same API
    assert 0 <= refreshed["pycocotools"]["mAP50-95"] <= 1
    assert json.loads((tmp_path / "eval-bn" / "eval.json").read_text())["bn_refresh"] == 2


def test_pretrained_weights_skip_fp_training(tiny_cfg, tmp_path):
    from yoloq.models.build import build_model

    src = build_model("yolov5n.yaml", tuple(f"c{i}" for i in range(6)))
    torch.save({"model": src.half()}, tmp_path / "pre.pt")  # same nc as the shapes data: everything transfers
    results = train(tiny_cfg(f"model.weights={tmp_path / 'pre.pt'}", "trainer.fp.epochs=5"))
    fp = torch.load(results[0].checkpoint, weights_only=True)
    assert fp["history"] == []  # no FP epoch ran
    assert torch.equal(fp["model"]["model.0.conv.weight"], src.state_dict()["model.0.conv.weight"].float())


def test_integer_zero_point_run_exports_uint8_zero_points(tiny_cfg, tmp_path):
    """The main command's whole path (EMA, QC fold, ONNX) with asymmetric activations on integer zero points."""
    import pytest

    from yoloq.errors import UserError

    with pytest.raises(UserError, match="act_zero_point='integer' needs quant.act_asymmetric=True"):
        train(tiny_cfg("bits=3", "quant.act_zero_point=integer"))
    train(tiny_cfg("bits=3", "quant.act_asymmetric=true", "quant.act_zero_point=integer", "export.onnx=true"))
    run = tmp_path / "run"
    rows = json.loads((run / "results.json").read_text())
    assert [r["stage"] for r in rows] == ["fp", "qat", "qc", "folded", "onnx"]
    assert rows[-1]["extra"]["onnx_within_2lsb"] >= 0.999
    layers = json.loads((run / "model.json").read_text())["layers"]
    zeros = [v["act_zero_point"] for v in layers.values() if v["a_bits"] == 3]
    assert len(zeros) > 50 and all(isinstance(z, int) and 0 <= z <= 7 for z in zeros) and any(zeros)
