"""`pip install .` (not editable) into a fresh virtual environment: the configs ship inside the package, so the
installed `yoloq` command runs the main job and scripts/eval.py scores its checkpoint, from any folder, with
no checkout on sys.path. The venv sees this machine's site-packages for the heavy dependencies (torch,
ultralytics, ...); yoloq itself comes from the venv's own install."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TINY

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow  # about 35 s (a wheel build, a venv, a tiny run): a packaging check, `python -m pytest -m slow`
def test_a_non_editable_install_runs_train_and_eval(tmp_path):
    import shutil

    src = tmp_path / "src"  # pip builds in the source tree: a copy keeps build/ out of the checkout
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".git", "runs", "build", "*.egg-info", "__pycache__",
                                                             ".whl", "wandb", "outputs", "multirun"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    py, exe = venv / "bin" / "python", venv / "bin" / "yoloq"
    install = subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", str(src)], capture_output=True,
                             text=True, timeout=300, cwd=tmp_path)  # as a user would: a wheel built from the checkout
    assert install.returncode == 0, install.stderr[-3000:]
    env = {**os.environ, "WANDB_MODE": "disabled", "YOLOQ_FAKE_QUANT_KERNEL": "eager", "PYTHONPATH": ""}
    where = subprocess.run([str(py), "-c", "import yoloq, yoloq.config as c; print(yoloq.__file__, c.CONF_DIR)"],
                           capture_output=True, text=True, cwd=tmp_path, env=env)
    assert str(venv) in where.stdout and str(ROOT) not in where.stdout, where.stdout + where.stderr

    work = tmp_path / "elsewhere"
    work.mkdir()
    train = subprocess.run([str(exe), "train", *TINY, "trainer.fp.epochs=0", "trainer.qat.epochs=0", "method=lsq",
                            f"cache_dir={tmp_path / 'cache'}", f"run_dir={work / 'run'}"],
                           capture_output=True, text=True, timeout=400, cwd=work, env=env)
    assert train.returncode == 0, train.stdout[-2000:] + train.stderr[-2000:]
    assert (work / "run" / "results.json").is_file() and (work / "run" / ".hydra" / "config.yaml").is_file()

    score = subprocess.run([str(py), str(ROOT / "scripts" / "eval.py"), f"+checkpoint={work / 'run' / 'qat.pt'}",
                            f"cache_dir={tmp_path / 'cache'}", f"run_dir={work / 'eval'}", "progress=false"],
                           capture_output=True, text=True, timeout=300, cwd=work, env=env)
    assert score.returncode == 0, score.stdout[-2000:] + score.stderr[-2000:]
    assert (work / "eval" / "eval.json").is_file()

    usage = subprocess.run([str(exe), "nonsense"], capture_output=True, text=True, cwd=work, env=env)
    assert usage.returncode == 2 and usage.stderr.startswith("error: unknown command 'nonsense'")
