"""The frontier report: one point per plan (mean and std over seeds) from runs' results.json."""

import csv
import json

import pytest
from PIL import Image

from yoloq.report.frontier import write_frontier


def fake_run(folder, seed, gbops, qat, folded=None):
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(f"seed: {seed}\n")
    rows = [{"stage": "fp", "metrics": {"mAP50-95": 0.6}},
            {"stage": "qat", "metrics": {"mAP50-95": qat},
             "extra": {"GBOPs": gbops, "avg_w_bits": 3.1, "avg_a_bits": 3.1}}]
    if folded is not None:
        rows.append({"stage": "folded", "metrics": {"mAP50-95": folded}})
    (folder / "results.json").write_text(json.dumps(rows))
    return folder


def test_points_average_seeds_and_use_the_final_model(tmp_path):
    runs = [fake_run(tmp_path / "uniform-w3-s0", 0, 3.0, 0.40, 0.42), fake_run(tmp_path / "uniform-w3-s1", 1, 3.0, 0.44, 0.46),
            fake_run(tmp_path / "eagl-b3-s0", 0, 2.9, 0.47), fake_run(tmp_path / "uniform-w4-s0", 0, 5.0, 0.55, 0.57)]
    (tmp_path / "unfinished-s0").mkdir()
    table = write_frontier(runs + [tmp_path / "unfinished-s0"], tmp_path)
    lines = table.splitlines()
    assert lines[2] == "| eagl-b3 | 2.900 | 47.0 | 1 |"             # sorted by GBOPs
    assert lines[3] == "| uniform-w3 | 3.000 | 44.0 ± 2.8 | 2 |"        # folded (after QC) is the final model
    with open(tmp_path / "frontier.csv") as f:
        assert {r["label"] for r in csv.DictReader(f)} == {"uniform-w3", "eagl-b3", "uniform-w4"}
    with Image.open(tmp_path / "frontier.png") as im:
        assert im.format == "PNG"
    assert not (tmp_path / "runs").exists()  # the runs are in the report's folder: nothing to copy
    assert write_frontier(runs, tmp_path / "docs") == table  # a report elsewhere keeps the runs' records
    assert sorted(p.name for p in (tmp_path / "docs" / "runs").iterdir()) == sorted(r.name for r in runs)
    assert write_frontier(sorted((tmp_path / "docs" / "runs").iterdir()), tmp_path / "again") == table


def test_plans_are_paired_with_uniform_and_random_of_their_budget(tmp_path):
    uniform = {0: 0.40, 1: 0.42, 2: 0.38}
    runs = [fake_run(tmp_path / f"uniform-w3-s{s}", s, 3.0, v) for s, v in uniform.items()]
    runs += [fake_run(tmp_path / f"alps-b3-s{s}", s, 2.9, uniform[s] + d) for s, d in {0: 0.05, 1: 0.04, 2: 0.06}.items()]
    runs += [fake_run(tmp_path / f"random-b3-s{s}", s, 2.9, uniform[s] + d) for s, d in {0: 0.01, 1: -0.03}.items()]
    runs += [fake_run(tmp_path / "alps-b3.5-s0", 0, 4.0, 0.5), fake_run(tmp_path / "uniform-w4-s7", 7, 5.0, 0.6)]
    runs += [fake_run(tmp_path / "eagl-b4.0-s7", 7, 4.9, 0.58)]
    from yoloq.report.frontier import paired_gaps, run_row

    gaps = {(g["plan"], g["baseline"]): g for g in paired_gaps([run_row(r) for r in runs])}
    # b3.5 has no uniform or random of its budget: not paired; budget 4.0 is uniform W4A4's
    assert set(gaps) == {("alps-b3", "uniform-w3"), ("alps-b3", "random-b3"), ("random-b3", "uniform-w3"),
                         ("eagl-b4.0", "uniform-w4")}
    assert abs(gaps[("eagl-b4.0", "uniform-w4")]["mean_diff"] + 0.02) < 1e-12
    vs_uniform = gaps[("alps-b3", "uniform-w3")]
    assert vs_uniform["n"] == 3 and abs(vs_uniform["mean_diff"] - 0.05) < 1e-12
    half = 4.302652729911275 * 0.01 / 3 ** 0.5  # t(0.975, 2) x sd / sqrt(n)
    assert abs(vs_uniform["ci_high"] - vs_uniform["ci_low"] - 2 * half) < 1e-9
    vs_random = gaps[("alps-b3", "random-b3")]  # only the seeds random ran
    assert vs_random["seeds"] == [0, 1] and abs(vs_random["mean_diff"] - 0.055) < 1e-12
    table = write_frontier(runs, tmp_path)
    assert "| alps-b3 | uniform-w3 | **+5.0 [+2.5, +7.5]** (n=3) | s0: +5.0, s1: +4.0, s2: +6.0 |" in table
    assert "| random-b3 | uniform-w3 | -1.0 [-26.4, +24.4] (n=2) | s0: +1.0, s1: -3.0 |" in table


def test_no_runs_is_one_line(tmp_path):
    with pytest.raises(SystemExit, match="no finished quantized runs"):
        write_frontier([tmp_path], tmp_path)


@pytest.mark.slow
def test_frontier_script_on_tiny_data(tmp_path):
    """scripts/mixed_frontier.sh end to end on tiny data (one seed, one budget): 6 trained runs and the report;
    run again, it skips them all (about 6 minutes on 2 cores)."""
    import subprocess
    from pathlib import Path

    from tests.conftest import TINY

    root = Path(__file__).resolve().parents[2]
    cmd = ["bash", str(root / "scripts" / "mixed_frontier.sh"), "0", "3", *TINY, f"cache_dir={tmp_path / 'cache'}",
           "mixed.alps.holdout=16", "mixed.alps.fraction=0.5"]
    scripts = tmp_path / "scripts"
    scripts.symlink_to(root / "scripts")  # the script calls scripts/*.py relative to the working directory
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1200, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    table = (tmp_path / "runs" / "frontier" / "frontier.md").read_text()
    for label in ("uniform-w2", "uniform-w3", "uniform-w4", "eagl-b3", "alps-b3", "random-b3"):
        assert f"| {label} |" in table
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert again.returncode == 0 and again.stdout.count("finished before, skipped") == 6


def test_frontier_script_refuses_an_unknown_alps_start_or_uniform_width(tmp_path):
    """ALPS_FROM names where ALPS starts (fp or w4), UNIFORM the uniform widths; anything else stops before any run,
    in one line."""
    import os
    import subprocess
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "scripts" / "mixed_frontier.sh"
    proc = subprocess.run(["bash", str(script), "0", "3"], capture_output=True, text=True, timeout=60, cwd=tmp_path,
                          env={**os.environ, "ALPS_FROM": "w3"})
    assert proc.returncode == 2 and proc.stderr.strip() == "ALPS_FROM=w3: use fp or w4"
    assert not (tmp_path / "runs").exists()
    proc = subprocess.run(["bash", str(script), "0", "3"], capture_output=True, text=True, timeout=60, cwd=tmp_path,
                          env={**os.environ, "UNIFORM": "4 9"})
    assert proc.returncode == 2
    assert proc.stderr.strip() == 'UNIFORM="4 9": give bit widths from 2 to 8, e.g. UNIFORM="4 3 2"'
    assert not (tmp_path / "runs").exists()
