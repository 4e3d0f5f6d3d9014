"""Run scripts/train.py in a child process on the tiny config (for the kill, signal and torchrun tests)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import TINY

REPO = Path(__file__).resolve().parents[2]
TRAIN = REPO / "scripts" / "train.py"


def env() -> dict:
    # Eager fake-quant kernels: each child would spend about 5 s loading compiled ones, which the in-process
    # tests (kernels, fused conv, trainer resume, bench) cover.
    return {**os.environ, "YOLO_OFFLINE": "1", "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1",
            "YOLOQ_FAKE_QUANT_KERNEL": "eager"}


def train_command(cache: Path, run_dir: Path | None, *extra: str, torchrun: int = 0) -> list[str]:
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={torchrun}"]
                if torchrun else [sys.executable])
    run = [f"run_dir={run_dir}"] if run_dir else []
    return launcher + [str(TRAIN), *TINY, f"cache_dir={cache}", *run, *extra]


def start(cmd: list[str], cwd: Path) -> subprocess.Popen:
    """In its own process group, so a test can signal the whole group as torchrun and SLURM do."""
    return subprocess.Popen(cmd, cwd=cwd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def run(cmd: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=env(), capture_output=True, text=True, timeout=timeout)


def wait_for(condition, proc: subprocess.Popen, timeout: float = 240, poll: float = 0.02) -> None:
    """Poll until condition() holds; fail if the process ends first or time runs out."""
    end = time.time() + timeout
    while time.time() < end:
        if condition():
            return
        if proc.poll() is not None:
            raise AssertionError(f"the run ended (code {proc.returncode}) before the awaited point:\n"
                                 f"{proc.stdout.read()[-3000:]}")
        time.sleep(poll)
    proc.kill()
    raise AssertionError("timed out waiting for the run")
