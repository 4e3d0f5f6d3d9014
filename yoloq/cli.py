"""Hydra entry points for scripts/: bad input becomes one line on stderr and exit code 2; a stop signal
(preemption) one line naming the checkpoint and exit code 143. Under torchrun the process group is joined
before Hydra starts, so that every rank agrees on the run folder."""

from __future__ import annotations

import datetime
import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from yoloq.config import CONF_DIR, check_group_overrides
from yoloq.engine import distributed
from yoloq.engine.preemption import EXIT_CODE, Preempted
from yoloq.errors import UserError


def _fail(e: UserError) -> None:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


def _override(args: list[str], key: str) -> str | None:
    values = [a.split("=", 1)[1] for a in args if a.split("=", 1)[0].lstrip("+") == key and "=" in a]
    return values[-1] if values else None


def _prepare_train(args: list[str]) -> tuple[list[str], Path | None]:
    """Overrides added before Hydra composes the config: the run folder a `resume=` names (returned too), the
    same time stamp for every torchrun rank, and no Hydra files from ranks other than 0."""
    from yoloq.engine.resume import resume_target
    from yoloq.engine.run_folder import lock_run_folder

    if _override(args, "resume") not in (None, "false") and any(a in ("-m", "--multirun") for a in args):
        raise UserError("resume= with a multirun (-m) is ambiguous: resume each run on its own with "
                        "resume=runs/<sweep>/<run>")
    distributed.init_from_env()
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    os.environ["YOLOQ_RUN_STAMP"] = distributed.broadcast_object(stamp)
    extra = []
    target = distributed.from_main(lambda: resume_target(_override(args, "resume"), _override(args, "run_dir")))
    if target is not None:
        extra.append(f"run_dir={target}")
    run_dir = target or _override(args, "run_dir")
    if run_dir and distributed.is_main() and not any(a in ("-m", "--multirun") for a in args):
        # before Hydra writes its .hydra/ files and log into the folder: a folder in use stays untouched
        lock_run_folder(Path(run_dir))
    if not distributed.is_main():
        extra += ["hydra.output_subdir=null", "hydra/job_logging=none"]
    return extra, target


MIXED_KEYS = ("search", "high", "low", "budget", "budget_bops")


def _mixed_key(arg: str) -> str:
    key, sep, value = arg.partition("=")
    if sep and (key in MIXED_KEYS or key.startswith("alps.") or (key == "bits" and value.startswith("["))):
        return f"mixed.{key}={value}"
    return arg


def _rerun_of_sweep(cfg, run_dir: Path) -> bool:
    """The same multirun again (e.g. after a stop): a finished run is skipped (True), an unfinished one continues
    from its checkpoints (resume), so a long grid completes by repeating its command."""
    from omegaconf import open_dict

    from yoloq.engine.resume import has_progress

    if (run_dir / "results.json").is_file():
        print(f"{run_dir}: finished before (results.json): skipped", flush=True)
        return True
    if has_progress(run_dir):
        print(f"{run_dir}: unfinished: continuing it", flush=True)
        with open_dict(cfg):
            cfg.resume = True
    return False


def hydra_entry(command: str) -> None:
    if command in ("eval", "export", "mixed") and not any(a.startswith("run_dir=") for a in sys.argv[1:]):
        sys.argv.append(f"run_dir=runs/{command}-${{now:%Y%m%d-%H%M%S}}")  # not named like a training run
    if command == "mixed":  # the search's own short keys (search=eagl budget=3 bits=[4,3,2]) live under mixed.
        sys.argv[1:] = [_mixed_key(a) for a in sys.argv[1:]]
    resumes = None  # the run folder that resume= continues
    try:
        check_group_overrides(sys.argv[1:])
        if command == "train" and not any(a in ("--help", "-h", "--hydra-help") for a in sys.argv[1:]):
            extra, resumes = _prepare_train(sys.argv[1:])
            sys.argv += extra
    except UserError as e:
        _fail(e)

    @hydra.main(config_path=str(CONF_DIR), config_name="config", version_base=None)
    def main(cfg) -> None:
        run_dir = HydraConfig.get().runtime.output_dir
        try:
            if command == "train":
                from yoloq.config import validate
                from yoloq.engine.resume import resumed_config

                if resumes is not None and (resumes / "config.yaml").is_file():
                    cfg = resumed_config(resumes / "config.yaml", list(HydraConfig.get().overrides.task), cfg)
                if HydraConfig.get().mode == RunMode.MULTIRUN and _rerun_of_sweep(cfg, Path(run_dir)):
                    return
                validate(cfg)  # bad input answered before the training code (ultralytics, ...) is imported
                from yoloq.engine.pipeline import train

                train(cfg, run_dir)
            elif command == "mixed":
                from yoloq.mixed.command import mixed_search

                mixed_search(cfg, run_dir)
            elif command == "export":
                from yoloq.config import validate_export
                from yoloq.export.command import export_checkpoint

                validate_export(cfg.export)
                export_checkpoint(cfg, run_dir)
            else:
                from yoloq.eval.checkpoint_eval import evaluate_checkpoint

                evaluate_checkpoint(cfg, run_dir)
        except UserError as e:
            _fail(e)
        except Preempted as e:
            where = e.checkpoint.parent if e.checkpoint else run_dir
            print(f"stopped: {e}; continue with the same command and resume={where}", file=sys.stderr)
            sys.exit(EXIT_CODE)

    try:
        main()
    finally:
        distributed.shutdown()


USAGE = """usage: yoloq <command> [arguments]

commands:
  train    train, quantize and evaluate a model (Hydra overrides: yoloq train model=yolov5n bits=3)
  eval     score a checkpoint with pycocotools (yoloq eval +checkpoint=runs/<run>/qat.pt, or +onnx=model.onnx)
  export   a quantized checkpoint as ONNX QDQ (yoloq export +checkpoint=runs/<run>/folded.pt)
  mixed    per-layer bit widths within a BOPs budget (yoloq mixed search=eagl high=4 low=2 budget=3)
  compare  tabulate finished runs (yoloq compare runs/<sweep>/*)
  convergence  the doubling test: runs of one recipe at several QAT lengths (yoloq convergence runs/*)
  scale-drift  how far QAT moved the quantization scales (yoloq scale-drift <calibrated>/qat.pt <run>/qat.pt)
  bench    speed and memory of fake-quantized training (yoloq bench --sections step)
  wandb-report  the method comparison as a W&B report (yoloq wandb-report --project yoloq --group <group>)

`yoloq <command> --help` tells more."""


def main(argv: list[str] | None = None) -> None:
    """The `yoloq` console command: the scripts' entry points under one name, as ultralytics' `yolo` is."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        sys.exit(0 if argv else 2)
    command, rest = argv[0], argv[1:]
    if command in ("train", "eval", "export", "mixed"):
        sys.argv = [f"yoloq-{command}", *rest]
        hydra_entry(command)
    elif command == "compare":
        from yoloq.report.command import main as compare

        compare(rest)
    elif command == "convergence":
        from yoloq.report.convergence import main as convergence

        sys.exit(convergence(rest))
    elif command == "scale-drift":
        from yoloq.report.scale_drift import main as scale_drift

        sys.exit(scale_drift(rest))
    elif command == "bench":
        from yoloq.bench.command import main as bench

        sys.exit(bench(rest))
    elif command == "wandb-report":
        from yoloq.report.wandb_report import main as wandb_report

        sys.exit(wandb_report(rest))
    else:
        print(f"error: unknown command {command!r}: use one of train, eval, export, mixed, compare, convergence, scale-drift, bench, wandb-report (yoloq --help)",
              file=sys.stderr)
        sys.exit(2)
