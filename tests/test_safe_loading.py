"""Every file yoloq reads as a checkpoint is loaded without running code: a file crafted to run a command when
unpickled is refused in one line, and the command does not run. yoloq's own files load with weights_only=True."""

from __future__ import annotations

import os

import pytest
import torch

from tests.test_cli import assert_one_line_error, run_train
from yoloq.checkpoint import load_checkpoint
from yoloq.errors import UserError
from yoloq.models.build import build_model, load_weights


class RunsCode:
    """Unpickling this runs `touch <marker>` (what an attacker's file would do with something worse)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def crafted(path, marker, **content):
    torch.save({"model": {}, "config": {}, **content, "payload": RunsCode(marker)}, path)
    return path


def test_crafted_checkpoint_is_refused_and_its_code_not_run(tmp_path):
    marker = tmp_path / "ran"
    path = crafted(tmp_path / "qat.pt", marker)
    with pytest.raises(UserError, match=r"qat.pt holds Python objects other than tensors .* not loaded") as e:
        load_checkpoint(path)
    assert "\n" not in str(e.value)
    assert not marker.exists()
    # the check is real: an unsafe load of the same file does run the command
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_crafted_ultralytics_weights_are_refused(tmp_path):
    marker = tmp_path / "ran"
    path = crafted(tmp_path / "w.pt", marker)
    with pytest.raises(UserError, match=r"model.weights=.*w.pt was refused by ultralytics' safe loader") as e:
        load_weights(build_model("yolov5n.yaml", ("a", "b")), path)
    assert "\n" not in str(e.value) and not marker.exists()


def test_real_ultralytics_weights_still_load_safely(tmp_path):
    src = build_model("yolov5n.yaml", ("a", "b"))
    torch.save({"model": src.half(), "ema": None, "epoch": -1, "train_args": {"imgsz": 64}}, tmp_path / "w.pt")
    done, total = load_weights(build_model("yolov5n.yaml", ("a", "b")), tmp_path / "w.pt")
    assert done == total


def test_eval_refuses_a_crafted_checkpoint(tmp_path):
    import subprocess
    import sys

    from tests.test_cli import ROOT

    marker = tmp_path / "ran"
    path = crafted(tmp_path / "x.pt", marker)
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "eval.py"), f"+checkpoint={path}",
                           f"cache_dir={tmp_path / 'cache'}", f"run_dir={tmp_path / 'eval'}"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert_one_line_error(proc, "x.pt", "not loaded")
    assert not marker.exists()


def test_train_refuses_crafted_weights(tmp_path):
    marker = tmp_path / "ran"
    proc = run_train(f"model.weights={crafted(tmp_path / 'w.pt', marker)}", tmp_path=tmp_path)
    assert_one_line_error(proc, "w.pt", "safe loader")
    assert not marker.exists()


@pytest.mark.parametrize("where", ["resume", "fp_cache"])
def test_a_run_refuses_a_crafted_file_in_its_folder_or_cache(tiny_cfg, tmp_path, where):
    from yoloq.config import resolve_device
    from yoloq.engine.pipeline import train
    from yoloq.engine.stages.fp import fp_cache_path
    from yoloq.factory import build_data

    marker = tmp_path / "ran"
    cfg = tiny_cfg("trainer.fp.epochs=0", "method=lsq", *(["resume=true"] if where == "resume" else []))
    if where == "resume":  # a stage state planted in the run folder
        run_dir = tmp_path / "run"
        run_dir.mkdir()
        (run_dir / "config.yaml").write_text("x: 1\n")
        crafted(run_dir / "qat-last.pt", marker)
    else:  # the shared FP cache: a file placed where the next run looks for its FP model
        cache = fp_cache_path(cfg, build_data(cfg, resolve_device("cpu")).info)
        cache.parent.mkdir(parents=True)
        crafted(cache, marker, metrics={}, wall_time=0.0)
    with pytest.raises(UserError, match="not loaded") as e:
        train(cfg)
    assert "\n" not in str(e.value) and not marker.exists()


@pytest.mark.parametrize("content", ["plain_dict", "tensor", "torn"])
def test_a_file_that_is_not_a_yoloq_checkpoint_gets_one_line(tiny_cfg, tmp_path, content):
    from yoloq.eval.checkpoint_eval import evaluate_checkpoint

    path = tmp_path / "other.pt"
    if content == "plain_dict":
        torch.save({"weights": torch.zeros(3)}, path)
    elif content == "tensor":
        torch.save(torch.zeros(3), path)
    else:
        path.write_bytes(b"PK\x03\x04 half a zip")
    expected = {"plain_dict": "is not a yoloq checkpoint", "tensor": "holds a Tensor, not a yoloq checkpoint",
                "torn": "cannot be read"}[content]
    with pytest.raises(UserError, match=expected) as e:
        evaluate_checkpoint(tiny_cfg(f"+checkpoint={path}"), tmp_path / "eval")
    assert "\n" not in str(e.value) and "other.pt" in str(e.value)
    assert not (tmp_path / "eval").exists()  # nothing written
