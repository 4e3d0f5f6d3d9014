"""`python scripts/train.py -m experiment=compare_methods ...` on tiny data with the network gone: every run
finishes, the runs share one W&B group (offline), and the sweep folder gets the comparison of those runs."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import TINY
from tests.track.wandb_records import read_offline_run

ROOT = Path(__file__).resolve().parents[2]
DEAD = "http://127.0.0.1:9"  # nothing listens on the discard port: every connection is refused


def offline_env(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "YOLO_"))}
    env.update(HOME=str(tmp_path), WANDB_API_KEY="k" * 40, WANDB_BASE_URL=DEAD, HTTP_PROXY=DEAD, HTTPS_PROXY=DEAD,
               http_proxy=DEAD, https_proxy=DEAD, NO_PROXY="", no_proxy="",
               YOLOQ_FAKE_QUANT_KERNEL="eager")  # as in tests/engine/run_subprocess.py
    return env


@pytest.mark.slow  # 87 s: a real Hydra multirun of tiny runs; tests/report/test_compare.py covers the report in the default run
def test_multirun_compares_methods_without_network(tmp_path):
    sweep = tmp_path / "sweep"
    cmd = [sys.executable, str(ROOT / "scripts" / "train.py"), "-m", *TINY, f"cache_dir={tmp_path / 'cache'}",
           "experiment=compare_methods", "method=lsq,ema_qc", "bits=3", "seed=0", "logger=wandb",
           "logger.wandb.init_timeout=3", f"hydra.sweep.dir={sweep}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path, env=offline_env(tmp_path))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    runs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert [p.name for p in runs] == ["0-yolov5n-w3a3-lsq-s0", "1-yolov5n-w3a3-ema_qc-s0"]

    expected = {}
    for run in runs:
        results = json.loads((run / "results.json").read_text())
        base = results[1]["method"].removesuffix("_qc")
        expected[base] = results[1]["metrics"]["mAP50-95"]
        if results[-1]["stage"] == "folded":
            expected[f"{base}+QC"] = results[-1]["metrics"]["mAP50-95"]
        wandb_run = read_offline_run(run)  # the online start failed for lack of network: logged offline
        assert wandb_run["group"] == "compare_methods"
        assert wandb_run["summary"]["qat/mAP50-95"] == results[1]["metrics"]["mAP50-95"]

    table = (sweep / "compare.md").read_text().splitlines()
    assert table[0] == "| method | W3A3 |"
    assert [line.split(" | ")[0] for line in table[2:5]] == ["| lsq", "| ema", "| ema+QC"]
    for line in table[2:5]:
        label = line.split(" | ")[0].removeprefix("| ")
        assert line.split(" | ")[1].startswith(f"{100 * expected[label]:.1f} ± nan (n=1)")
    with open(sweep / "compare.csv") as f:
        rows = list(csv.DictReader(f))
    assert {(r["label"], float(r["mAP50-95"])) for r in rows if r["label"] != "FP"} == set(expected.items())
    with Image.open(sweep / "compare.png") as im:
        assert im.format == "PNG"

    # the same multirun again (as after a stop): the finished run is skipped, the unfinished one continues
    (runs[1] / "results.json").unlink()
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path, env=offline_env(tmp_path))
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    out = again.stdout + again.stderr
    assert f"{runs[0]}: finished before (results.json): skipped" in out
    assert f"{runs[1]}: unfinished: continuing it" in out and "qat: finished before, loaded" in out
    assert json.loads((runs[1] / "results.json").read_text())[1]["metrics"]["mAP50-95"] == expected["ema"]
