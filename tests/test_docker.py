"""The container's entrypoint (docker/entrypoint.sh): torchrun around scripts/train.py, its process-count
defaults, the exit code after a stop signal, and the Dockerfile pointing at it. No docker daemon needed."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ENTRYPOINT = ROOT / "docker" / "entrypoint.sh"
DOCKERFILE = ROOT / "docker" / "Dockerfile"

needs_torchrun = pytest.mark.skipif(importlib.util.find_spec("torch.distributed.run") is None,
                                    reason="this torch has no torch.distributed.run (torchrun)")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("NPROC_PER_NODE", "NNODES", "MASTER_ADDR", "MASTER_PORT", "CUDA_VISIBLE_DEVICES")}
    env.update(YOLO_OFFLINE="1", PYTHON=sys.executable, **extra)  # this interpreter's torchrun, venv or not
    return env


def _fake_checkout(tmp_path: Path, train_py: str) -> Path:
    """A copy of the entrypoint next to a stand-in scripts/train.py: the entrypoint finds it relative to itself."""
    (tmp_path / "docker").mkdir()
    (tmp_path / "scripts").mkdir()
    shutil.copy2(ENTRYPOINT, tmp_path / "docker" / "entrypoint.sh")
    (tmp_path / "scripts" / "train.py").write_text(train_py)
    return tmp_path / "docker" / "entrypoint.sh"


@needs_torchrun
def test_entrypoint_help_runs_train_under_torchrun():
    proc = subprocess.run(["bash", str(ENTRYPOINT), "--help"], capture_output=True, text=True, timeout=120,
                          cwd=ROOT, env=_env(NPROC_PER_NODE="1"))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "== Configuration groups ==" in out
    assert re.search(r"^model: .*\byolov5n\b", out, re.M), out
    assert re.search(r"^method: .*\bema_qc\b", out, re.M), out


@pytest.mark.parametrize("var, value", [("NPROC_PER_NODE", "0"), ("NNODES", "two"), ("MASTER_PORT", "-1")])
def test_entrypoint_rejects_bad_settings(var, value):
    proc = subprocess.run(["bash", str(ENTRYPOINT)], capture_output=True, text=True, timeout=30, cwd=ROOT,
                          env=_env(**{var: value}))
    assert proc.returncode == 2
    assert f"{var}={value}" in proc.stderr


@needs_torchrun
@pytest.mark.parametrize("visible, world", [("0,1", "2"), ("", "1")])
def test_process_count_follows_visible_gpus(tmp_path, visible, world):
    script = _fake_checkout(tmp_path, "import os, sys\nprint('WORLD_SIZE=' + os.environ['WORLD_SIZE'])\n")
    proc = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env=_env(CUDA_VISIBLE_DEVICES=visible))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"WORLD_SIZE={world}" in proc.stdout


STOPPABLE = """
import os, signal, sys, time
from pathlib import Path

out, rank, stop = Path(sys.argv[1]), os.environ["RANK"], []
signal.signal(signal.SIGTERM, lambda signum, frame: stop.append(signum))
(out / f"ready{rank}").touch()
deadline = time.time() + 60
while not stop and time.time() < deadline:
    time.sleep(0.05)
if not stop:
    sys.exit(3)
time.sleep(1)  # finishing the step
(out / f"last{rank}.pt").write_text("checkpoint")
sys.exit(143)
"""


@needs_torchrun
def test_sigterm_reaches_workers_and_exits_143(tmp_path):
    """`docker stop` signals the entrypoint (PID 1): every worker must get SIGTERM and the container must exit
    with 143, not torchrun's own 1, so a SLURM script can tell a stop from a failure."""
    script = _fake_checkout(tmp_path, STOPPABLE)
    proc = subprocess.Popen(["bash", str(script), str(tmp_path)], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=_env(NPROC_PER_NODE="2"),
                            start_new_session=True)
    try:
        deadline = time.time() + 90
        while not all((tmp_path / f"ready{r}").exists() for r in (0, 1)):
            assert proc.poll() is None and time.time() < deadline, proc.communicate()[0]
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 143, out
    assert all((tmp_path / f"last{r}.pt").read_text() == "checkpoint" for r in (0, 1)), out


def test_dockerfile_uses_the_entrypoint():
    """A rename of entrypoint.sh, or of a folder the image copies, must not silently break the image."""
    text = DOCKERFILE.read_text()
    entry = re.search(r"^ENTRYPOINT\s+(\[.*\])\s*$", text, re.M)
    assert entry, "Dockerfile has no exec-form ENTRYPOINT"
    command = json.loads(entry.group(1))
    assert command == ["/opt/yoloq/docker/entrypoint.sh"]
    assert os.access(ENTRYPOINT, os.X_OK), f"{ENTRYPOINT} is not executable (chmod +x)"
    copies = re.findall(r"^COPY\s+(.+?)\s+\S+\s*$", text, re.M)
    sources = [src for line in copies for src in line.split()]
    assert "docker/entrypoint.sh" in sources
    for src in sources:
        assert (ROOT / src).exists(), f"the Dockerfile copies {src}, which is not in the repository"
