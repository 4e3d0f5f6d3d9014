"""One run's folder: the lock that keeps a second process out, files written atomically, the stages'
checkpoints with their provenance, and what a resumed run reads back.

While a stage trains, `<stage>-last.pt` holds the trainer's whole state (rewritten after every epoch and on a
stop signal); a finished stage leaves its final checkpoint (`qat.pt`, `qc.pt`, ...). Every checkpoint carries
the run's identity and config and where the metric log stood, so resuming skips finished stages, continues
the unfinished one and rewinds the log to match. Rank 0 alone reads and writes; every rank gets what it read."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import OmegaConf

from yoloq.atomic import write_json_atomic
from yoloq.checkpoint import load_checkpoint, save_atomic
from yoloq.engine import distributed
from yoloq.engine.resume import STATE_FORMAT, STATE_VERSION, check_identity, has_progress, run_identity, state_path
from yoloq.errors import UserError
from yoloq.locks import FileLock

log = logging.getLogger("yoloq")
LOCK_NAME = ".lock"
RESUME_HINT = "resume from another run, or start a new run without resume"


def lock_run_folder(path: Path) -> FileLock:
    """Rank 0's exclusive hold on the folder for the whole run: a second run (or resume) of it is refused."""
    path.mkdir(parents=True, exist_ok=True)
    return FileLock(path / LOCK_NAME, f"run folder {path}").acquire(
        wait=False, refusal=": wait for that run to end (or stop it), or choose another run_dir")


def check_fresh(path: Path, resuming: bool, target: Path | None) -> None:
    """A new run may not write into a folder that holds another run's work."""
    if not resuming and has_progress(path):
        raise UserError(f"run_dir={path} already holds a run: add resume=true to continue it, or choose another run_dir")
    if target is not None and not resuming:  # stopped before its first checkpoint: start the log over
        for name in ("metrics.jsonl", "wandb-run-id.txt"):
            (path / name).unlink(missing_ok=True)


class RunFolder:
    def __init__(self, path: Path, cfg, names, run_log, resuming: bool = False):
        self.path, self.cfg, self.names, self.log, self.resuming = Path(path), cfg, names, run_log, resuming

    @property
    def identity(self) -> dict:
        return run_identity(self.cfg, self.names)

    def config(self) -> dict:
        return OmegaConf.to_container(self.cfg, resolve=True)

    def write_json(self, name: str, obj) -> Path:
        return write_json_atomic(self.path / name, obj)

    def _provenance(self) -> dict:
        """What every checkpoint of the run carries: whose it is, and where the log stood."""
        return {"identity": self.identity, "config": self.config(), "names": list(self.names),
                "log_step": self.log.step,
                "log_records": self.log.records}

    def save_final(self, name: str, payload: dict) -> Path:
        """A stage's final checkpoint, with what resuming needs to skip it (rank 0 writes)."""
        path = self.path / f"{name}.pt"
        record = {**payload, **self._provenance()}
        distributed.from_main(lambda: save_atomic(record, path))
        return path

    def saver(self, stage: str):
        """The trainer's per-epoch (and on-signal) checkpoint writer for `stage`."""
        def save(trainer) -> Path:
            return save_atomic({"format": STATE_FORMAT, "version": STATE_VERSION, "stage": stage,
                                "trainer": trainer.state_dict(), **self._provenance()}, state_path(self.path, stage))
        return save

    def _read(self, path: Path) -> dict | None:
        if not (self.resuming and path.is_file()):
            return None
        ckpt = load_checkpoint(path, RESUME_HINT)
        check_identity(ckpt.get("identity"), self.identity, path)
        return ckpt

    def finished(self, name: str) -> dict | None:
        """When resuming: the final checkpoint of a finished stage (rank 0 reads it; every rank gets it)."""
        path = self.path / f"{name}.pt"
        ckpt = distributed.from_main(lambda: self._read(path))
        if ckpt is not None:
            self.log.rewind(ckpt["log_step"], ckpt["log_records"])
            log.info("%s: finished before, loaded from %s", name, path)
        return ckpt

    def unfinished(self, stage: str) -> dict | None:
        """When resuming: the trainer state of a stage that was interrupted."""
        path = state_path(self.path, stage)
        ckpt = distributed.from_main(lambda: self._read(path))
        if ckpt is None:
            return None
        if ckpt.get("version") != STATE_VERSION:
            raise UserError(f"{path} holds stage state version {ckpt.get('version')}, this yoloq reads version "
                            f"{STATE_VERSION}: finish the run with the yoloq that wrote it, or start a new run")
        t = ckpt["trainer"]
        self.log.rewind(ckpt["log_step"], ckpt["log_records"])
        log.info("%s: resuming after %d epoch(s) and %d batch(es) from %s", stage, t["epoch"], t["batch"], path)
        return t

    def stage_done(self, stage: str) -> None:
        """The stage's final checkpoint is written: its per-epoch state is no longer needed."""
        if distributed.is_main():
            state_path(self.path, stage).unlink(missing_ok=True)
