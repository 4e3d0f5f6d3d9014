"""The records a report was built from, kept beside it. Runs live on the machine that trained them, and a fresh
machine (a new CI worker, a colleague's clone, the next session here) has none of them: a report committed under
docs/compare/ could then be neither rebuilt nor extended with another seed. So each report keeps, under its
folder's `runs/`, the small files it read of each run: config.yaml, results.json and the per-epoch lines of
metrics.jsonl (the per-step training losses and the checkpoints, which no report reads, stay behind). Those record
folders are run folders to every report, so

    python scripts/convergence.py docs/compare/<report>/runs/* <new runs> --out docs/compare/<report>

rebuilds the report with new runs added. Runs already inside the report's folder (a multirun's own report, or the
records themselves) are not copied again."""

from __future__ import annotations

import json
from pathlib import Path

from yoloq.atomic import write_json_atomic, write_text_atomic
from yoloq.errors import UserError

RECORD_FILES = ("config.yaml", "results.json")  # copied whole
ORIGIN = "record.json"  # where a record came from: a run copied twice refreshes one record instead of adding two


def epoch_lines(text: str) -> str:
    """The lines of a metrics.jsonl that reports read: per-epoch summaries and evaluations (kind `*-epoch`)."""
    kept = []
    for line in text.splitlines():
        try:
            row = json.loads(line) if line.strip() else {}
        except json.JSONDecodeError:  # a line cut short by a killed run
            continue
        if str(row.get("kind", "")).endswith("-epoch"):
            kept.append(line + "\n")
    return "".join(kept)


def _inside(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve())


def _origin(record: Path) -> str | None:
    try:
        return json.loads((record / ORIGIN).read_text()).get("from")
    except (OSError, ValueError, AttributeError):
        return None


def _place(run: Path, runs: Path) -> Path:
    """The record folder of `run`: its own from an earlier copy, else a free name (sweeps repeat their job names,
    so a taken name gets the sweep's name in front, then a number)."""
    origin = str(run.resolve())
    candidates = [run.name, f"{run.parent.name}-{run.name}"] + [f"{run.parent.name}-{run.name}-{i}" for i in range(2, 1000)]
    for name in candidates:
        record = runs / name
        if not record.exists() or _origin(record) == origin:
            return record
    raise UserError(f"no free record name for {run} in {runs}: rename the run folder, or delete old records there")


def keep_records(run_dirs: list[Path], out: Path) -> list[Path]:
    """Copy the record of each finished run among `run_dirs` (not already inside `out`) to `out/runs/`; returns
    the record folders written."""
    runs = Path(out) / "runs"
    written = []
    for run in map(Path, run_dirs):
        if not (run / "results.json").is_file() or _inside(run, Path(out)):
            continue
        record = _place(run, runs)
        for name in RECORD_FILES:
            if (run / name).is_file():
                write_text_atomic(record / name, (run / name).read_text())
        if (run / "metrics.jsonl").is_file():
            write_text_atomic(record / "metrics.jsonl", epoch_lines((run / "metrics.jsonl").read_text()))
        write_json_atomic(record / ORIGIN, {"from": str(run.resolve())})
        written.append(record)
    if written:
        print(f"kept the records of {len(written)} runs in {runs} (rebuild or extend the report from {runs}/*)")
    given = {Path(r).resolve() for r in run_dirs} | {r.resolve() for r in written}
    left_out = sorted(r.name for r in runs.iterdir() if r.is_dir() and r.resolve() not in given) if runs.is_dir() else []
    if left_out:  # they stay (they may be the only copy), but this report was not built from them
        print(f"note: {len(left_out)} records in {runs} are not in this report: {', '.join(left_out)} (pass them "
              "too, or delete them)")
    return written
