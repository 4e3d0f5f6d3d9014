"""Export a quantized run as ONNX (QDQ) for onnxruntime or TensorRT: `python scripts/export.py
+checkpoint=runs/<run>/folded.pt` (or `yoloq export ...`); options under `export.` (opset, int4, tensorrt, nms)."""

from yoloq.cli import hydra_entry

if __name__ == "__main__":
    hydra_entry("export")
