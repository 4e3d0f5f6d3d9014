"""A run's log: every record goes to the local metrics.jsonl and, with logger=wandb, to W&B, on one global
step that keeps counting across the stages (W&B wants steps that never go back)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from yoloq.track.local_log import JsonlLog


class RunLog:
    def __init__(self, run_dir: Path, wandb_log=None, log_every: int = 10):
        self.run_dir = Path(run_dir)
        self.local = JsonlLog(self.run_dir / "metrics.jsonl")
        self.wandb = wandb_log
        self.log_every = log_every
        self.step = 0  # global step: stages add their optimizer steps to where the previous stage ended

    @classmethod
    def from_cfg(cls, cfg, run_dir: Path) -> "RunLog":
        lg = cfg.logger
        wandb_log = None
        if lg.wandb is not None and lg.wandb.mode != "disabled":
            from yoloq.track.wandb_log import WandbLog

            bits = f"w{cfg.w_bits}a{cfg.a_bits}"
            id_file = Path(run_dir) / "wandb-run-id.txt"  # a resumed run continues its W&B run
            wandb_log = WandbLog(run_dir, lg.wandb.project, lg.wandb.entity, str(lg.wandb.group),
                                 name=Path(run_dir).name, tags=[cfg.model.name, bits, cfg.method.name],
                                 config=OmegaConf.to_container(cfg, resolve=True), mode=lg.wandb.mode,
                                 init_timeout=float(lg.wandb.init_timeout),
                                 run_id=id_file.read_text().strip() if id_file.is_file() else None)
            id_file.write_text(wandb_log.run.id)
        return cls(run_dir, wandb_log, lg.log_every)

    @property
    def records(self) -> int:
        """Records in the local log so far (a checkpoint keeps it, to rewind to)."""
        return self.local.count

    def rewind(self, step: int, records: int) -> None:
        """Back to a checkpoint's global step and number of local records (what came after is logged again;
        W&B ignores steps it already has)."""
        self.step = step
        self.local.truncate(records)

    def log(self, kind: str, values: dict, step: int | None = None) -> None:
        """kind names the record (qat, qat-epoch, ...); W&B sees its keys as kind/key."""
        step = self.step if step is None else step
        self.local.write(kind, step, values)
        if self.wandb is not None:
            self.wandb.log({f"{kind}/{k}": v for k, v in values.items()}, step=step)

    def image(self, key: str, path: Path) -> None:
        self.local.write("image", self.step, {"key": key, "path": str(path)})
        if self.wandb is not None:
            self.wandb.image(key, path, self.step)

    def summary(self, values: dict) -> None:
        self.local.write("summary", self.step, values)
        if self.wandb is not None:
            self.wandb.summary(values)

    def artifact(self, path: Path, name: str) -> None:
        if self.wandb is not None:
            self.wandb.artifact(path, name)

    def close(self) -> None:
        self.local.close()
        if self.wandb is not None:
            self.wandb.close()


class NullRunLog(RunLog):
    """The log of ranks other than 0 under torchrun: counts steps, writes nothing."""

    def __init__(self, log_every: int = 10):
        self.step, self.log_every, self.wandb = 0, log_every, None

    def log(self, kind: str, values: dict, step: int | None = None) -> None:
        pass

    def image(self, key: str, path: Path) -> None:
        pass

    def summary(self, values: dict) -> None:
        pass

    @property
    def records(self) -> int:
        return 0

    def rewind(self, step: int, records: int) -> None:
        self.step = step

    def close(self) -> None:
        pass
