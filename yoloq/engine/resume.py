"""Which run `resume=` continues, and whether a checkpoint belongs to this run's model and bit widths.

A run folder holds, per stage, `<stage>-last.pt` while the stage trains (the trainer's whole state, rewritten
atomically after every epoch and on a stop signal) and the stage's final checkpoint when it is done
(`qat.pt`, `qc.pt`, ...). Resuming skips finished stages and continues the unfinished one."""

from __future__ import annotations

from pathlib import Path

from yoloq.errors import UserError
from yoloq.mixed.plan import plan_digest, read_plan

STATE_FORMAT = "yoloq-stage-state"
STATE_VERSION = 2  # 2: compact oscillation state (6 bytes a weight), derived previous integers
IDENTITY_HINT = {"model": "model", "task": "model", "w_bits": "w_bits", "a_bits": "a_bits",
                 "per_channel": "quant.per_channel", "first_last_bits": "quant.first_last_bits",
                 "method": "method", "classes": "data", "layer_bits": "quant.layer_bits"}


def run_identity(cfg, names) -> dict:
    """What a checkpoint must agree on to be continued by this configuration."""
    return {"model": str(cfg.model.name), "task": str(cfg.model.get("task", "detect")), "w_bits": int(cfg.w_bits),
            "a_bits": int(cfg.a_bits), "per_channel": bool(cfg.quant.per_channel),
            "first_last_bits": cfg.quant.first_last_bits, "method": str(cfg.method.name), "classes": len(names),
            "layer_bits": plan_digest(read_plan(cfg.quant.get("layer_bits")))}


def check_identity(found: dict | None, expected: dict, path: Path) -> None:
    """Refuse a checkpoint of another model, bit width, method or class count, naming the setting to change."""
    if found is None:
        raise UserError(f"{path} is not a yoloq training checkpoint (no run identity): resume from a run folder "
                        "written by scripts/train.py, or start without resume")
    diffs = [k for k in expected if found.get(k) != expected[k]]
    if diffs:
        theirs = " ".join(f"{IDENTITY_HINT[k]}={found.get(k)}" for k in diffs)
        ours = " ".join(f"{IDENTITY_HINT[k]}={expected[k]}" for k in diffs)
        raise UserError(f"checkpoint {path} is of another run ({theirs}) than this one ({ours}): resume with "
                        f"{theirs}, or start a new run without resume")


def state_path(run_dir: Path, stage: str) -> Path:
    return Path(run_dir) / f"{stage}-last.pt"


def has_progress(run_dir: Path) -> bool:
    """Holds work to continue (a stage's state or final checkpoint, or results): fp.pt alone is not."""
    return any((run_dir / name).exists() for name in ("results.json", "qat.pt", "qc.pt")) or any(
        run_dir.glob("*-last.pt"))


def is_run_dir(path: Path) -> bool:
    return (path / "config.yaml").is_file() and any(path.glob("*.pt"))


def latest_run(runs_root: Path) -> Path | None:
    """The most recently changed run folder under runs_root (multirun folders included, one level down)."""
    candidates = [p for p in list(runs_root.glob("*")) + list(runs_root.glob("*/*")) if p.is_dir() and is_run_dir(p)]
    # an unfinished run before a finished one, then the most recent
    return max(candidates, key=lambda p: (not (p / "results.json").is_file(),
                                          max(f.stat().st_mtime for f in p.iterdir())), default=None)


def resume_target(resume, run_dir_given: str | None, runs_root: Path = Path("runs")) -> Path | None:
    """The run folder `resume=` names: None (a fresh run), the given run_dir (resume=true with run_dir=...; fresh
    if nothing is there yet, so a requeued cluster job can always pass resume=true), the latest run
    (resume=true), or a folder or a checkpoint inside it (resume=PATH)."""
    if resume in (None, False) or str(resume).lower() in ("false", "none", "null", ""):
        return None
    if resume is True or str(resume).lower() == "true":
        if run_dir_given:
            return Path(run_dir_given)
        found = latest_run(runs_root)
        if found is None:
            raise UserError(f"resume=true but there is no run folder with checkpoints under {runs_root}/: start "
                            "without resume, or give resume=PATH")
        return found
    path = Path(str(resume)).expanduser()
    if path.is_file():
        path = path.parent
    if not path.is_dir():
        raise UserError(f"resume={resume} does not exist: give a run folder (e.g. runs/<run>) or one of its .pt files")
    if not is_run_dir(path):
        raise UserError(f"resume={resume} is not a run folder with checkpoints (config.yaml and *.pt): give the "
                        "folder of a run that scripts/train.py started")
    return path


IDENTITY_KEYS = ("bits", "w_bits", "a_bits", "quant.w_bits", "quant.a_bits", "quant.per_channel",
                 "quant.first_last_bits")
GROUP_NAMES = {"model": "model.name", "method": "method.name", "data": "data.name"}
DEFAULT_CHOICES = {"trainer": "default", "logger": "local", "experiment": "null"}


def _original_choice(run_dir: Path, group: str) -> str:
    """The run's choice for a config group: from the overrides Hydra recorded, else the default."""
    import yaml

    recorded = run_dir / ".hydra" / "overrides.yaml"
    overrides = yaml.safe_load(recorded.read_text()) if recorded.is_file() else []
    chosen = [o.split("=", 1)[1] for o in overrides or [] if o.split("=", 1)[0].lstrip("+") == group]
    return chosen[-1] if chosen else DEFAULT_CHOICES[group]


def resumed_config(config_file: Path, overrides: list[str], composed):
    """A resumed run's config: the run's own (config.yaml), with the command line's other settings (their values
    as Hydra composed them) on top, so `resume=PATH` alone continues the run as it was started and e.g.
    `trainer.qat.lr0=...` can still change. What decides the checkpoint (model, method, data, bits, config
    groups) cannot change: refused by name."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(config_file)
    for arg in overrides:
        key, _, value = arg.lstrip("+~").partition("=")
        if key == "run_dir" or key.startswith("hydra"):
            continue
        if key in GROUP_NAMES or key in DEFAULT_CHOICES:
            ours = (OmegaConf.select(cfg, GROUP_NAMES[key]) if key in GROUP_NAMES
                    else _original_choice(Path(config_file).parent, key))
            if value != str(ours):
                raise UserError(f"{key}={value} differs from the resumed run's {key} ({ours}): a run keeps its {key}; "
                                f"drop {key}={value}, or start a new run without resume")
            continue
        new = OmegaConf.select(composed, key)
        if key in IDENTITY_KEYS and OmegaConf.select(cfg, key) != new:
            raise UserError(f"{key}={value} differs from the resumed run's {key}={OmegaConf.select(cfg, key)}: a "
                            f"checkpoint continues at its own bit widths; drop {key}=, or start a new run")
        OmegaConf.update(cfg, key, new, force_add=True)
    return cfg
