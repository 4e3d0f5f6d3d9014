"""What the stages of one run share: config, data, device, the run folder, the stop signal and the CPU threads,
and the one way they build a trainer (with the folder's checkpoint writer and the stop signal)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from yoloq.engine import distributed
from yoloq.engine.cpu_threads import CpuThreads
from yoloq.engine.preemption import Preempted, StopSignal
from yoloq.engine.run_folder import RunFolder
from yoloq.engine.trainer import Recipe, Trainer
from yoloq.factory import RunData


@dataclass
class Run:
    cfg: object
    data: RunData
    device: torch.device
    folder: RunFolder
    stop: StopSignal
    threads: CpuThreads | None = None  # the training steps' CPU threads
    fingerprints: dict = field(default_factory=dict)  # stage -> every rank's parameter and EMA hashes (DDP)

    @property
    def run_dir(self) -> Path:
        return self.folder.path

    @property
    def log(self):
        return self.folder.log

    def check_stop(self) -> None:
        """Between stages: a stop signal ends the run here (finished stages are on disk)."""
        if distributed.any_rank(self.stop.requested)[0]:
            raise Preempted(f"stopped by {self.stop.name or 'a signal'} between stages; the finished stages are "
                            f"saved in {self.run_dir}")

    def trainer(self, stage: str, model, loader, recipe: Recipe, callbacks) -> Trainer:
        """A stage's trainer, continuing from the stage's `<stage>-last.pt` when the run resumes."""
        return Trainer(stage, model, loader, self.data.evaluator, recipe, self.device, callbacks, self.data.hyp,
                       self.cfg.progress, checkpoint=self.folder.saver(stage), stop=self.stop,
                       state=self.folder.unfinished(stage), threads=self.threads)

    def stage_done(self, stage: str, trainer: Trainer) -> None:
        self.fingerprints[stage] = trainer.replica_fingerprints
        self.folder.stage_done(stage)
