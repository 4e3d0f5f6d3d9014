"""W&B for `logger=wandb`: offline unless the user has W&B set up online, and never a hang, a prompt or a
failure for lack of network (an online start that fails falls back to an offline run, synced later with
`wandb sync <run>/wandb/offline-run-*`)."""

from __future__ import annotations

import logging
import netrc
import os
from pathlib import Path
from urllib.parse import urlparse

log = logging.getLogger("yoloq")


def has_api_key() -> bool:
    """A key in WANDB_API_KEY or in ~/.netrc (where `wandb login` puts it)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc().authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def resolve_mode(mode: str) -> str:
    """auto: WANDB_MODE if the user set it, else online only with an API key (no key: offline, no prompt)."""
    if mode != "auto":
        return mode
    env = os.environ.get("WANDB_MODE")
    if env in ("online", "offline", "disabled"):
        return env if env != "online" or has_api_key() else "offline"
    return "online" if has_api_key() else "offline"


class WandbLog:
    def __init__(self, run_dir: Path, project: str, entity: str | None, group: str, name: str, tags: list[str],
                 config: dict, mode: str = "auto", init_timeout: float = 60.0, run_id: str | None = None):
        import wandb

        self.wandb = wandb
        self.mode = resolve_mode(mode)
        kwargs = dict(project=project, entity=entity, group=group, name=name, tags=tags, config=config,
                      id=run_id, resume="allow" if run_id else None,
                      dir=str(run_dir), settings=wandb.Settings(silent=True, console="off",
                                                                init_timeout=init_timeout))
        try:
            self.run = wandb.init(mode=self.mode, **kwargs)
        except Exception as e:  # noqa: BLE001 - any failure to reach W&B must not cost the training run
            if self.mode != "online":
                raise
            log.warning("W&B: could not start an online run (%s); logging offline instead", str(e).splitlines()[0])
            self.mode = "offline"
            wandb.teardown()  # the failed online start's service and stream go first
            self.run = wandb.init(mode="offline", **kwargs)
        log.info("W&B: %s run %s in %s", self.mode, self.run.id, self.run.dir)

    def log(self, values: dict, step: int) -> None:
        self.run.log(values, step=step)

    def image(self, key: str, path: Path, step: int) -> None:
        self.run.log({key: self.wandb.Image(str(path))}, step=step)

    def summary(self, values: dict) -> None:
        self.run.summary.update(values)

    def artifact(self, path: Path, name: str, kind: str = "model") -> None:
        art = self.wandb.Artifact(name, type=kind)
        art.add_file(str(path))
        self.run.log_artifact(art)

    def close(self) -> None:
        """finish() can return before W&B's writer has flushed the last rows (seen after an offline fallback);
        teardown() waits for the W&B service to exit, so every row logged is on disk when the run ends."""
        self.run.finish()
        self.wandb.teardown()
