import json

import pytest

from tests.report.test_compare import fake_run
from yoloq.report.claims import CLAIMS, LEVEL, check, claims_table, verdict
from yoloq.report.compare import collect, write_report


def add_soft(run, value):
    rows = json.loads((run / "results.json").read_text())
    rows.insert(2, {"stage": "qat-soft", "method": rows[1]["method"], "bits": rows[1]["bits"],
                    "metrics": {"mAP50-95": value}})
    (run / "results.json").write_text(json.dumps(rows))


@pytest.mark.parametrize("low, high, n, strict, expected", [
    (0.001, 0.02, 3, True, "reproduced"),
    (0.001, 0.002, 3, True, "reproduced, under 0.5 points"),  # real, but smaller than the level margin
    (-0.003, 0.004, 3, True, "not reproduced"),  # level: a gain too small to claim
    (-0.02, -0.01, 3, True, "not reproduced"),
    (-0.01, 0.02, 3, True, "unclear at n=3"),
    (-0.004, 0.01, 3, False, "reproduced"),  # 'at least as good': within the level margin below 0
    (-0.02, -0.001, 3, False, "not reproduced"),
    (-0.02, 0.01, 3, False, "unclear at n=3"),
    (float("nan"), float("nan"), 1, True, "unclear at n=1"),
])
def test_verdicts_follow_the_interval(low, high, n, strict, expected):
    assert LEVEL == 0.005
    assert verdict(low, high, n, strict) == expected


def test_claims_are_paired_per_seed_and_unmeasured_ones_named(tmp_path):
    lsq = {0: 0.40, 1: 0.45, 2: 0.35}  # a large seed spread that pairing removes
    for s, v in lsq.items():
        fake_run(tmp_path / f"lsq{s}", "lsq_qc", 3, s, v, v + 0.02 + 0.001 * s)  # QC: +2.0 to +2.2
        add_soft(tmp_path / f"lsq{s}", v + (0.01 if s else -0.01))  # soft: mixed signs
        fake_run(tmp_path / f"ema{s}", "ema_qc", 3, s, v - 0.001 * (s - 1), v + 0.03)  # EMA level with LSQ
    fake_run(tmp_path / "dampen0", "dampen_qc", 3, 0, 0.41, 0.43)  # one seed
    rows = collect(sorted(tmp_path.iterdir()))
    entries = {(e["claim"].text, e["bits"]): e for e in check(rows)}
    qc = entries[("QC helps lsq", "W3A3")]
    assert qc["n"] == 3 and abs(qc["mean"] - 0.021) < 1e-12 and qc["verdict"] == "reproduced"
    assert entries[("EMA beats LSQ", "W3A3")]["verdict"] == "not reproduced"  # within the level margin
    assert entries[("soft rounding beats hard (lsq)", "W3A3")]["verdict"] == "unclear at n=3"
    assert entries[("dampening beats LSQ", "W3A3")]["verdict"] == "unclear at n=1"
    assert entries[("freezing beats LSQ", None)]["verdict"] == "not measured"
    star = entries[("the `*` model (first and last layers low-bit) gains most from QC", None)]
    assert star["claim"].measured_by == "experiment=first_last_low"
    table = claims_table(rows)
    assert "| QC helps lsq | QC text, baselines table | lsq+QC − lsq | W3A3 | +2.1 [+1.9, +2.3] (n=3) | reproduced |" \
        in table
    assert "not measured: `experiment=qc_ablation`" in table
    assert len(table.split("\n\n")[0].splitlines()) == 2 + len(CLAIMS)  # one line per claim (one bit width)
    write_report(rows, tmp_path / "out")
    assert "| paper's claim |" in (tmp_path / "out" / "compare.md").read_text()


def test_a_difference_of_gains_needs_every_term_on_the_seed(tmp_path):
    for s in (0, 1, 2):
        fake_run(tmp_path / f"ema{s}", "ema_qc", 4, s, 0.50, 0.51)
        fake_run(tmp_path / f"star{s}", "ema_qc", 4, s, 0.40, 0.44 + 0.001 * s)
        (tmp_path / f"star{s}" / "config.yaml").write_text(f"seed: {s}\nquant:\n  first_last_bits: null\n")
    (tmp_path / "star2" / "results.json").unlink()  # unfinished: seed 2 lacks two of the four terms
    e = {x["claim"].text: x for x in check(collect(sorted(tmp_path.iterdir())))}
    star = e["the `*` model (first and last layers low-bit) gains most from QC"]
    assert star["n"] == 2 and abs(star["mean"] - (0.0405 - 0.01)) < 1e-12 and star["verdict"] == "reproduced"


def test_a_report_without_claims_data_has_no_claims_table(tmp_path):
    fake_run(tmp_path / "mixed", "lsq", 4, 0, 0.45)
    (tmp_path / "mixed" / "config.yaml").write_text("seed: 0\nquant:\n  layer_bits: {layers: {}}\n")
    write_report(collect([tmp_path / "mixed"]), tmp_path / "out")
    assert "paper's claim" not in (tmp_path / "out" / "compare.md").read_text()


def test_claims_are_checked_within_each_activation_grid(tmp_path):
    """Signed and asymmetric runs side by side: each claim per grid, on that grid's rows only."""
    for s in (0, 1, 2):
        fake_run(tmp_path / f"lsq{s}", "lsq", 3, s, 0.30 + 0.01 * s)  # signed LSQ far below: never EMA's baseline
        for name, method, qat in ((f"alsq{s}", "lsq", 0.50), (f"aema{s}", "ema_qc", 0.52)):
            fake_run(tmp_path / name, method, 3, s, qat + 0.01 * s, qat + 0.01 * s + 0.005 if "qc" in method else None)
            (tmp_path / name / "config.yaml").write_text(
                f"seed: {s}\nquant:\n  act_asymmetric: true\n  act_zero_point: integer\n")
    entries = [e for e in check(collect(sorted(tmp_path.iterdir()))) if e["bits"]]
    ema = [e for e in entries if e["claim"].text == "EMA beats LSQ"]
    assert len(ema) == 1 and ema[0]["terms"] == (("ema asym int-zp", 1), ("lsq asym int-zp", -1))
    assert abs(ema[0]["mean"] - 0.02) < 1e-9 and ema[0]["n"] == 3
    qc = [e for e in entries if e["claim"].text == "QC helps ema"]
    assert len(qc) == 1 and abs(qc[0]["mean"] - 0.005) < 1e-9
    assert "| ema asym int-zp − lsq asym int-zp | W3A3 |" in claims_table(collect(sorted(tmp_path.iterdir())))
