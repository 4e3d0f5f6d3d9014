"""qat_from: a finished run's QAT model is taken only by a run that would have trained the same one."""

import pytest
import torch

from yoloq.engine.qat_from import load_source, qat_checkpoint_path
from yoloq.errors import UserError

IDENTITY = {"model": "yolov5n", "task": "detect", "w_bits": 4, "a_bits": 4, "per_channel": False,
            "first_last_bits": 8, "method": "ema_qc", "classes": 3}


def write_qat(folder, identity=IDENTITY, seed=0):
    folder.mkdir()
    torch.save({"model": {"w": torch.zeros(1)}, "metrics": {"mAP50-95": 0.5}, "extra": {}, "wall_time": 1.0,
                "identity": identity, "config": {"seed": seed}}, folder / "qat.pt")
    return folder


def test_unset_is_none_and_a_folder_means_its_qat_pt(tmp_path):
    assert load_source(None, IDENTITY, 0) is None and qat_checkpoint_path("null") is None
    assert qat_checkpoint_path(tmp_path) == tmp_path / "qat.pt"


def test_the_qat_stage_of_a_qc_method_is_its_base_method(tmp_path):
    src = write_qat(tmp_path / "ema", {**IDENTITY, "method": "ema"})
    ckpt, path = load_source(str(src), IDENTITY, 0)  # method ema_qc from an ema run: the same QAT stage
    assert path == src / "qat.pt" and ckpt["metrics"]["mAP50-95"] == 0.5


@pytest.mark.parametrize("change, message", [
    ({"w_bits": 3}, "w_bits=3, this run has w_bits=4"),
    ({"method": "lsq_qc"}, "method=lsq, this run has method=ema"),
])
def test_another_configuration_is_refused_by_name(tmp_path, change, message):
    src = write_qat(tmp_path / "src", {**IDENTITY, **change})
    with pytest.raises(UserError, match=message):
        load_source(str(src), IDENTITY, 0)


def test_another_seed_missing_file_and_foreign_file_are_one_line_errors(tmp_path):
    src = write_qat(tmp_path / "src", seed=2)
    with pytest.raises(UserError, match="seed=2, this run has seed=0"):
        load_source(str(src), IDENTITY, 0)
    with pytest.raises(UserError, match="does not exist"):
        load_source(str(tmp_path / "nowhere"), IDENTITY, 0)
    torch.save({"weights": 1}, tmp_path / "foreign.pt")
    with pytest.raises(UserError, match="not a yoloq QAT checkpoint"):
        load_source(str(tmp_path / "foreign.pt"), IDENTITY, 0)
