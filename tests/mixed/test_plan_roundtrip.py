"""A layer_bits plan through the whole run: quantization, QAT, QC and the deploy form, the checkpoint (scored
again), resume (which refuses another plan) and the ONNX export; and its one-line errors."""

import json

import pytest
import torch
import yaml

from tests.conftest import compose_config
from yoloq.config import validate
from yoloq.engine.pipeline import train
from yoloq.errors import UserError
from yoloq.eval.checkpoint_eval import evaluate_checkpoint
from yoloq.eval.coco_eval import finite
from yoloq.export.command import export_checkpoint
from yoloq.mixed.cost import bops, conv_macs
from yoloq.mixed.plan import checked_plan, read_plan
from yoloq.models.build import build_model, high_precision_layers

PLAN = {"model.2.cv1.conv": {"w_bits": 2, "a_bits": 3},   # a C3 pair: one activation, so one a_bits
        "model.2.cv2.conv": {"w_bits": 3, "a_bits": 3},
        "model.9.cv2.conv": {"w_bits": 2, "a_bits": 2}}


def write(path, layers):
    path.write_text(yaml.safe_dump({"budget_bops": 1, "layers": layers}))
    return path


def planned_bits(state: dict) -> dict:
    return {name: (int(state[f"{name}.weight_quantizer.bits"]) if f"{name}.weight_quantizer.bits" in state else None)
            for name in PLAN}


def test_a_plan_round_trips_through_run_checkpoint_resume_deploy_and_export(tiny_cfg, tmp_path):
    plan = write(tmp_path / "layer_bits.yaml", PLAN)
    results = train(tiny_cfg("bits=4", "method=ema_qc", f"quant.layer_bits={plan}"))
    run = tmp_path / "run"
    # the plan's compute and average bits next to its mAP (results.json; the uniform W4A4 rule: 2 layers lower)
    cost = json.loads((run / "results.json").read_text())[1]["extra"]
    model = build_model("yolov5n.yaml", tuple(torch.load(run / "qat.pt", weights_only=True)["names"]))
    macs, high = conv_macs(model, 128), high_precision_layers(model)
    bits = {n: (8, 8) if n in high else (4, 4) for n in macs}
    bits.update({n: (b["w_bits"], b["a_bits"]) for n, b in PLAN.items()})
    assert cost["GBOPs"] == pytest.approx(bops(macs, bits) / 1e9)
    assert 4 < cost["avg_w_bits"] < 8 and cost["avg_a_bits"] > 4
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["quant"]["layer_bits"] == {"layers": PLAN}  # the mapping, not the file's path

    for ckpt in ("qat.pt", "folded.pt"):  # the quantized model rebuilt from the checkpoint alone
        cfg = compose_config([f"+checkpoint={run / ckpt}", f"cache_dir={tmp_path / 'cache'}"])
        metrics = evaluate_checkpoint(cfg, tmp_path / f"eval-{ckpt}")
        stage = {"qat.pt": "qat", "folded.pt": "folded"}[ckpt]
        assert finite(metrics["pycocotools"]) == finite(next(r for r in results if r.stage == stage).metrics)
    folded = results[-1]
    assert folded.stage == "folded" and folded.extra["deploy_mean_diff"] < 0.05  # the integer deploy form agrees

    exported = export_checkpoint(compose_config([f"+checkpoint={run / 'folded.pt'}", f"cache_dir={tmp_path / 'cache'}"]),
                                 tmp_path / "export")
    layers = json.loads((tmp_path / "export" / "model.json").read_text())["layers"]
    for name, bits in PLAN.items():
        assert (layers[name]["w_bits"], layers[name]["a_bits"]) == (bits["w_bits"], bits["a_bits"])
    assert layers["model.3.conv"]["w_bits"] == 4 and exported["check"]["onnx_within_2lsb"] >= 0.999

    # resume: the finished QAT stage is loaded under the same plan, and refused under another
    for name in ("results.json", "qc.pt", "folded.pt"):
        (run / name).unlink()
    other = write(tmp_path / "other.yaml", {**PLAN, "model.9.cv2.conv": {"w_bits": 3, "a_bits": 3}})
    with pytest.raises(UserError, match=r"another run \(quant.layer_bits=\w+\) than this one"):
        train(tiny_cfg("bits=4", "method=ema_qc", f"quant.layer_bits={other}", "resume=true"))
    again = train(tiny_cfg("bits=4", "method=ema_qc", f"quant.layer_bits={plan}", "resume=true"))
    assert finite(again[1].metrics) == finite(results[1].metrics)


def test_bad_plans_are_one_line(tmp_path):
    with pytest.raises(UserError, match="quant.layer_bits=.*nowhere.yaml does not exist"):
        read_plan(str(tmp_path / "nowhere.yaml"))
    with pytest.raises(UserError, match=r"model.2.cv1.conv: w_bits=9 is out of range: use an integer from 2 to 8"):
        read_plan(str(write(tmp_path / "a.yaml", {"model.2.cv1.conv": {"w_bits": 9, "a_bits": 4}})))
    (tmp_path / "b.yaml").write_text("model.2.cv1.conv: 4\n")
    with pytest.raises(UserError, match="has no `layers:` key"):
        read_plan(str(tmp_path / "b.yaml"))
    model = build_model("yolov5n.yaml", ("a", "b", "c"))
    high = high_precision_layers(model)
    unknown = compose_config([f"quant.layer_bits={write(tmp_path / 'c.yaml', {'model.99.conv': {'w_bits': 4, 'a_bits': 4}})}"])
    validate(unknown)  # the names are checked against the model, once it is built
    with pytest.raises(UserError, match=r"no quantizable conv for \(model.99.conv\): use names such as"):
        checked_plan(unknown, model, high)
    split = compose_config([f"quant.layer_bits={write(tmp_path / 'd.yaml', {'model.2.cv1.conv': {'w_bits': 4, 'a_bits': 2}})}"])
    with pytest.raises(UserError, match=r"model.2.cv1.conv \(a_bits=2\) and model.2.cv2.conv \(a_bits=4\) read the same"):
        checked_plan(split, model, high)
