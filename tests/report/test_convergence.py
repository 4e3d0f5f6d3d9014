import json
import subprocess
import sys
from pathlib import Path

import pytest

from yoloq.cli import main as cli_main
from yoloq.report.convergence import control_gaps, doublings, fp_doublings, groups, run_row, write_convergence

ROOT = Path(__file__).resolve().parents[2]


def length_run(folder: Path, method: str, epochs: int, seed: int, final: float, curve: dict[int, float] | None = None,
               lr0: float = 0.01, eval_every: int = 2, qc_lr: float = 0.001, qat_from: str | None = None,
               fp: float = 0.7, bits: int = 4, fp_epochs: int | None = None, fp_seed: int = 0,
               fp_lr0: float = 0.002):
    """A finished run folder as the trainer leaves it: config.yaml, results.json and metrics.jsonl."""
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(
        f"seed: {seed}\nmodel:\n  name: yolov7-tiny\n" + (f"qat_from: {qat_from}\n" if qat_from else "") +
        f"trainer:\n  workers: {seed}\n" +
        (f"  fp:\n    epochs: {fp_epochs}\n    seed: {fp_seed}\n    lr0: {fp_lr0}\n" if fp_epochs else "") +
        f"  qat:\n    epochs: {epochs}\n    lr0: {lr0}\n    eval_every: {eval_every}\n"
        f"  qc:\n    lr: {qc_lr}\nmethod:\n  name: {method}\n  qc:\n    per_channel: {str(qc_lr > 0).lower()}\n"
        f"quant:\n  w_bits: {bits}\n  a_bits: {bits}\n  first_last_bits: 8\n")
    rows = [{"stage": "fp", "method": "fp", "bits": "FP32", "metrics": {"mAP50-95": fp}},
            {"stage": "qat", "method": method, "bits": f"W{bits}A{bits}", "metrics": {"mAP50-95": final}}]
    (folder / "results.json").write_text(json.dumps(rows))
    curve = {**(curve or {}), epochs: final}
    (folder / "metrics.jsonl").write_text("".join(
        json.dumps({"kind": "qat-epoch", "epoch": e, "step": 100 * e, "mAP50-95": v}) + "\n" for e, v in curve.items()))


def test_doubling_verdicts_against_the_seed_spread(tmp_path):
    # LSQ: 8 epochs on two seeds (std 0.0141), 16 on both (gain +0.005 mean), 32 on seed 0 only (gain +0.02).
    length_run(tmp_path / "l8s0", "lsq", 8, 0, 0.60, {4: 0.5})
    length_run(tmp_path / "l8s1", "lsq", 8, 1, 0.62, {4: 0.52})
    length_run(tmp_path / "l16s0", "lsq", 16, 0, 0.61, {8: 0.58})
    length_run(tmp_path / "l16s1", "lsq", 16, 1, 0.62)
    length_run(tmp_path / "l32s0", "lsq", 32, 0, 0.63)
    # EMA: the QAT stage of ema_qc runs is EMA's (QC settings may differ); one seed per length: no spread.
    length_run(tmp_path / "e8s0", "ema_qc", 8, 0, 0.60)
    length_run(tmp_path / "e16s0", "ema", 16, 0, 0.70, qc_lr=0.0)
    length_run(tmp_path / "qc_only", "lsq_qc", 8, 2, 0.99, qat_from=str(tmp_path / "l8s0"))  # not its own QAT
    (tmp_path / "unfinished").mkdir()
    rows = [r for r in (run_row(p) for p in sorted(tmp_path.iterdir())) if r is not None]
    grouped = groups(rows)
    assert sorted(grouped) == [("yolov7-tiny", "ema", "W4A4", ""), ("yolov7-tiny", "lsq", "W4A4", "")]

    lsq = doublings(grouped[("yolov7-tiny", "lsq", "W4A4", "")])
    assert [(d["epochs"], d["doubled"], d["seeds"]) for d in lsq] == [(8, 16, [0, 1]), (16, 32, [0])]
    assert lsq[0]["per_seed"] == pytest.approx([0.01, 0.0]) and lsq[0]["gain"] == pytest.approx(0.005)
    assert lsq[0]["spread"] == pytest.approx(0.0141421, rel=1e-4) and lsq[0]["spread_at"] == 8
    assert lsq[0]["verdict"] == "converged"
    assert lsq[1]["gain"] == pytest.approx(0.02) and lsq[1]["spread_at"] == 16  # 16 has two seeds too
    assert lsq[1]["spread"] == pytest.approx(0.0070711, rel=1e-4) and lsq[1]["verdict"] == "not converged"
    ema = doublings(grouped[("yolov7-tiny", "ema", "W4A4", "")])
    assert ema[0]["gain"] == pytest.approx(0.10) and ema[0]["verdict"] == "no seed spread: run a second seed"

    length_run(tmp_path / "l64s0", "lsq", 64, 0, 0.635)  # one seed at 32 and 64: the spread of the nearest length
    lsq = doublings(groups([r for r in (run_row(p) for p in sorted(tmp_path.iterdir())) if r is not None])[
        ("yolov7-tiny", "lsq", "W4A4", "")])
    assert lsq[2]["epochs"] == 32 and lsq[2]["spread_at"] == 16 and lsq[2]["verdict"] == "converged"

    text = write_convergence(sorted(tmp_path.iterdir()), tmp_path / "out")
    assert "| 8 | 61.00 ± 1.41 (n=2) | s0: 60.00, s1: 62.00 |" in text
    assert "The FP model they start from: 70.00" in text
    assert "| 8 -> 16 | +0.50 [-5.85, +6.85] (n=2) | s0: +1.00, s1: +0.00 | 1.41 (at 8 epochs, n=2) | converged |" in text
    assert "| 16 -> 32 | +2.00 (n=1, no interval) | s0: +2.00 | 0.71 (at 16 epochs, n=2) | not converged |" in text
    csv_lines = (tmp_path / "out" / "convergence.csv").read_text().splitlines()
    assert csv_lines[0] == "run,model,label,bits,recipe_name,epochs,seed,mAP50-95,fp" and len(csv_lines) == 1 + 8
    assert (tmp_path / "out" / "convergence.png").read_bytes()[:4] == b"\x89PNG"


def test_runs_of_different_recipes_form_groups_of_their_own(tmp_path):
    length_run(tmp_path / "a8", "lsq", 8, 0, 0.6, lr0=0.01, eval_every=1)
    length_run(tmp_path / "a16", "lsq", 16, 0, 0.7, lr0=0.01, eval_every=4)  # eval_every alone: the same recipe
    length_run(tmp_path / "b16", "lsq", 16, 0, 0.6, lr0=0.002)
    length_run(tmp_path / "c16", "lsq", 16, 0, 0.65, lr0=0.01, fp=0.71)  # same config, another FP model (machine)
    grouped = groups([run_row(tmp_path / r) for r in ("a8", "a16", "b16", "c16")])
    names = {key[3]: sorted(Path(r["run"]).name for r in rs) for key, rs in grouped.items()}
    assert names == {"the FP model's mAP=0.7, trainer.qat.lr0=0.01": ["a16", "a8"],
                     "the FP model's mAP=0.7, trainer.qat.lr0=0.002": ["b16"],
                     "the FP model's mAP=0.71, trainer.qat.lr0=0.01": ["c16"]}
    text = write_convergence([tmp_path / r for r in ("a8", "a16", "b16", "c16")], tmp_path / "out")
    assert "## yolov7-tiny lsq W4A4 (the FP model's mAP=0.7, trainer.qat.lr0=0.01)" in text
    assert text.count("| 8 -> 16 |") == 1  # only the recipe run at both lengths has a doubling
    assert "lr0=0.002" in (tmp_path / "out" / "convergence.csv").read_text()
    length_run(tmp_path / "a8again", "lsq", 8, 0, 0.62, lr0=0.01)  # the same seed run twice: averaged
    grouped = groups([run_row(tmp_path / r) for r in ("a8", "a8again", "a16")])
    assert doublings(grouped[("yolov7-tiny", "lsq", "W4A4", "")])[0]["per_seed"] == pytest.approx([0.09])


def test_re_estimated_bn_is_another_recipe_and_records_from_before_the_setting_are_without_it(tmp_path):
    length_run(tmp_path / "old8", "lsq", 8, 0, 0.6)  # written before trainer.qat.bn_refresh existed
    length_run(tmp_path / "new16", "lsq", 16, 0, 0.7)
    length_run(tmp_path / "bn16", "lsq", 16, 0, 0.72)
    for name, n in (("new16", 0), ("bn16", 125)):
        cfg = tmp_path / name / "config.yaml"
        cfg.write_text(cfg.read_text().replace("  qat:\n", f"  qat:\n    bn_refresh: {n}\n"))
    grouped = groups([run_row(tmp_path / r) for r in ("old8", "new16", "bn16")])
    names = {key[3]: sorted(Path(r["run"]).name for r in rs) for key, rs in grouped.items()}
    assert names == {"trainer.qat.bn_refresh=0": ["new16", "old8"],
                     "trainer.qat.bn_refresh=125": ["bn16"]}


def test_a_run_of_zero_epochs_is_the_calibrated_start_not_a_length(tmp_path):
    # trainer.qat.epochs=0 evaluates the calibrated model untrained: every curve's start, with no length to double
    length_run(tmp_path / "e0", "lsq", 0, 0, 0.54)
    length_run(tmp_path / "e4s0", "lsq", 4, 0, 0.70)
    length_run(tmp_path / "e4s1", "lsq", 4, 1, 0.71)
    length_run(tmp_path / "e8s0", "lsq", 8, 0, 0.72)
    runs = sorted(tmp_path.iterdir())
    rs = groups([run_row(p) for p in runs])[("yolov7-tiny", "lsq", "W4A4", "")]
    assert [(d["epochs"], d["doubled"], d["spread_at"]) for d in doublings(rs)] == [(4, 8, 4)]
    text = write_convergence(runs, tmp_path / "out")
    assert "| 0 (the calibrated start) | 54.00 (n=1) | s0: 54.00 |" in text and "| 0 -> 0 |" not in text
    assert "| 4 -> 8 | +2.00 (n=1, no interval) | s0: +2.00 | 0.71 (at 4 epochs, n=2) | not converged |" in text
    length_run(tmp_path / "only0", "lsq", 0, 0, 0.5, lr0=0.002)  # a group holding nothing but its start
    assert "No length was also run at twice its epochs." in write_convergence([tmp_path / "only0"], tmp_path / "o2")


def test_the_gap_to_an_8_bit_control_separates_quantization_from_more_training(tmp_path):
    # W4A4 gains +2.5 from doubling, but its 8-bit control (same recipe, lengths and seeds) gains as much:
    # the gap to it moves by -0.5, below the W4A4 seed spread (std 1.41 at 8 epochs).
    for seed, (w4_8, w4_16, w8_8, w8_16) in enumerate([(0.60, 0.63, 0.70, 0.73), (0.62, 0.64, 0.71, 0.74)]):
        length_run(tmp_path / f"w4_8s{seed}", "lsq", 8, seed, w4_8)
        length_run(tmp_path / f"w4_16s{seed}", "lsq", 16, seed, w4_16)
        length_run(tmp_path / f"w8_8s{seed}", "lsq", 8, seed, w8_8, bits=8)
        length_run(tmp_path / f"w8_16s{seed}", "lsq", 16, seed, w8_16, bits=8)
    length_run(tmp_path / "w8_other", "lsq", 32, 0, 0.9, bits=8, lr0=0.002)  # another recipe: not the control
    length_run(tmp_path / "ema8", "ema", 8, 0, 0.6)  # another method: its own group, without a control
    rows = [run_row(p) for p in sorted(tmp_path.iterdir())]
    grouped = groups(rows)
    w4 = grouped[("yolov7-tiny", "lsq", "W4A4", "")]
    assert doublings(w4)[0]["verdict"] == "not converged"
    gaps = control_gaps(w4, rows)
    assert gaps["lengths"][8] == pytest.approx({0: -0.10, 1: -0.09}) and set(gaps["lengths"]) == {8, 16}
    (d,) = gaps["doublings"]
    assert d["per_seed"] == pytest.approx([0.0, -0.01]) and d["gain"] == pytest.approx(-0.005)
    assert d["spread"] == pytest.approx(0.0141421, rel=1e-4) and d["verdict"] == "converged"
    assert control_gaps(grouped[("yolov7-tiny", "ema", "W4A4", "")], rows) is None
    assert all(control_gaps(rs, rows) is None for key, rs in grouped.items() if key[2] == "W8A8")
    text = write_convergence(sorted(tmp_path.iterdir()), tmp_path / "out")
    assert text.count("Against the 8-bit control") == 1 and "| 8 | -9.50 (n=2) | s0: -10.00, s1: -9.00 |" in text
    assert "| 8 -> 16 | -0.50 [-6.85, +5.85] (n=2) | s0: +0.00, s1: -1.00 | 1.41 (at 8 epochs, n=2) | converged |" in text


def test_fp_models_of_two_lengths_get_the_fp_stages_own_doubling_test(tmp_path):
    # QAT runs from a 20- and a 40-epoch FP model (FP seed 0), and from a 20-epoch model of FP seed 1: the FP
    # stage's doubling is paired on FP seeds and judged against the FP seed spread at 20 epochs.
    length_run(tmp_path / "f20s0", "lsq", 8, 0, 0.60, fp=0.74, fp_epochs=20)
    length_run(tmp_path / "f20s0b", "lsq", 8, 1, 0.61, fp=0.74, fp_epochs=20)  # same FP model, another QAT seed
    length_run(tmp_path / "f20fs1", "lsq", 8, 0, 0.62, fp=0.75, fp_epochs=20, fp_seed=1)
    length_run(tmp_path / "f40s0", "lsq", 8, 0, 0.66, fp=0.80, fp_epochs=40)
    length_run(tmp_path / "other", "lsq", 8, 0, 0.5, fp=0.5, fp_epochs=10, fp_lr0=0.01)  # another FP recipe
    rows = [run_row(p) for p in sorted(tmp_path.iterdir())]
    fp_models = fp_doublings(rows)
    assert len(fp_models) == 1  # the other FP recipe has one length only: nothing to double
    ((model, _), fp), = fp_models.items()
    assert model == "yolov7-tiny" and fp["lengths"] == {20: {0: 0.74, 1: 0.75}, 40: {0: 0.80}}
    (d,) = fp["doublings"]
    assert d["seeds"] == [0] and d["gain"] == pytest.approx(0.06) and d["spread_at"] == 20
    assert d["verdict"] == "not converged"
    text = write_convergence(sorted(tmp_path.iterdir()), tmp_path / "out")
    assert "## The FP models" in text and "| 20 | 74.50 (n=2) | s0: 74.00, s1: 75.00 |" in text
    assert "| 20 -> 40 | +6.00 (n=1, no interval) | s0: +6.00 | 0.71 (at 20 epochs, n=2) | not converged |" in text
    assert "## The FP models" not in write_convergence([tmp_path / "f20s0", tmp_path / "other"], tmp_path / "o2")


def test_cli_one_line_errors(tmp_path, capsys):
    script = str(ROOT / "scripts" / "convergence.py")
    proc = subprocess.run([sys.executable, script, str(tmp_path / "nothing")], capture_output=True, text=True)
    assert proc.returncode == 2 and "none of the given folders" in proc.stderr and "Traceback" not in proc.stderr
    length_run(tmp_path / "a", "lsq", 8, 0, 0.6)
    (tmp_path / "a" / "results.json").write_text("[]")  # a run that stopped before its QAT stage
    proc = subprocess.run([sys.executable, script, str(tmp_path / "a")], capture_output=True, text=True)
    assert proc.returncode == 2 and "none of the given folders" in proc.stderr and "Traceback" not in proc.stderr
    length_run(tmp_path / "a8", "lsq", 8, 0, 0.6)
    length_run(tmp_path / "c", "lsq", 16, 0, 0.61)
    with pytest.raises(SystemExit) as exit_:  # the `yoloq convergence` console command
        cli_main(["convergence", str(tmp_path / "a8"), str(tmp_path / "c"), "--out", str(tmp_path / "out")])
    assert exit_.value.code == 0
    assert "| 8 -> 16 | +1.00 (n=1, no interval) | s0: +1.00 |  | no seed spread: run a second seed |" in capsys.readouterr().out
