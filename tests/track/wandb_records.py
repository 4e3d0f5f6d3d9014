"""Read an offline W&B run back (tests only): wandb no longer ships a Python reader for its .wandb files.
The file is a 7-byte header (":W&B", magic, version) and then LevelDB-log-style chunks in 32 KiB blocks
(4-byte checksum, 2-byte length, 1-byte type: 1 full, 2 first, 3 middle, 4 last) of protobuf Records."""

from __future__ import annotations

import json
from pathlib import Path

from wandb.proto import wandb_internal_pb2 as pb

BLOCK = 32768
HEADER = 7


def records(path: Path):
    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    pos, chunks = HEADER, []
    while pos + HEADER <= len(data):
        if BLOCK - pos % BLOCK < HEADER:  # a block's tail too short for a chunk header is padding
            pos += BLOCK - pos % BLOCK
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        chunks.append(data[pos + HEADER:pos + HEADER + length])
        pos += HEADER + length
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(b"".join(chunks))
            chunks = []
            yield record


def read_offline_run(run_dir: Path) -> dict:
    """{'group', 'tags', 'project', 'history': [row dicts], 'summary': {key: value}, 'artifacts'} of the
    one offline run in run_dir."""
    files = list(Path(run_dir).glob("wandb/offline-run-*/run-*.wandb"))
    assert len(files) == 1, files
    out = {"history": [], "summary": {}, "artifacts": []}
    for r in records(files[0]):
        kind = r.WhichOneof("record_type")
        if kind == "run":
            out.update(group=r.run.run_group, tags=list(r.run.tags), project=r.run.project)
        elif kind == "history":
            out["history"].append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item})
        elif kind == "artifact":
            out["artifacts"].append({"name": r.artifact.name, "type": r.artifact.type,
                                     "files": [e.path for e in r.artifact.manifest.contents]})
        elif kind == "summary":
            out["summary"].update({i.key: json.loads(i.value_json) for i in r.summary.update if i.key})
    return out
