"""Run folders and caches shared by processes: a second run of one folder is refused with the holder's PID;
JSON files are replaced atomically; two runs that start at once on an empty cache build the dataset and the
FP model once (the second waits, then reuses them)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from tests.engine.run_subprocess import env, start, train_command
from tests.test_cli import assert_one_line_error, run_train
from yoloq.atomic import write_json_atomic
from yoloq.errors import UserError


def hold_lock(run_dir) -> subprocess.Popen:
    """Another process that holds the run folder's lock (as a running training would) until killed."""
    code = textwrap.dedent(f"""
        import time
        from pathlib import Path
        from yoloq.engine.run_folder import lock_run_folder
        lock_run_folder(Path({str(run_dir)!r}))
        print("held", flush=True)
        time.sleep(120)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_process_on_a_locked_run_folder_is_refused(tmp_path):
    run_dir = tmp_path / "run"
    holder = hold_lock(run_dir)
    try:
        proc = run_train(tmp_path=tmp_path)  # scripts/train.py with run_dir=tmp_path/run
        assert_one_line_error(proc, f"run folder {run_dir} is in use by process {holder.pid}", "choose another run_dir")
        assert sorted(p.name for p in run_dir.iterdir()) == [".lock"]  # nothing written into the holder's folder
    finally:
        holder.kill()
        holder.wait()
    # the holder died without cleaning up: the kernel dropped its lock, so the folder is free again
    from yoloq.engine.run_folder import lock_run_folder

    lock_run_folder(run_dir).release()


def test_resume_of_a_running_run_is_refused(tiny_cfg, tmp_path):
    from yoloq.engine.pipeline import train

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("x: 1\n")
    (run_dir / "qat-last.pt").write_bytes(b"a running stage's state")
    holder = hold_lock(run_dir)
    try:
        with pytest.raises(UserError, match=rf"is in use by process {holder.pid}"):
            train(tiny_cfg("resume=true"))
        assert (run_dir / "qat-last.pt").read_bytes() == b"a running stage's state"
    finally:
        holder.kill()
        holder.wait()


def test_json_is_replaced_atomically(tmp_path, monkeypatch):
    import os

    path = tmp_path / "results.json"
    write_json_atomic(path, {"stage": "fp"})

    def crash(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", crash)  # the write fails after some bytes went to the temporary file
    with pytest.raises(UserError, match=r"could not write file .*results.json \(Input/output error\)"):
        write_json_atomic(path, {"stage": "qat"})
    assert json.loads(path.read_text()) == {"stage": "fp"}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


PREPARE = textwrap.dedent("""
    import logging, sys
    from pathlib import Path
    from omegaconf import OmegaConf
    from yoloq.data.prepare import prepare_dataset
    logging.basicConfig(level=logging.INFO)
    cfg = OmegaConf.create({"name": "shapes", "n_train": 40, "n_val": 4, "img_size": 96, "min_object": 12,
                            "max_object": 48, "max_objects": 3, "distractors": 1, "seed": 7, "workers": 1})
    info = prepare_dataset(cfg, Path(sys.argv[1]))
    print("root", info.root, info.root.stat().st_ino, flush=True)
""")


def test_two_processes_prepare_one_dataset_once(tmp_path):
    cache = tmp_path / "cache"
    procs = [subprocess.Popen([sys.executable, "-c", PREPARE, str(cache)], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    roots = [next(line for line in out.splitlines() if line.startswith("root")) for out in outs]
    assert roots[0] == roots[1]  # one folder, built once: the second did not replace it (same inode)
    assert sum("waiting for process" in out for out in outs) <= 1
    assert [p.name for p in cache.iterdir() if "partial" in p.name] == []


@pytest.mark.slow  # 48 s: the cache lock itself is covered by test_two_processes_prepare_one_dataset_once
def test_two_runs_on_an_empty_cache_train_the_fp_model_once(tmp_path):
    cache = tmp_path / "cache"
    small = ("data.n_train=16", "data.n_val=8", "method=lsq", "trainer.qat.epochs=0")  # the FP stage is what counts
    cmds = [train_command(cache, tmp_path / f"run{i}", *small) for i in range(2)]
    procs = [start(cmd, tmp_path) for cmd in cmds]
    outs = [p.communicate(timeout=400)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[-2000:] for o in outs]
    logs = [(tmp_path / f"run{i}" / "train.log").read_text() for i in range(2)]
    assert sum("FP: cached the FP model" in log for log in logs) == 1, logs
    assert sum("FP: reusing the cached FP model" in log for log in logs) == 1
    assert any("waiting for process" in log and "the FP cache entry" in log for log in logs)
    fp = [json.loads((tmp_path / f"run{i}" / "results.json").read_text())[0]["metrics"] for i in range(2)]
    assert fp[0] == fp[1]  # the same FP model


def test_env_is_offline():
    assert env()["WANDB_MODE"] == "disabled"


def test_a_lock_taken_twice_in_one_process_holds_until_both_are_released(tmp_path):
    from yoloq.locks import FileLock

    path = tmp_path / "x.lock"
    probe = ("import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDWR)\n"
             "try:\n    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB); print('free')\n"
             "except BlockingIOError:\n    print('held')")

    def seen_by_another_process() -> str:
        return subprocess.run([sys.executable, "-c", probe, str(path)], capture_output=True, text=True).stdout.strip()

    outer = FileLock(path, "x").acquire(wait=False)
    inner = FileLock(path, "x").acquire(wait=False)  # e.g. train() after the command line took the run folder
    assert inner is outer
    inner.release()
    assert seen_by_another_process() == "held"
    outer.release()
    assert seen_by_another_process() == "free"
