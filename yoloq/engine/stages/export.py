"""The export stage, last in every quantized run: the final model (QC folded, or QAT) as model.onnx, checked
against the PyTorch deploy form on a batch (in LSB of each output, export/output_check.py) and scored with
onnxruntime through the same pycocotools evaluation as every stage (row `onnx`)."""

from __future__ import annotations

import logging
import time

from yoloq.engine.report import StageResult
from yoloq.engine.run import Run
from yoloq.export.onnx_export import ExportOptions, deploy_form, export_onnx
from yoloq.export.onnx_model import OnnxModel
from yoloq.export.output_check import compare_outputs
from yoloq.factory import model_task

log = logging.getLogger("yoloq")


def export_stage(run: Run, model, images, source: StageResult) -> StageResult:
    cfg = run.cfg
    start = time.time()
    names = run.data.info.names
    config = {k: run.folder.config()[k] for k in ("model", "data", "quant")}
    export_onnx(model, run.run_dir, imgsz=int(cfg.data.imgsz), names=names, task=model_task(cfg),
                options=ExportOptions.from_cfg(cfg.export), config=config)
    export_time = time.time() - start
    onnx_model = OnnxModel(run.run_dir / "model.onnx", run.device)
    deploy = deploy_form(model)
    check = compare_outputs(deploy, onnx_model, images.cpu(), len(names))
    log.info("export: model.onnx in %.1f s; onnxruntime vs deploy form: max %.3g (%.2f LSB), mean %.3g, "
             "%.3f%% of elements within 2 LSB", export_time, check["onnx_max_diff"], check["onnx_max_lsb"],
             check["onnx_mean_diff"], 100 * check["onnx_within_2lsb"])
    metrics = run.data.evaluator(onnx_model)
    deploy_map = source.extra.get("deploy_mAP50-95")
    if deploy_map is None:  # a run without QC: its deploy form has not been scored yet
        deploy_map = run.data.evaluator(deploy.to(run.device))["mAP50-95"]
    log.info("export: mAP50-95 onnxruntime %.4f, PyTorch deploy form %.4f", metrics["mAP50-95"], deploy_map)
    extra = {k: v for k, v in check.items() if k != "parts"}
    extra.update({"export_s": export_time, "deploy_mAP50-95": deploy_map})
    run.folder.write_json("onnx_check.json", {**check, "export_s": export_time, "deploy_mAP50-95": deploy_map,
                                              "onnx_mAP50-95": metrics["mAP50-95"]})
    run.log.log("onnx", {**metrics, **extra})
    return StageResult("onnx", source.method, source.w_bits, source.a_bits, metrics, time.time() - start,
                       str(run.run_dir / "model.onnx"), extra=extra)
