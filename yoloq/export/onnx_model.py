"""An exported model run by onnxruntime, behind the interface of an eval-mode yoloq model, so that the same
pycocotools evaluation (eval/coco_eval.py) and output comparisons score it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

import yoloq
from yoloq.errors import UserError
from yoloq.export.onnx_export import FORMAT, INPUT


def read_metadata(path: str | Path) -> dict:
    """model.onnx's yoloq metadata, or one line naming the file and what is wrong with it: missing, damaged,
    not exported by yoloq, or exported by another yoloq version."""
    import onnx

    path = Path(path)
    hint = "export it with this yoloq version: python scripts/export.py +checkpoint=runs/<run>/folded.pt"
    if not path.is_file():
        raise UserError(f"ONNX model {path} does not exist: {hint}")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # noqa: BLE001 - protobuf raises several types for a torn or foreign file
        raise UserError(f"ONNX model {path} cannot be read ({type(e).__name__}): it is damaged or not an ONNX "
                        f"file; {hint}") from None
    props = {p.key: p.value for p in proto.metadata_props}
    try:
        meta = json.loads(props.get("yoloq", ""))
    except ValueError:
        meta = None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise UserError(f"ONNX model {path} was not exported by yoloq (no yoloq metadata): {hint}") from None
    if meta.get("yoloq_version") != yoloq.__version__:
        raise UserError(f"ONNX model {path} was exported by yoloq {meta.get('yoloq_version')}, this is yoloq "
                        f"{yoloq.__version__}: {hint}, or evaluate it with the version that wrote it")
    return meta


def providers(device: torch.device | str) -> list[str]:
    """CUDA's execution provider where the device is a GPU and onnxruntime-gpu is installed, else the CPU's."""
    import onnxruntime as ort

    if torch.device(device).type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class OnnxModel(nn.Module):
    """forward(images) -> what an eval-mode ultralytics model returns: (decoded, None) for detection,
    ((decoded, prototypes), None) for segmentation, as torch tensors on the input's device."""

    def __init__(self, path: str | Path, device: torch.device | str = "cpu", threads: int | None = None):
        super().__init__()
        import onnxruntime as ort

        self.meta = read_metadata(path)
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers(device))
        except Exception as e:  # noqa: BLE001 - onnxruntime reports a graph it cannot run as several types
            raise UserError(f"onnxruntime cannot load {path} ({str(e).splitlines()[0][:160]}): re-export it with "
                            "scripts/export.py") from None
        self.task = self.meta["task"]

    def run(self, images: torch.Tensor) -> list[np.ndarray]:
        return self.session.run(None, {INPUT: images.detach().float().cpu().numpy()})

    def forward(self, images: torch.Tensor):
        outs = [torch.from_numpy(o).to(images.device) for o in self.run(images)]
        return ((outs[0], outs[1]), None) if self.task == "segment" else (outs[0], None)
