"""torchrun: a 2-process gloo run on CPU through scripts/train.py, and the helpers it relies on."""

from __future__ import annotations

import json

import pytest
import torch

from tests.engine.run_subprocess import run, train_command
from yoloq.data.epoch_loader import EpochSampler
from yoloq.engine import distributed


@pytest.mark.slow  # 38 s: tests/engine/test_ddp_step.py checks the two-rank step in the default run
def test_two_process_gloo_run_keeps_every_rank_identical(tmp_path):
    out = run(train_command(tmp_path / "cache", tmp_path / "run", "method=ema_qc", "trainer.qat.epochs=2",
                            "trainer.qat.bn_refresh=2", torchrun=2), tmp_path, timeout=400)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    run_dir = tmp_path / "run"
    log = (run_dir / "train.log").read_text()
    assert "2 processes (batch 4 each)" in log
    fingerprints = json.loads((run_dir / "ddp_check.json").read_text())
    assert set(fingerprints) == {"fp", "qat", "qc"}
    for stage, parts in fingerprints.items():  # parameters, and the EMA copy (QAT with ema_qc) that is saved
        assert set(parts) == ({"model"} if stage == "qc" else {"model", "ema"}), (stage, parts)  # FP: EMA too
        for part, per_rank in parts.items():
            assert len(per_rank) == 2 and per_rank[0] == per_rank[1], (stage, part)
    rows = json.loads((run_dir / "results.json").read_text())
    assert [r["stage"] for r in rows] == ["fp", "qat", "qc", "folded"]
    assert rows[1]["extra"]["bn_refresh"] == 2  # rank 0 re-estimated the EMA copy's BN, every rank got it
    assert not list(run_dir.glob("*-last.pt"))  # finished stages leave only their final checkpoints
    assert not (run_dir / ".hydra" / "overrides.yaml").read_text().count("job_logging")  # rank 0's own files


def test_fingerprint_sees_a_one_ulp_change():
    a = torch.nn.Conv2d(3, 4, 3)
    b = torch.nn.Conv2d(3, 4, 3)
    b.load_state_dict(a.state_dict())
    assert distributed.fingerprint(a) == distributed.fingerprint(b)
    with torch.no_grad():
        w = b.weight.view(-1)
        w[5] = torch.nextafter(w[5], torch.tensor(1.0))
    assert distributed.fingerprint(a) != distributed.fingerprint(b)


def test_epoch_sampler_shards_and_resumes_the_same_order():
    full = [list(EpochSampler(10, batch=2, seed=3, rank=r, world=2)) for r in range(2)]
    assert sorted(full[0] + full[1]) == list(range(10)) and len(full[0]) == len(full[1]) == 5
    s = EpochSampler(10, batch=2, seed=3, rank=0, world=2)
    s.set_epoch(0, skip_batches=1)
    assert list(s) == full[0][2:] and len(s) == 3
    s.set_epoch(1)
    assert list(s) != full[0]  # another epoch, another order
    odd = [list(EpochSampler(7, batch=2, seed=0, rank=r, world=2)) for r in range(2)]
    assert len(odd[0]) == len(odd[1]) == 4 and set(odd[0] + odd[1]) == set(range(7))  # padded like DDP's
