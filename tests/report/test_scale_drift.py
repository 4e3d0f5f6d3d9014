import pytest
import torch

from yoloq.checkpoint import save_atomic
from yoloq.cli import main as cli_main
from yoloq.errors import UserError
from yoloq.report.scale_drift import scale_drift


def quantized_state(weight_scales, act_scales) -> dict:
    """A model state as qat.pt holds it: per-channel weight scales and per-tensor activation scales."""
    state = {}
    for i, (w, a) in enumerate(zip(weight_scales, act_scales)):
        state[f"model.{i}.conv.weight"] = torch.ones(2, 2, 1, 1)
        state[f"model.{i}.conv.weight_quantizer.scale"] = torch.tensor(w).reshape(-1, 1, 1, 1)
        state[f"model.{i}.conv.act_quantizer.scale"] = torch.tensor(a)
    return state


def test_relative_change_per_kind():
    start = quantized_state([[0.02, 0.02], [0.01, 0.01], [0.04, 0.04]], [0.4, 0.5, 1.0])
    # weights: +10% and -10% (mean |change| 10%), +0%, +50%; activations: +1%, +0%, -2%
    end = quantized_state([[0.022, 0.018], [0.01, 0.01], [0.06, 0.06]], [0.404, 0.5, 0.98])
    drift = scale_drift(start, end)
    w, a = drift["weight"], drift["activation"]
    assert w["n"] == 3 and a["n"] == 3
    assert w["median"] == pytest.approx(0.10, rel=1e-5)  # |+10%|,|-10%| of one quantizer count as 10%, not as 0
    assert w["signed_median"] == pytest.approx(0.0, abs=1e-6)
    assert w["start_median"] == pytest.approx(0.02)
    assert a["median"] == pytest.approx(0.01, rel=1e-5) and a["signed_median"] == pytest.approx(0.0, abs=1e-6)
    assert a["share_up"] == pytest.approx(1 / 3)


def test_checkpoints_of_different_models_are_refused():
    start = quantized_state([[0.02]], [0.4])
    with pytest.raises(UserError, match="not the same quantized model"):
        scale_drift(start, {"model.9.conv.weight": torch.ones(1)})
    with pytest.raises(UserError, match="not the same quantized model"):  # per-channel against per-tensor
        scale_drift(quantized_state([[0.02, 0.03]], [0.4]), start)
    with pytest.raises(UserError, match="no quantizer scales"):
        scale_drift({"model.0.conv.weight": torch.ones(1)}, start)


def test_command_prints_the_table_and_fails_in_one_line(tmp_path, capsys):
    for name, w, a in (("start", 0.02, 0.4), ("end", 0.03, 0.4)):
        save_atomic({"model": quantized_state([[w]], [a])}, tmp_path / f"{name}.pt")
    with pytest.raises(SystemExit) as done:
        cli_main(["scale-drift", str(tmp_path / "start.pt"), str(tmp_path / "end.pt")])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "| weight | 1 | 0.02 | 50.0% [50.0%, 50.0%] | +50.0% | 100% |" in out
    assert "| activation | 1 | 0.4 | 0.0%" in out
    with pytest.raises(SystemExit) as done:
        cli_main(["scale-drift", str(tmp_path / "start.pt"), str(tmp_path / "missing.pt")])
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing.pt does not exist" in err
