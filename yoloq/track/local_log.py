"""The always-on local log: one JSON object per line in <run>/metrics.jsonl, readable without W&B."""

from __future__ import annotations

import json
import math
from pathlib import Path


def _plain(v):
    """JSON has no NaN/inf: write them as null, like results.json does."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


class JsonlLog:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.count = len(self.path.read_text().splitlines()) if self.path.is_file() else 0  # records so far
        self._file = open(self.path, "a", buffering=1)  # line-buffered: a killed run keeps what it logged

    def write(self, kind: str, step: int, values: dict) -> None:
        record = {"kind": kind, "step": step, **{k: _plain(v) for k, v in values.items()}}
        self._file.write(json.dumps(record) + "\n")
        self.count += 1

    def truncate(self, count: int) -> None:
        """Keep the first `count` records: a resumed run drops what it logged after its checkpoint (it will log
        those steps again)."""
        self._file.close()
        lines = self.path.read_text().splitlines(keepends=True)[:count]
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text("".join(lines))
        tmp.replace(self.path)
        self.count = len(lines)
        self._file = open(self.path, "a", buffering=1)

    def close(self) -> None:
        self._file.close()


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
