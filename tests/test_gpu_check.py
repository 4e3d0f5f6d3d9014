"""scripts/gpu_check.sh is for a GPU machine: elsewhere it stops at once with one line (it runs for real on one)."""

import subprocess
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "gpu_check.sh"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: the script would run in full")
def test_without_a_gpu_it_says_so_and_exits_2(tmp_path):
    out = subprocess.run(["bash", str(SCRIPT), str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert out.stdout.strip().splitlines()[-1] == ("error: PyTorch sees no CUDA device: run scripts/gpu_check.sh on a "
                                                   "GPU machine")


def test_the_script_parses():
    assert subprocess.run(["bash", "-n", str(SCRIPT)]).returncode == 0
