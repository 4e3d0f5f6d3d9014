"""Building ultralytics YOLO models from their YAMLs and loading ultralytics checkpoints into them."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import torch
from torch import nn
from ultralytics.cfg import get_cfg
from ultralytics.nn.modules.head import Detect, Segment
from ultralytics.nn.tasks import DetectionModel, SegmentationModel
from ultralytics.utils import DEFAULT_CFG
from ultralytics.utils.torch_utils import intersect_dicts

from yoloq.errors import UserError

YAML_DIR = Path(__file__).resolve().parent / "yaml"  # our model YAMLs (YOLOv7, YOLOv5-seg)


def hyperparameters(**overrides):
    """ultralytics' default hyperparameters (loss gains, augmentation) with our overrides."""
    return get_cfg(DEFAULT_CFG, overrides)


TASKS = {"detect": DetectionModel, "segment": SegmentationModel}


def our_yaml_file(yaml_name: str) -> Path | None:
    """The file of one of our YAMLs, or None for ultralytics' own. yolov5n-seg.yaml is yolov5-seg.yaml at
    scale n, the way ultralytics reads its yolov5n.yaml."""
    unscaled = re.sub(r"(\d+)([nslmx])(.+)?$", r"\1\3", Path(yaml_name).stem) + ".yaml"
    for name in (yaml_name, unscaled):
        if (YAML_DIR / name).is_file():
            return YAML_DIR / name
    return None


def model_yaml(yaml_name: str) -> str:
    """What ultralytics is given: the path in our YAML folder (it finds the scale from the name) or the name."""
    return str(YAML_DIR / yaml_name) if our_yaml_file(yaml_name) else yaml_name


def build_model(yaml_name: str, names: tuple[str, ...], hyp=None, task: str = "detect") -> DetectionModel:
    """An untrained model with `nc = len(names)`; its `args` carry the loss gains ultralytics' loss reads."""
    if task not in TASKS:
        raise UserError(f"model.task={task} is unknown: use detect or segment")
    with contextlib.redirect_stdout(io.StringIO()):  # the YAML parser prints a layer table
        model = TASKS[task](model_yaml(yaml_name), nc=len(names), verbose=False)
    if isinstance(model.model[-1], Segment) != (task == "segment"):
        raise UserError(f"model.task={task} does not fit {yaml_name}, whose head is {type(model.model[-1]).__name__}: "
                        "use model=yolov5n-seg (or another -seg model) for segmentation, and task=detect otherwise")
    model.names = dict(enumerate(names))
    model.args = hyp if hyp is not None else hyperparameters()
    return model


def _read_ultralytics(path: Path):
    """ultralytics' own loader in its restricted mode: `torch.load(weights_only=True)` with an allow-list of
    ultralytics' and torch's model classes, so a file crafted to run code when unpickled is refused, not run."""
    from ultralytics.nn.tasks import torch_safe_load

    try:
        with contextlib.redirect_stdout(io.StringIO()):
            ckpt, _ = torch_safe_load(str(path), safe_only=True)
    except Exception as e:  # noqa: BLE001 - ultralytics raises TypeError, ModuleNotFoundError, UnpicklingError, ...
        reason = str(e).replace("ERROR ❌️ ", "").strip().splitlines()[0][:160] if str(e) else type(e).__name__
        raise UserError(f"model.weights={path} was refused by ultralytics' safe loader ({reason}): give an "
                        "ultralytics .pt file (e.g. one saved by `yolo train`)") from None
    return ckpt


def _checkpoint_state(path: Path) -> dict[str, torch.Tensor]:
    """The float state dict inside an ultralytics checkpoint (EMA weights preferred, as ultralytics does)."""
    if not path.is_file():
        raise UserError(f"model.weights={path} does not exist: give the path of an ultralytics .pt checkpoint")
    if path.suffix != ".pt":
        raise UserError(f"model.weights={path} is not a .pt file: give an ultralytics .pt checkpoint")
    ckpt = _read_ultralytics(path)
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
    """The paper's first and last layers: the stem conv and the head's final prediction convs (boxes, classes,
    and for segmentation the mask coefficients and the prototypes' output conv)."""
    names = {id(m): n for n, m in model.named_modules()}
    first = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    head = detect_head(model)
    last = [branch[-1] for heads in head.one2many.values() for branch in heads]
    if isinstance(head, Segment):
        last.append(head.proto.cv3.conv)
    return [names[id(first)]] + [names[id(m)] for m in last]
