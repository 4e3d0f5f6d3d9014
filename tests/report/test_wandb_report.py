"""scripts/wandb_report.py against a recorded W&B API (never the network): the report groups the runs by
method and bit width, charts the metrics yoloq logs, and is saved with one upsert."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from yoloq.engine.pipeline import summary_of
from yoloq.engine.report import StageResult
from yoloq.report.wandb_report import FINAL, RecordedApi, build_report, recorded_api, report_spec

ROOT = Path(__file__).resolve().parents[2]


def test_the_report_charts_what_runs_log_grouped_by_model_method_and_bits():
    # the summary keys the report charts are the ones a run writes
    results = [StageResult(s, "ema_qc", 3, 3, {"mAP50-95": 0.5, "mAP50": 0.7}, 1.0, "x") for s in ("fp", "qat", "folded")]
    assert set(FINAL) <= set(summary_of(results))
    with recorded_api(RecordedApi("team")):
        spec = report_spec(build_report("yoloq", "team", "yolov5n-shapes", "t"))
    text = json.dumps(spec)
    grid = next(b for b in spec["blocks"] if b["type"] == "panel-grid")["metadata"]
    run_set = grid["runSets"][0]
    # W&B keeps a nested config value under <key>.value: method.name is grouped as method.value.name
    assert [g["name"] for g in run_set["grouping"]] == ["model.value.name", "method.value.name", "w_bits.value"]
    # the panels follow that grouping: one grouped by method alone would pool bit widths and models
    assert not any(p["config"].get("groupBy") for p in grid["panelBankSectionConfig"]["panels"]
                   if p["viewType"] in ("Bar Chart", "Run History Line Plot"))
    assert run_set["filters"] and "yolov5n-shapes" in json.dumps(run_set["filters"])
    for key in (*FINAL, "qat-epoch/mAP50-95"):
        assert key in text, key
    assert {p["viewType"] for p in grid["panelBankSectionConfig"]["panels"]} >= {"Bar Chart", "Run History Line Plot",
                                                                               "Run Comparer"}


def test_save_creates_the_project_and_upserts_one_report():
    api = RecordedApi("team")
    with recorded_api(api):
        report = build_report("yoloq", "team", None, "methods")
        report.save()
        url = report.url
    assert [name for name, _ in api.calls] == ["ProjectInternalId", "create_project", "upsertView"]
    upsert = api.calls[-1][1]
    assert upsert["entityName"] == "team" and upsert["projectName"] == "yoloq" and upsert["displayName"] == "methods"
    assert url.startswith("https://wandb.ai/team/yoloq/reports/methods--")


def test_dry_run_needs_no_network_and_save_without_login_is_one_line(tmp_path):
    env = {"HOME": str(tmp_path), "WANDB_CONFIG_DIR": str(tmp_path / "w"), "PATH": "/usr/bin:/bin",
           "WANDB_BASE_URL": "http://127.0.0.1:9"}
    script = str(ROOT / "scripts" / "wandb_report.py")
    dry = subprocess.run([sys.executable, script, "--dry-run"], capture_output=True, text=True, timeout=120, env=env)
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout)["blocks"]
    save = subprocess.run([sys.executable, script], capture_output=True, text=True, timeout=120, env=env)
    assert save.returncode == 2 and save.stderr.startswith("error: could not save the W&B report"), save.stderr
    assert "Traceback" not in save.stderr
