"""Faults a long cluster run meets: SIGKILL mid-QAT, SIGTERM (preemption), a NaN loss, and a checkpoint of
another run. Runs go through scripts/train.py in a child process, as on a cluster."""

from __future__ import annotations

import hashlib
import json
import os
import signal

import pytest
import torch

from tests.engine.run_subprocess import run, start, train_command, wait_for
from yoloq.engine.pipeline import train
from yoloq.engine.trainer import Trainer
from yoloq.errors import UserError
from yoloq.track.local_log import read_jsonl

QAT3 = ("trainer.qat.epochs=3", "method=ema_qc")


def load(path):
    return torch.load(path, map_location="cpu", weights_only=True)  # yoloq writes safe files


def trainer_state(path):
    try:
        return load(path)["trainer"]
    except (OSError, RuntimeError, EOFError):  # not written yet
        return None


def assert_same_model(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run (it also fills the FP cache the other runs share)."""
    root = tmp_path_factory.mktemp("resume")
    out = run(train_command(root / "cache", root / "ref", *QAT3), root)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return root


@pytest.mark.slow  # 62 s; the SIGTERM test below resumes the same way in the default run
def test_sigkill_mid_qat_then_resume_matches_an_uninterrupted_run(reference):
    root = reference
    killed = root / "killed"
    proc = start(train_command(root / "cache", killed, *QAT3), root)
    state = killed / "qat-last.pt"
    wait_for(lambda: state.is_file() and (trainer_state(state) or {}).get("epoch") == 1, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "qat.pt").exists(), "the kill must land inside QAT"

    # resume=PATH alone: the run continues with its own config (3 QAT epochs, not the command line's default)
    out = run([*train_command(root / "cache", None)[:2], f"resume={killed}"], root)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "qat: resuming after 1 epoch(s) and 0 batch(es)" in (killed / "train.log").read_text()

    for name in ("qat.pt", "qc.pt", "folded.pt"):
        assert_same_model(load(root / "ref" / name)["model"], load(killed / name)["model"])
    ref = json.loads((root / "ref" / "results.json").read_text())
    got = json.loads((killed / "results.json").read_text())
    assert [r["metrics"] for r in got] == [r["metrics"] for r in ref]
    # the local log holds each QAT step once, as an uninterrupted run's does
    steps = [r["step"] for r in read_jsonl(killed / "metrics.jsonl") if r["kind"] == "qat-epoch"]
    assert steps == sorted(set(steps)) and len(steps) == 3
    assert not (killed / "qat-last.pt").exists() and not (killed / "qc-last.pt").exists()


def test_sigterm_writes_a_resumable_checkpoint_and_exits_143(reference):
    root = reference
    stopped = root / "stopped"
    # loader workers too: the signal goes to the whole process group, as torchrun and SLURM send it
    proc = start(train_command(root / "cache", stopped, *QAT3, "logger.log_every=1", "trainer.workers=2"), root)
    log = stopped / "metrics.jsonl"
    wait_for(lambda: log.is_file() and '"kind": "qat"' in log.read_text(), proc)
    os.killpg(proc.pid, signal.SIGTERM)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 143, output[-3000:]
    assert "stopped: qat stopped by SIGTERM" in output and f"resume={stopped}" in output
    assert "Traceback" not in output
    state = load(stopped / "qat-last.pt")
    assert state["stage"] == "qat" and state["trainer"]["step"] >= 1
    assert state["trainer"]["batch"] > 0 or state["trainer"]["epoch"] > 0

    out = run(train_command(root / "cache", stopped, "resume=true", *QAT3, "trainer.workers=2"), root)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    done = load(stopped / "qat.pt")
    assert done["history"][-1]["epoch"] == 3 and [h["epoch"] for h in done["history"]] == [1, 2, 3]


def test_nan_stops_the_stage_and_keeps_the_last_checkpoint(tiny_cfg, tmp_path, monkeypatch):
    state = tmp_path / "run" / "qat-last.pt"
    seen = {}
    real_loss = Trainer.loss

    def poisoned(self, batch):
        loss, items = real_loss(self, batch)
        if self.name == "qat" and self.epoch == 1:  # the second QAT epoch: after one epoch's checkpoint
            seen.setdefault("sha", hashlib.sha1(state.read_bytes()).hexdigest())
            return loss * float("nan"), items
        return loss, items

    monkeypatch.setattr(Trainer, "loss", poisoned)
    cfg = tiny_cfg("trainer.qat.epochs=2", "method=lsq")
    with pytest.raises(UserError, match=r"qat: the loss became nan at epoch 2.*last good checkpoint .*qat-last.pt"):
        train(cfg)
    assert hashlib.sha1(state.read_bytes()).hexdigest() == seen["sha"]  # untouched by the failed epoch
    assert load(state)["trainer"]["epoch"] == 1

    # a fresh run may not overwrite it, and a checkpoint of other bits is refused by name
    with pytest.raises(UserError, match="already holds a run: add resume=true"):
        train(tiny_cfg("trainer.qat.epochs=2", "method=lsq"))
    with pytest.raises(UserError, match=r"another run \(w_bits=4 a_bits=4\) than this one \(w_bits=3 a_bits=3\)"):
        train(tiny_cfg("trainer.qat.epochs=2", "method=lsq", "bits=3", "resume=true"))
    with pytest.raises(UserError, match=r"another run \(method=lsq\) than this one \(method=ema\)"):
        train(tiny_cfg("trainer.qat.epochs=2", "method=ema", "resume=true"))

    # without the fault, the same run continues from that checkpoint to the end
    monkeypatch.setattr(Trainer, "loss", real_loss)
    results = train(tiny_cfg("trainer.qat.epochs=2", "method=lsq", "resume=true"))
    assert [r.stage for r in results] == ["fp", "qat"]
    assert not state.exists() and (tmp_path / "run" / "qat.pt").is_file()


def test_a_damaged_checkpoint_is_refused_in_one_line(tiny_cfg, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("x: 1\n")
    (run_dir / "qat-last.pt").write_bytes(b"\x80\x02torn")
    with pytest.raises(UserError, match=r"qat-last.pt cannot be read .*damaged"):
        train(tiny_cfg("trainer.qat.epochs=1", "method=lsq", "trainer.fp.epochs=0", "resume=true"))
    assert (run_dir / "config.yaml").read_text() == "x: 1\n"  # a resumed run keeps the run's own config


def test_a_failing_checkpoint_write_says_so(tmp_path, monkeypatch):
    from yoloq import checkpoint

    blocked = tmp_path / "file"
    blocked.write_text("")  # a file where the run folder should be: the OS refuses to write under it
    with pytest.raises(UserError, match=r"could not write checkpoint .*qat-last.pt .*free disk space or fix"):
        checkpoint.save_atomic({"a": 1}, blocked / "qat-last.pt")

    def disk_full(obj, f):
        f.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint.torch, "save", disk_full)
    good = tmp_path / "qat-last.pt"
    good.write_bytes(b"the previous checkpoint")
    with pytest.raises(UserError, match=r"could not write checkpoint .*\(No space left on device\)"):
        checkpoint.save_atomic({"a": 1}, good)
    assert good.read_bytes() == b"the previous checkpoint"  # the last good one survives
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "qat-last.pt"]  # no temporary file left


def test_a_stage_state_of_another_version_is_refused_in_one_line(tiny_cfg, tmp_path, monkeypatch):
    from yoloq.engine import run_folder
    from yoloq.engine.resume import STATE_FORMAT, STATE_VERSION

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("x: 1\n")
    torch.save({"format": STATE_FORMAT, "version": STATE_VERSION - 1, "stage": "qat", "trainer": {}},
               run_dir / "qat-last.pt")
    monkeypatch.setattr(run_folder, "check_identity", lambda *args: None)  # this run's own file, but older
    with pytest.raises(UserError, match=rf"qat-last.pt holds stage state version {STATE_VERSION - 1}, this yoloq "
                                        rf"reads version {STATE_VERSION}: .*start a new run"):
        train(tiny_cfg("trainer.qat.epochs=1", "method=lsq", "trainer.fp.epochs=0", "resume=true"))
    assert (run_dir / "qat-last.pt").is_file()  # nothing lost
