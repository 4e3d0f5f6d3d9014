"""Export time of a quantized yolov5n, and inference images/s of its ONNX graph in onnxruntime next to the same
model in PyTorch: float, fake-quantized and integer deploy form, on one batch of noise images."""

from __future__ import annotations

import copy
import tempfile
import time
from pathlib import Path

import torch

from yoloq.export.command import grid_images
from yoloq.export.onnx_export import ExportOptions, deploy_form, export_onnx
from yoloq.export.onnx_model import OnnxModel
from yoloq.export.output_check import compare_outputs
from yoloq.models.build import build_model, high_precision_layers, hyperparameters
from yoloq.quant import QuantConfig, quantize_model

from .measure import interleaved_times, median

NAMES = tuple(f"class{i}" for i in range(6))  # the embedded dataset's six classes


def bench_export(model_yaml: str, batch: int, imgsz: int, bits: int, repeats: int, warmup: int) -> dict:
    torch.manual_seed(0)
    fp = build_model(model_yaml, NAMES, hyperparameters(imgsz=imgsz)).eval()
    images = grid_images(batch, imgsz)
    fake = quantize_model(copy.deepcopy(fp), QuantConfig(w_bits=bits, a_bits=bits), [images],
                          high_precision=high_precision_layers(fp)).eval()
    deploy = deploy_form(fake)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        export_onnx(fake, tmp, imgsz=imgsz, names=NAMES, task="detect", options=ExportOptions())
        export_s = time.perf_counter() - start
        size_mb = (Path(tmp) / "model.onnx").stat().st_size / 2**20
        onnx_model = OnnxModel(Path(tmp) / "model.onnx", threads=torch.get_num_threads())
        check = compare_outputs(deploy, onnx_model, images, len(NAMES))
        runs = {"pytorch_fp": fp, "pytorch_fake_quant": fake, "pytorch_deploy": deploy, "onnxruntime": onnx_model}
        with torch.no_grad():
            times = interleaved_times({k: (lambda m=m: m(images)) for k, m in runs.items()}, repeats, warmup,
                                      torch.device("cpu"))
    return {"model": model_yaml, "batch": batch, "imgsz": imgsz, "bits": bits, "repeats": repeats,
            "export_s": export_s, "onnx_mb": size_mb, "threads": torch.get_num_threads(),
            "images_per_s": {k: batch / median(v) for k, v in times.items()},
            "onnx_within_2lsb": check["onnx_within_2lsb"], "onnx_max_lsb": check["onnx_max_lsb"]}
