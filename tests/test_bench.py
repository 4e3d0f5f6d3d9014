"""scripts/bench.py end to end at toy sizes: every section runs, the JSON holds what the table shows.
(Timings are not asserted: the numbers are the benchmark's to report.)"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TINY

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "bench.py"


def _bench():
    """What scripts/bench.py and `yoloq bench` run."""
    from yoloq.bench import command

    return command


def test_step_and_op_sections(tmp_path, capsys):
    out = tmp_path / "bench.json"
    argv = ["--sections", "step,op", "--device", "cpu", "--batch", "2", "--imgsz", "64", "--repeats", "2",
            "--warmup", "1", "--op-numel", "70000", "--out", str(out)]
    assert _bench().main(argv) == 0
    result = json.loads(out.read_text())
    assert result["environment"]["device"] == "cpu" and "stages" not in result
    step = result["step"]
    for mode in ("qat_per_tensor", "qat_per_channel", "qat_per_tensor_asymmetric", "qat_per_tensor_integer_zero_point"):
        r = step[mode]
        assert r["step_s"] > 0 and r["time_ratio"] > 0
        q1, q3 = r["time_ratio_iqr"]
        assert q1 <= r["time_ratio"] <= q3
        assert r["saved_ratio"] == pytest.approx(r["saved_mb"] / step["fp"]["saved_mb"])
    for mode in ("per_tensor", "per_channel"):
        op = result["op"][mode]
        assert op["numel"] >= 65536 and op["per_channel"] == (mode == "per_channel")
        assert set(op["ms"]) == {"ours", "ours_eager", "builtin", "plain_ops", "floor_fresh", "floor_reused"}
        assert all(v > 0 for v in op["ms"].values())
    table = capsys.readouterr().out
    assert "QAT/FP step time" in table and "builtin/ours" in table and f"wrote {out}" in table
    assert "asymmetric activations, integer zero point" in table


def test_stages_section(tmp_path, capsys):
    out = tmp_path / "stages.json"
    argv = ["--sections", "stages", "--device", "cpu", "--stage-fraction", "0.5", "--out", str(out), "--",
            *TINY, f"cache_dir={tmp_path / 'cache'}", "trainer.qat.batch=4"]
    assert _bench().main(argv) == 0
    stages = json.loads(out.read_text())["stages"]
    # half of the 48 training images: 6 QAT steps at its own batch 4, 3 QC steps at trainer.batch 8
    assert stages["qat_batch"] == 4 and stages["qat_epoch"]["steps"] == 6 and stages["qc_stage"]["steps"] == 3
    assert stages["qc_over_qat_epoch"] == pytest.approx(stages["qc_stage"]["seconds"] / stages["qat_epoch"]["seconds"])
    assert stages["eval"]["fp"]["images"] == 16 and stages["eval"]["qat"]["images_per_s"] > 0
    assert not stages["fp_trained"]  # no cached FP model in a fresh cache
    assert "QC stage / QAT epoch" in capsys.readouterr().out


@pytest.mark.slow  # 15 s of whole epochs; the step, op and stage sections run by default
def test_epoch_section(tmp_path, capsys):
    out = tmp_path / "epoch.json"
    argv = ["--sections", "epoch", "--device", "cpu", "--epoch-repeats", "2", "--out", str(out), "--",
            *TINY, f"cache_dir={tmp_path / 'cache'}"]
    assert _bench().main(argv) == 0
    epoch = json.loads(out.read_text())["epoch"]
    assert epoch["steps"] == {"fp": 6, "qat": 6}  # 48 images at batch 8: whole epochs
    assert len(epoch["fp_s"]) == len(epoch["qat_s"]) == 2 and epoch["method"] == "ema_qc"
    pairs = sorted(q / f for f, q in zip(epoch["fp_s"], epoch["qat_s"]))
    assert epoch["ratio"] == pytest.approx(sum(pairs) / 2) and epoch["ratio_min"] == pytest.approx(pairs[0])
    assert "QAT/FP epoch" in capsys.readouterr().out


@pytest.mark.slow  # 15 s of a deliberately busy core
def test_contention_section_starts_and_stops_its_busy_process(tmp_path, capsys, monkeypatch):
    from yoloq.bench import contention

    started = []
    real = contention.BusyProcess.__enter__

    def enter(self):
        started.append(real(self))
        return started[-1]

    monkeypatch.setattr(contention.BusyProcess, "__enter__", enter)
    out = tmp_path / "contention.json"
    argv = ["--sections", "contention", "--device", "cpu", "--batch", "2", "--imgsz", "64", "--repeats", "2",
            "--warmup", "0", "--out", str(out)]
    assert _bench().main(argv) == 0
    c = json.loads(out.read_text())["contention"]
    assert len(started) == 2 and all(b.proc.poll() is not None for b in started)  # ended after each phase
    for mode in ("adaptive", "fixed"):
        r = c[mode]
        for name in ("fp", "qat"):
            assert r[f"{name}_slowdown"] == pytest.approx(r["busy"][name]["median_s"] / r["alone"][name]["median_s"])
    assert c["fp_slowdown"] == c["adaptive"]["fp_slowdown"] and c["qat_slowdown"] == c["adaptive"]["qat_slowdown"]
    assert c["fixed"]["busy"]["thread_changes"] == 0
    assert "beside a busy process" in capsys.readouterr().out


def test_export_section(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("YOLOQ_FAKE_QUANT_KERNEL", "eager")
    out = tmp_path / "export.json"
    argv = ["--sections", "export", "--device", "cpu", "--batch", "2", "--imgsz", "64", "--repeats", "2",
            "--warmup", "0", "--out", str(out)]
    assert _bench().main(argv) == 0
    e = json.loads(out.read_text())["export"]
    assert e["export_s"] > 0 and e["onnx_mb"] > 0.5 and e["onnx_within_2lsb"] >= 0.999
    assert set(e["images_per_s"]) == {"pytorch_fp", "pytorch_fake_quant", "pytorch_deploy", "onnxruntime"}
    assert all(v > 0 for v in e["images_per_s"].values())
    assert "ONNX export" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--sections", "speed"], "--sections=speed names no section or an unknown one: use a subset of step,op,stages,epoch,contention,export"),
    (["--epoch-fraction", "0"], "--epoch-fraction=0.0 is out of range"),
    (["--epoch-repeats", "0"], "--epoch-repeats must be positive"),
    (["--stage-fraction", "2"], "--stage-fraction=2.0 is out of range"),
    (["--bits", "9"], "--bits=9 is out of range: use an integer from 2 to 8"),
    (["trainer.batch=4"], None),  # an override without `--` is still an override
    (["--bogus"], "unrecognised arguments --bogus"),
])
def test_bad_arguments_are_one_line_errors(argv, message, capsys, monkeypatch):
    bench = _bench()
    if message is None:
        _, _, overrides = bench.parse_args(argv)
        assert overrides == ["trainer.batch=4"]
        return
    with pytest.raises(SystemExit) as e:
        bench.parse_args(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert message in err


def test_unavailable_device_is_one_line_error(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    assert _bench().main(["--device", "cuda", "--sections", "op"]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: device=cuda but no CUDA GPU is visible: use device=cpu (or auto)")


def test_unknown_model_is_one_line_error(tmp_path, capsys):
    assert _bench().main(["--sections", "step", "--device", "cpu", "--model", "nosuch.yaml",
                          "--out", str(tmp_path / "b.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --model=nosuch.yaml was not found") and "\n" not in err
    assert not (tmp_path / "b.json").exists()


def test_the_script_and_the_console_command_reach_the_benchmark():
    for cmd in ([sys.executable, str(SCRIPT)], ["yoloq", "bench"]):
        proc = subprocess.run([*cmd, "--sections", "speed"], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and "--sections=speed names no section" in proc.stderr, proc.stderr
