"""Bad input on the command line: one line naming the problem and the fix, exit code 2, no traceback."""

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TINY
from yoloq.cli import hydra_entry

ROOT = Path(__file__).resolve().parent.parent


def run_train(*args, tmp_path):
    tiny = [o for o in TINY if "data=coco" not in args or not o.startswith("data.")]
    cmd = [sys.executable, str(ROOT / "scripts" / "train.py"), *tiny, f"cache_dir={tmp_path / 'cache'}",
           f"run_dir={tmp_path / 'run'}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)


def assert_one_line_error(proc, *words):
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert "Traceback" not in out
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, out
    for w in words:
        assert w in errors[0], errors[0]


def entry_in_process(command, argv, tmp_path, monkeypatch, capsys):
    """The scripts' own entry point (yoloq.cli.hydra_entry) without a new interpreter (torch's import costs
    seconds), expected to stop; returns what a subprocess run would have."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [f"{command}.py", *argv])
    with pytest.raises(SystemExit) as stop:
        hydra_entry(command)
    out = capsys.readouterr()
    return subprocess.CompletedProcess(argv, stop.value.code, out.out, out.err)


def train_in_process(*args, tmp_path, monkeypatch, capsys):
    tiny = [o for o in TINY if "data=coco" not in args or not o.startswith("data.")]
    argv = [*tiny, f"cache_dir={tmp_path / 'cache'}", f"run_dir={tmp_path / 'run'}", *args]
    return entry_in_process("train", argv, tmp_path, monkeypatch, capsys)


@pytest.mark.parametrize("args, words", [
    (["model=yolov9"], ["unknown model 'yolov9'", "yolov5n"]),
    (["bits=9"], ["bits=9", "2 to 8"]),
    (["bits=1"], ["bits=1", "2 to 8"]),
    (["w_bits=4", "a_bits=12"], ["a_bits=12"]),
    (["data=coco"], ["data.root"]),
    (["data=coco", "data.root=/no/such/coco"], ["/no/such/coco", "does not exist"]),
    (["model.weights=/no/such.pt"], ["/no/such.pt", "does not exist"]),
    (["trainer.qat.optimizer=lion"], ["trainer.qat.optimizer=lion", "sgd, adamw"]),
    (["method.ema.horizon=0"], ["method.ema.horizon=0", "share of the stage's steps in (0, 1]"]),
    (["method=adaround"], ["unknown method 'adaround'", "ema_qc", "dampen"]),
    (["eval.soft_round=0.7"], ["eval.soft_round=0.7", "(0, 0.5)"]),
    (["eval.bn_refresh=-1"], ["eval.bn_refresh=-1", ">= 0", "0: keep"]),
    (["trainer.qat.bn_refresh=1.5"], ["trainer.qat.bn_refresh=1.5", "whole number", "0: keep"]),
    (["trainer.qc.fraction=0"], ["trainer.qc.fraction=0", "(0, 1]"]),
    (["trainer.qat.batch=0"], ["trainer.qat.batch=0", "positive integer", "null"]),
    (["trainer.qat.distill=-1"], ["trainer.qat.distill=-1", ">= 0", "0 is off"]),
    (["method=ema_qc", "method.qc.scale=false", "method.qc.shift=false"], ["learn nothing"]),
    (["logger=tensorboard"], ["unknown logger 'tensorboard'", "wandb"]),
    (["experiment=table9"], ["unknown experiment 'table9'", "compare_methods", "paper_grid"]),
    (["+qc_variant=per_pixel"], ["unknown qc_variant 'per_pixel'", "per_tensor_shift"]),
    (["logger=wandb", "logger.wandb.mode=cloud"], ["logger.wandb.mode=cloud", "offline"]),
    (["logger.log_every=0"], ["logger.log_every=0", "positive"]),
    (["model.task=segment"], ["model.task=segment does not fit yolov5n.yaml", "yolov5n-seg"]),
    (["model=yolov5n-seg", "model.task=pose"], ["model.task=pose is unknown"]),
    (["export.opset=11"], ["export.opset=11", "13"]),
])
def test_bad_input_is_one_line(tmp_path, monkeypatch, capsys, args, words):
    assert_one_line_error(train_in_process(*args, tmp_path=tmp_path, monkeypatch=monkeypatch, capsys=capsys), *words)


@pytest.mark.parametrize("args, words", [  # one per place the CLI checks: group names, before Hydra, in validate
    (["model=yolov9"], ["unknown model 'yolov9'"]), (["bits=9"], ["bits=9"]),
    (["trainer.qat.optimizer=lion"], ["sgd, adamw"]),
])
def test_bad_input_is_one_line_from_the_script(tmp_path, args, words):
    """The real process: exit code 2 and one stderr line, with nothing printed on the way (imports, logging)."""
    assert_one_line_error(run_train(*args, tmp_path=tmp_path), *words)


def test_coco_root_without_annotations(tmp_path):
    (tmp_path / "coco" / "val2017").mkdir(parents=True)
    proc = run_train("data=coco", f"data.root={tmp_path / 'coco'}", tmp_path=tmp_path)
    assert_one_line_error(proc, "instances_train2017.json")


def test_incompatible_weights(tmp_path):
    (tmp_path / "w.pt").write_bytes(b"definitely not a checkpoint")
    proc = run_train(f"model.weights={tmp_path / 'w.pt'}", tmp_path=tmp_path)
    assert_one_line_error(proc, "refused by ultralytics' safe loader")


def run_script(script, *args, tmp_path):
    cmd = [sys.executable, str(ROOT / "scripts" / script), f"cache_dir={tmp_path / 'cache'}",
           f"run_dir={tmp_path / 'out'}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)


def test_export_and_onnx_eval_of_bad_files(tmp_path):
    (tmp_path / "damaged.onnx").write_bytes(b"\x08\x07 not an onnx model at all")
    assert_one_line_error(run_script("eval.py", f"+onnx={tmp_path / 'damaged.onnx'}", tmp_path=tmp_path),
                          "damaged.onnx", "damaged or not an ONNX file")
    assert_one_line_error(run_script("eval.py", f"+onnx={tmp_path / 'damaged.onnx'}", "eval.bn_refresh=5",
                                     tmp_path=tmp_path), "eval.bn_refresh", "+checkpoint=")
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    assert_one_line_error(run_script("export.py", f"+checkpoint={tmp_path / 'bad.pt'}", tmp_path=tmp_path),
                          "bad.pt", "not a yoloq checkpoint")
