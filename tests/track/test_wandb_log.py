"""logger=wandb: offline unless W&B is set up online, an offline run directory that holds what was logged,
and no hang or failure when the network is gone."""

import time

import pytest

from tests.track.wandb_records import read_offline_run
from yoloq.track.wandb_log import WandbLog, resolve_mode

KEY = "k" * 40


@pytest.fixture
def no_wandb_setup(monkeypatch, tmp_path):
    for var in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc, no ~/.config/wandb
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    return monkeypatch


def test_mode_is_offline_without_a_key(no_wandb_setup, tmp_path):
    assert resolve_mode("auto") == "offline"
    no_wandb_setup.setenv("WANDB_MODE", "online")
    assert resolve_mode("auto") == "offline"  # online asked for, but nothing to log in with: no prompt
    no_wandb_setup.setenv("WANDB_API_KEY", KEY)
    assert resolve_mode("auto") == "online"
    no_wandb_setup.setenv("WANDB_MODE", "disabled")
    assert resolve_mode("auto") == "disabled"
    assert resolve_mode("offline") == "offline"


def test_netrc_counts_as_a_key(no_wandb_setup, tmp_path):
    netrc = tmp_path / ".netrc"
    netrc.write_text(f"machine api.wandb.ai\n  login user\n  password {KEY}\n")
    netrc.chmod(0o600)
    assert resolve_mode("auto") == "online"


def test_offline_run_is_written_and_read_back(no_wandb_setup, tmp_path):
    w = WandbLog(tmp_path, "yoloq", None, "grp", "run-a", ["yolov5n", "w3a3", "lsq"], {"bits": 3})
    assert w.mode == "offline"
    w.log({"qat/box_loss": 1.5, "qat/lr/pg0": 0.01}, step=10)
    w.log({"qat/box_loss": 1.25}, step=20)
    w.summary({"qat/mAP50-95": 0.42})
    w.close()
    run = read_offline_run(tmp_path)
    assert run["group"] == "grp" and run["project"] == "yoloq" and run["tags"] == ["yolov5n", "w3a3", "lsq"]
    steps = {row["_step"]: row for row in run["history"]}
    assert steps[10]["qat/box_loss"] == 1.5 and steps[10]["qat/lr/pg0"] == 0.01
    assert steps[20]["qat/box_loss"] == 1.25
    assert run["summary"]["qat/mAP50-95"] == 0.42


def test_unreachable_server_falls_back_to_offline(no_wandb_setup, tmp_path):
    """Online configured (a key), but the network is down: the run logs offline after init_timeout, and every
    row logged right after the fallback is in the offline run (wandb's finish() could return before its writer
    had flushed them, seen as 0 rows in 1 of 30 fallbacks; closing now waits for the W&B service to exit)."""
    no_wandb_setup.setenv("WANDB_API_KEY", KEY)
    no_wandb_setup.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens on the discard port
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        no_wandb_setup.setenv(var, "http://127.0.0.1:9")
    start = time.time()
    w = WandbLog(tmp_path, "yoloq", None, "grp", "run-b", [], {}, mode="auto", init_timeout=5)
    for step in range(1, 21):
        w.log({"x": float(step)}, step=step)
    w.close()
    assert w.mode == "offline"
    assert time.time() - start < 60
    history = read_offline_run(tmp_path)["history"]
    assert [row["x"] for row in history] == [float(s) for s in range(1, 21)]
