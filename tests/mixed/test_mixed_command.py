"""`scripts/mixed_precision.py`: a plan for the cached FP model within the budget, written and trainable."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import TINY
from tests.test_cli import assert_one_line_error, entry_in_process

ROOT = Path(__file__).resolve().parents[2]


def run_mixed(tmp_path, *args):
    cmd = [sys.executable, str(ROOT / "scripts" / "mixed_precision.py"), *TINY, f"cache_dir={tmp_path / 'cache'}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)


def test_eagl_and_random_plans_fit_the_budget(tmp_path):
    # budget=2.5: between W2A2's and W3A3's cost (a fractional bit width is a budget, not truncated)
    proc = run_mixed(tmp_path, "search=eagl", "high=4", "low=2", "budget=2.5", f"run_dir={tmp_path / 'eagl'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    plan = yaml.safe_load((tmp_path / "eagl" / "layer_bits.yaml").read_text())
    assert plan["bops"] <= plan["budget_bops"] and plan["search"] == "eagl" and plan["choices"] == [4, 2]
    assert plan["uniform_bops"]["W2A2"] < plan["budget_bops"] < plan["uniform_bops"]["W4A4"]
    assert {b["w_bits"] for b in plan["layers"].values()} == {2, 4} and "model.0.conv" not in plan["layers"]
    assert "GBOPs of a" in proc.stdout and "quant.layer_bits=" in proc.stdout

    # a multiple-choice search with an absolute budget, from the same cached FP model
    proc = run_mixed(tmp_path, "search=random", "bits=[4,3,2]", f"budget_bops={plan['budget_bops']}",
                     f"run_dir={tmp_path / 'random'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rand = yaml.safe_load((tmp_path / "random" / "layer_bits.yaml").read_text())
    assert rand["bops"] <= plan["budget_bops"] and rand["choices"] == [4, 3, 2]
    assert rand["layers"] != plan["layers"]

    # a budget below every plan, from the same (now cached) FP model
    assert_one_line_error(run_mixed(tmp_path, "budget_bops=1000"), "no precision plan fits the budget")

    # training with a plan: tests/mixed/test_plan_roundtrip.py


@pytest.mark.parametrize("args, words", [
    (["search=hawq"], ["search=hawq is unknown", "eagl"]),
    (["high=4", "low=4"], ["not two or more different integers"]),
    (["budget=1"], ["budget=1 must be a bit width from 2 to 8"]),
])
def test_bad_search_settings_are_one_line(tmp_path, monkeypatch, capsys, args, words):
    # in-process (the script's own process: the budget case above)
    argv = [*TINY, f"cache_dir={tmp_path / 'cache'}", *args]
    assert_one_line_error(entry_in_process("mixed", argv, tmp_path, monkeypatch, capsys), *words)


@pytest.mark.slow
def test_alps_plan_from_held_out_fine_tuning(tmp_path):
    # 1 + 62 candidates of 2 fine-tuning steps each on tiny data: about 2 minutes
    alps = ["search=alps", "alps.holdout=16", "alps.fraction=0.5", "budget=3", f"run_dir={tmp_path / 'alps'}"]
    proc = run_mixed(tmp_path, *alps)
    assert proc.returncode == 0, proc.stderr[-3000:]
    plan = yaml.safe_load((tmp_path / "alps" / "layer_bits.yaml").read_text())
    assert plan["search"] == "alps" and plan["bops"] <= plan["budget_bops"]
    assert plan["alps_holdout_images"] == 16 and plan["alps_finetune_images"] == 16
    assert plan["alps_candidates"] == plan["alps_finetune_steps"] / plan["alps_steps_per_candidate"] > 50
    assert "mAP drop" in proc.stdout
    # the same command again reuses every candidate's score (alps_scores.json) and writes the same plan
    proc = run_mixed(tmp_path, *alps)
    assert proc.returncode == 0, proc.stderr[-3000:]
    again = yaml.safe_load((tmp_path / "alps" / "layer_bits.yaml").read_text())
    assert again["layers"] == plan["layers"] and again["alps_finetune_steps"] == 0

    assert_one_line_error(run_mixed(tmp_path, "search=alps", "alps.holdout=40"),
                          "mixed.alps.holdout=40 must be from 1 to half the 48 training images")
    assert_one_line_error(run_mixed(tmp_path, "search=alps", "alps.fraction=2"), "mixed.alps.fraction=2.0 must be in")
