"""Building ultralytics YOLO models from their YAMLs and loading ultralytics checkpoints into them."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import torch
from torch import nn
from ultralytics.cfg import get_cfg
from ultralytics.nn.modules.head import Detect
from ultralytics.nn.tasks import DetectionModel
from ultralytics.utils import DEFAULT_CFG
from ultralytics.utils.torch_utils import intersect_dicts

from yoloq.errors import UserError

YAML_DIR = Path(__file__).resolve().parent / "yaml"  # our model YAMLs (YOLOv7, YOLOv5-seg)


def hyperparameters(**overrides):
    """ultralytics' default hyperparameters (loss gains, augmentation) with our overrides."""
    return get_cfg(DEFAULT_CFG, overrides)


def model_yaml(yaml_name: str) -> str:
    """One of our YAMLs by name, else the name itself (an ultralytics YAML, or a path)."""
    ours = YAML_DIR / yaml_name
    return str(ours) if ours.is_file() else yaml_name


def build_model(yaml_name: str, names: tuple[str, ...], hyp=None) -> DetectionModel:
    """An untrained model with `nc = len(names)`; its `args` carry the loss gains ultralytics' loss reads."""
    with contextlib.redirect_stdout(io.StringIO()):  # the YAML parser prints a layer table
        model = DetectionModel(model_yaml(yaml_name), nc=len(names), verbose=False)
    model.names = dict(enumerate(names))
    model.args = hyp if hyp is not None else hyperparameters()
    return model


def _checkpoint_state(path: Path) -> dict[str, torch.Tensor]:
    """The float state dict inside an ultralytics checkpoint (EMA weights preferred, as ultralytics does)."""
    if not path.is_file():
        raise UserError(f"model.weights={path} does not exist: give the path of an ultralytics .pt checkpoint")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # torch raises many types for a file that is not a checkpoint
        raise UserError(f"model.weights={path} is not a readable PyTorch checkpoint ({e.__class__.__name__}): "
                        "give an ultralytics .pt file (e.g. one saved by `yolo train`)") from None
    module = (ckpt.get("ema") or ckpt.get("model")) if isinstance(ckpt, dict) else ckpt
    if isinstance(module, nn.Module):
        return {k: v.float() if v.is_floating_point() else v for k, v in module.state_dict().items()}
    if isinstance(ckpt, dict) and isinstance(ckpt.get("state_dict"), dict):
        return ckpt["state_dict"]
    raise UserError(f"model.weights={path} holds no model: expected an ultralytics checkpoint with a 'model' entry")


def load_weights(model: nn.Module, path: str | Path) -> tuple[int, int]:
    """Copy every tensor whose name and shape match (a different `nc` leaves the class convs untrained).

    Returns (transferred, total) tensor counts; no matching tensor at all is an error, since that means
    the checkpoint belongs to another architecture.
    """
    path = Path(path).expanduser()
    source = _checkpoint_state(path)
    target = model.state_dict()
    matched = intersect_dicts(source, target)
    if not matched:
        raise UserError(f"model.weights={path} does not fit this model (no layer matches): "
                        "use a checkpoint of the same architecture as model=")
    model.load_state_dict(matched, strict=False)
    return len(matched), len(target)


def detect_head(model: nn.Module) -> Detect:
    head = model.model[-1]
    if not isinstance(head, Detect):
        raise TypeError(f"expected a Detect head as the last layer, found {type(head).__name__}")
    return head


def high_precision_layers(model: nn.Module) -> list[str]:
    """The paper's first and last layers: the stem conv and the head's final prediction convs."""
    names = {id(m): n for n, m in model.named_modules()}
    first = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    head = detect_head(model)
    last = [branch[-1] for heads in head.one2many.values() for branch in heads]
    return [names[id(first)]] + [names[id(m)] for m in last]
