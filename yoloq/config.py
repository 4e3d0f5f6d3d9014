"""Validate the composed config once, up front, with one clear message per mistake."""

from __future__ import annotations

from pathlib import Path

import torch

from yoloq.errors import UserError
from yoloq.quant import QuantConfig, QuantConfigError

CONF_DIR = Path(__file__).resolve().parent / "conf"  # shipped in the package: installs of any kind find it
GROUPS = ("model", "data", "trainer", "method", "logger", "experiment", "qc_variant")
OPTIMIZERS = ("sgd", "adamw")
WANDB_MODES = ("auto", "online", "offline", "disabled")


def group_choices(group: str, conf_dir: Path = CONF_DIR) -> list[str]:
    return sorted(p.stem for p in (conf_dir / group).glob("*.yaml"))


def check_group_overrides(overrides: list[str], conf_dir: Path = CONF_DIR) -> None:
    """Catch `model=yolov9` before Hydra does, so the user gets one line listing the choices."""
    for arg in overrides:
        key, sep, value = arg.lstrip("+~").partition("=")
        if not sep or key not in GROUPS:
            continue
        choices = group_choices(key, conf_dir)
        for choice in value.split(","):  # multirun: method=lsq,ema
            if choice not in choices:
                raise UserError(f"unknown {key} {choice!r}: choose one of {', '.join(choices)}")


def _bits(cfg, key: str) -> int:
    value = cfg[key]
    if isinstance(value, bool) or not isinstance(value, int) or not 2 <= value <= 8:
        raise UserError(f"{key}={value} is out of range: use an integer from 2 to 8 (e.g. {key}=4)")
    return value


def quant_config(cfg) -> QuantConfig:
    q = cfg.quant
    try:
        return QuantConfig(w_bits=q.w_bits, a_bits=q.a_bits, per_channel=q.per_channel, act_signed=q.act_signed,
                           act_asymmetric=q.act_asymmetric, act_zero_point=q.get("act_zero_point", "float"),
                           first_last_bits=q.first_last_bits,
                           scale_init=q.scale_init, input_grid=q.get("input_grid", True))
    except QuantConfigError as e:
        raise UserError(str(e)) from None


def qat_batch(cfg) -> int:
    """The QAT stage's global batch: trainer.qat.batch, or trainer.batch when unset."""
    return int(cfg.trainer.qat.get("batch") or cfg.trainer.batch)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"device={name} is not a device: use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device={name} but no CUDA GPU is visible: use device=cpu (or auto)")
    return device


def _validate_method(m) -> None:
    for part in ("ema", "dampen", "freeze", "qc"):
        if not isinstance(m[part].enabled, bool):
            raise UserError(f"method.{part}.enabled={m[part].enabled} must be true or false")
    decay, tau = m.ema.get("decay"), m.ema.get("tau")
    if decay is not None and not 0 < decay < 1:
        raise UserError(f"method.ema.decay={decay} must be in (0, 1), e.g. 0.9999, or null to derive it from "
                        "method.ema.horizon")
    if tau is not None and not tau > 0:
        raise UserError(f"method.ema.tau={tau} must be positive (optimizer steps), or null to derive it from "
                        "method.ema.ramp")
    for key in ("horizon", "ramp"):
        if not 0 < m.ema[key] <= 1:
            raise UserError(f"method.ema.{key}={m.ema[key]} must be a share of the stage's steps in (0, 1], "
                            "e.g. 0.054")
    if not 0 < m.track.momentum <= 1:
        raise UserError(f"method.track.momentum={m.track.momentum} must be in (0, 1], e.g. 0.01")
    if "4" not in {str(k) for k in m.freeze.threshold_final}:
        raise UserError("method.freeze.threshold_final needs an entry for 4 bits (used for other bits too)")
    if not (m.qc.scale or m.qc.shift):
        raise UserError("method.qc.scale and method.qc.shift are both false: QC would learn nothing; enable one")


def _validate_logger(lg) -> None:
    if not isinstance(lg.log_every, int) or lg.log_every < 1:
        raise UserError(f"logger.log_every={lg.log_every} must be a positive integer (optimizer steps), e.g. 10")
    if lg.wandb is not None and lg.wandb.mode not in WANDB_MODES:
        raise UserError(f"logger.wandb.mode={lg.wandb.mode} is unknown: use one of {', '.join(WANDB_MODES)}")


def validate_export(e) -> None:
    for key in ("onnx", "int4", "tensorrt", "layer_check"):
        if not isinstance(e.get(key, False), bool):
            raise UserError(f"export.{key}={e[key]} must be true or false")
    if isinstance(e.opset, bool) or not isinstance(e.opset, int) or not 13 <= e.opset <= 20:
        raise UserError(f"export.opset={e.opset} is out of range: use an integer from 13 (per-channel QDQ) to 20 "
                        "(export.int4=true writes opset 21 itself)")


def _bn_refresh(key: str, n, zero_means: str) -> None:
    """A BatchNorm re-estimate's length (trainer.qat.bn_refresh, eval.bn_refresh): whole training batches >= 0."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise UserError(f"{key}={n} must be a whole number of training batches >= 0, e.g. 125 (0: {zero_means})")


def validate(cfg) -> None:
    """Raise UserError for the first mistake found in a composed config."""
    for key in ("bits", "w_bits", "a_bits"):
        _bits(cfg, key)
    quant_config(cfg)
    from yoloq.mixed.plan import read_plan

    read_plan(cfg.quant.get("layer_bits"))  # the file and its bit widths; the layer names once the model is built
    task = cfg.model.get("task", "detect")
    if task not in ("detect", "segment"):
        raise UserError(f"model.task={task} is unknown: use detect or segment (a -seg model)")
    if cfg.model.weights and not Path(str(cfg.model.weights)).expanduser().is_file():
        raise UserError(f"model.weights={cfg.model.weights} does not exist: give the path of an ultralytics .pt "
                        "checkpoint, or leave it out to train the FP model here")
    t = cfg.trainer
    if not isinstance(t.batch, int) or t.batch < 1:
        raise UserError(f"trainer.batch={t.batch} must be a positive integer")
    qb = t.qat.get("batch")
    if qb is not None and (isinstance(qb, bool) or not isinstance(qb, int) or qb < 1):
        raise UserError(f"trainer.qat.batch={qb} must be a positive integer, or null for trainer.batch")
    kd = t.qat.get("distill", 0.0)
    if isinstance(kd, bool) or not isinstance(kd, (int, float)) or not 0 <= kd < float("inf"):
        raise UserError(f"trainer.qat.distill={kd} must be a number >= 0 (the distillation weight; 0 is off), e.g. 1.0")
    _bn_refresh("trainer.qat.bn_refresh", t.qat.get("bn_refresh", 0), "keep the BatchNorm statistics training left")
    threads = t.get("threads")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise UserError(f"trainer.threads={threads} must be a positive integer, or null for the CPUs this process may use")
    if not isinstance(t.get("adapt_threads", True), bool):
        raise UserError(f"trainer.adapt_threads={t.adapt_threads} must be true or false")
    for stage in ("fp", "qat"):
        if not isinstance(t[stage].epochs, int) or t[stage].epochs < 0:
            raise UserError(f"trainer.{stage}.epochs={t[stage].epochs} must be an integer >= 0")
        if t[stage].optimizer not in OPTIMIZERS:
            raise UserError(f"trainer.{stage}.optimizer={t[stage].optimizer} is unknown: use one of "
                            f"{', '.join(OPTIMIZERS)}")
    _validate_method(cfg.method)
    validate_export(cfg.export)
    qc = t.qc
    if not 0 < qc.fraction <= 1:
        raise UserError(f"trainer.qc.fraction={qc.fraction} must be in (0, 1], e.g. 0.25")
    if not isinstance(qc.epochs, int) or qc.epochs < 1:
        raise UserError(f"trainer.qc.epochs={qc.epochs} must be an integer >= 1")
    k = cfg.eval.get("soft_round")
    if k is not None and (isinstance(k, bool) or not isinstance(k, (int, float)) or not 0 < k < 0.5):
        raise UserError(f"eval.soft_round={k} must be a number in (0, 0.5), e.g. 0.45 (or null to skip)")
    _bn_refresh("eval.bn_refresh", cfg.eval.get("bn_refresh", 0), "keep the saved BatchNorm statistics")
    if not isinstance(cfg.data.imgsz, int) or cfg.data.imgsz < 32 or cfg.data.imgsz % 32:
        raise UserError(f"data.imgsz={cfg.data.imgsz} must be a multiple of 32 (the model's stride), e.g. 256")
    if cfg.data.name == "coco" and not cfg.data.root:
        raise UserError("data=coco needs data.root: add data.root=/path/to/coco (with annotations/ and val2017/)")
    _validate_logger(cfg.logger)
    resolve_device(str(cfg.device))
