"""A per-layer precision plan: `layer_bits.yaml` maps module names to weight and activation bits under a
`layers:` key (what scripts/mixed_precision.py writes; the search's figures sit beside it). `quant.layer_bits`
takes such a file or the mapping itself; the run's config.yaml and checkpoints carry the mapping, so
evaluating, exporting or resuming a run needs no file next to it."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

import yaml

from yoloq.errors import UserError
from yoloq.quant.config import BITS_RANGE

Plan = dict[str, tuple[int, int]]  # module name -> (w_bits, a_bits)


def _bits(name: str, key: str, value) -> int:
    lo, hi = BITS_RANGE
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise UserError(f"quant.layer_bits: {name}: {key}={value!r} is out of range: use an integer from {lo} to {hi}")
    return value


def parse_plan(layers, source: str = "quant.layer_bits") -> Plan:
    """{name: (w_bits, a_bits)} from a `layers:` mapping of name -> {w_bits, a_bits}, checked."""
    if not isinstance(layers, Mapping) or not layers:
        raise UserError(f"{source} has no layers: give a mapping of module name -> {{w_bits: 4, a_bits: 4}} "
                        "under `layers:` (scripts/mixed_precision.py writes one)")
    plan = {}
    for name, bits in layers.items():
        if not isinstance(bits, Mapping) or set(bits) != {"w_bits", "a_bits"}:
            raise UserError(f"{source}: layer {name} needs exactly w_bits and a_bits, e.g. {{w_bits: 4, a_bits: 4}}")
        plan[str(name)] = (_bits(name, "w_bits", bits["w_bits"]), _bits(name, "a_bits", bits["a_bits"]))
    return plan


def read_plan(value) -> Plan | None:
    """quant.layer_bits as given: null, a path to layer_bits.yaml, or the `layers:` mapping (as config.yaml
    stores it after the run starts)."""
    if value is None or (isinstance(value, str) and value.lower() in ("", "null", "none")):
        return None
    if isinstance(value, str):
        path = Path(value).expanduser()
        if not path.is_file():
            raise UserError(f"quant.layer_bits={value} does not exist: give a layer_bits.yaml written by "
                            "scripts/mixed_precision.py, or leave quant.layer_bits out for uniform bits")
        try:
            doc = yaml.safe_load(path.read_text())
        except yaml.YAMLError as e:
            raise UserError(f"quant.layer_bits={value} is not valid YAML ({str(e).splitlines()[0]}): fix or "
                            "rewrite it with scripts/mixed_precision.py") from None
        if not isinstance(doc, Mapping) or "layers" not in doc:
            raise UserError(f"quant.layer_bits={value} has no `layers:` key: it is not a layer_bits.yaml")
        return parse_plan(doc["layers"], f"quant.layer_bits={value}")
    layers = value.get("layers", value) if isinstance(value, Mapping) else value
    return parse_plan(layers)


def as_layers(plan: Plan) -> dict:
    return {name: {"w_bits": w, "a_bits": a} for name, (w, a) in plan.items()}


def plan_digest(plan: Plan | None) -> str | None:
    """A short fingerprint of a plan: part of a run's identity, so resuming cannot switch plans."""
    if plan is None:
        return None
    return hashlib.sha256(json.dumps(sorted(plan.items())).encode()).hexdigest()[:12]


def check_names(plan: Plan, known: list[str]) -> None:
    unknown = [n for n in plan if n not in known]
    if unknown:
        raise UserError(f"quant.layer_bits names {len(unknown)} layer(s) this model has no quantizable conv for "
                        f"({', '.join(unknown[:3])}{', ...' if len(unknown) > 3 else ''}): use names such as "
                        f"{', '.join(known[1:3])} (scripts/mixed_precision.py lists them)")


def write_plan(path: Path, plan: Plan, **figures) -> None:
    """layer_bits.yaml: the figures of the search (BOPs, size, gain, ...) and the `layers:` mapping."""
    from yoloq.atomic import write_text_atomic

    doc = {**figures, "layers": as_layers(plan)}
    write_text_atomic(Path(path), yaml.safe_dump(doc, sort_keys=False))


def effective_bits(model, quant_cfg, plan: Plan | None, high_precision: list[str]) -> Plan:
    """(w_bits, a_bits) of every quantizable conv: the plan's, else the uniform rule (first/last layers)."""
    from yoloq.quant.prepare import quantizable_convs

    high = set(high_precision)
    return {name: (plan or {}).get(name) or quant_cfg.for_layer(name in high) for name in quantizable_convs(model)}


def checked_plan(cfg, model, high_precision: list[str]) -> Plan | None:
    """The run's plan (quant.layer_bits), checked against the float model: names it has, and one activation
    precision per group of layers that read the same tensor. None for uniform bits."""
    from yoloq.config import quant_config
    from yoloq.mixed.groups import check_shared_precision, shared_input_groups
    from yoloq.quant.prepare import quantizable_convs

    plan = read_plan(cfg.quant.get("layer_bits"))
    if plan is None:
        return None
    check_names(plan, list(quantizable_convs(model)))
    check_shared_precision(shared_input_groups(model), effective_bits(model, quant_config(cfg), plan, high_precision))
    return plan
