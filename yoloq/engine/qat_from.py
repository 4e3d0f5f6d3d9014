"""`qat_from=<run>`: take a finished run's QAT model instead of training one, so that later stages (QC and its
variants, soft rounding, the export) can be compared on one and the same QAT model (paper Table 7), at the cost
of a QC epoch instead of a whole run. The source must match this run's model, bits, quantizer layout, classes,
base method and seed; its QAT row is the source's, so reports count it once (report/compare.py)."""

from __future__ import annotations

from pathlib import Path

from yoloq.checkpoint import load_checkpoint
from yoloq.errors import UserError

HINT = "give qat_from=<a finished run folder> (its qat.pt), or leave qat_from out to train the QAT stage here"


def qat_checkpoint_path(value) -> Path | None:
    """The qat.pt that qat_from names (a run folder or the file itself), or None when unset."""
    if value in (None, "") or str(value).lower() in ("null", "none"):
        return None
    path = Path(str(value)).expanduser()
    return path / "qat.pt" if path.is_dir() else path


def _base(method: str) -> str:
    return str(method).removesuffix("_qc")  # a `_qc` method's QAT stage is its base method's


def check_source(ckpt: dict, identity: dict, seed: int, path: Path) -> None:
    """Refuse a QAT model that another configuration would have trained, naming the setting to change."""
    found = ckpt.get("identity")
    if found is None or "model" not in ckpt:
        raise UserError(f"qat_from: {path} is not a yoloq QAT checkpoint (no run identity): {HINT}")
    ours = {**identity, "method": _base(identity["method"])}
    theirs = {**found, "method": _base(found.get("method", ""))}
    diffs = [k for k in ours if theirs.get(k) != ours[k]]
    source_seed = (ckpt.get("config") or {}).get("seed")
    if source_seed is not None and source_seed != seed:
        diffs.append("seed")
        theirs["seed"], ours["seed"] = source_seed, seed
    if diffs:
        raise UserError(f"qat_from: {path} was trained with " + " ".join(f"{k}={theirs.get(k)}" for k in diffs)
                        + ", this run has " + " ".join(f"{k}={ours[k]}" for k in diffs)
                        + ": set them as the source had them, or train the QAT stage here (no qat_from)")


def load_source(value, identity: dict, seed: int) -> tuple[dict, Path] | None:
    """The source run's final QAT checkpoint, checked against this run; None when qat_from is unset."""
    path = qat_checkpoint_path(value)
    if path is None:
        return None
    if not path.is_file():
        raise UserError(f"qat_from={value}: {path} does not exist (the run has not finished its QAT stage?): {HINT}")
    ckpt = load_checkpoint(path, HINT)
    check_source(ckpt, identity, seed, path)
    return ckpt, path
