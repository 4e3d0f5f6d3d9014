"""A quantized yoloq model as an ONNX QDQ graph (qdq.py) with its metadata: model.onnx and model.json.

The graph's output is what ultralytics' own ONNX export produces: `output0` [batch, 4 + nc, anchors] (boxes as
xywh in input pixels, class scores after the sigmoid; -seg models add the mask coefficients as further rows and
`output1`, the prototypes [batch, 32, h/4, w/4]), with a dynamic batch axis. The metadata carries ultralytics'
keys (task, names, stride, imgsz, batch) as well as yoloq's, so `ultralytics.YOLO("model.onnx")` runs it too.
"""

from __future__ import annotations

import copy
import io
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn

import yoloq
from yoloq.atomic import write_atomic, write_json_atomic
from yoloq.export.qdq import to_qdq
from yoloq.models.build import detect_head
from yoloq.quant import QuantConv2d, QuantConvTranspose2d
from yoloq.quant.deploy import to_deploy

FORMAT = "yoloq-qdq"
INPUT = "images"
INT4_OPSET = 21  # the first opset with INT4 tensors; TorchScript's exporter stops at 20
MAX_TORCH_OPSET = 20


@dataclass
class ExportOptions:
    opset: int = 17
    int4: bool = False      # weights of <= 4 bits as INT4 initializers (opset 21)
    tensorrt: bool = False  # W8A8 only: no Clip, signed int8, the image grid's QDQ pair left out
    nms: bool = False       # append ultralytics' NMS: output0 [batch, max_det, 6 (+ mask coefficients)], xyxy
    batch: int = 1          # with nms: the largest batch (NMS is unrolled per image; smaller batches are padded)
    conf: float = 0.25      # with nms: score threshold and IoU of the appended NMS
    iou: float = 0.45
    max_det: int = 300

    @classmethod
    def from_cfg(cls, e) -> "ExportOptions":
        return cls(opset=int(e.opset), int4=bool(e.int4), tensorrt=bool(e.get("tensorrt", False)),
                   nms=bool(e.get("nms", False)), batch=int(e.get("batch", 1)), conf=float(e.get("conf", 0.25)),
                   iou=float(e.get("iou", 0.45)), max_det=int(e.get("max_det", 300)))

    @property
    def final_opset(self) -> int:
        return INT4_OPSET if self.int4 else self.opset


def output_names(task: str) -> list[str]:
    return ["output0", "output1"] if task == "segment" else ["output0"]


def layer_bits(model: nn.Module) -> dict[str, dict]:
    """Every quantized layer's precision, as model.json records it."""
    layers = {}
    for name, m in model.named_modules():
        if isinstance(m, (QuantConv2d, QuantConvTranspose2d)):
            q, wq = m.act_quantizer, m.weight_quantizer
            layers[name] = {
                "w_bits": None if wq is None else wq.bits,
                "a_bits": None if q is None else q.bits,
                "per_channel": bool(wq is not None and wq.per_channel),
                "activations": None if q is None else
                ("asymmetric" if q.offset is not None else "signed" if q.qn > 0 else "unsigned"),
                "act_zero_point": None if q is None else
                ("float" if q.float_offset else int(q.zero_point())),
            }
    return layers


def deploy_form(model: nn.Module) -> nn.Module:
    """The integer deploy form (BN and QC folded) of a fake-quantized model, on the CPU, in eval mode."""
    return to_deploy(copy.deepcopy(model).cpu().eval())


def graph_of(model: nn.Module, imgsz: int, task: str, options: ExportOptions):
    """The ONNX ModelProto of a fake-quantized model's deploy form (no metadata)."""
    import onnx

    qdq = to_qdq(deploy_form(model), options.tensorrt)
    head = detect_head(qdq)
    head.export, head.format, head.dynamic = True, "onnx", False  # the decoded output alone, as ultralytics exports
    batch = 1
    if options.nms:
        from ultralytics.engine.exporter import NMSModel

        head.xyxy = True  # torchvision's NMS takes corners
        qdq.task = task
        qdq = NMSModel(qdq, SimpleNamespace(format="onnx", dynamic=True, batch=options.batch, conf=options.conf,
                                            iou=options.iou, max_det=options.max_det, agnostic_nms=False,
                                            opset=options.opset))
        batch = options.batch  # the per-image loop is unrolled for this many images
    outputs = output_names(task)
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
        torch.onnx.export(qdq, torch.zeros(batch, 3, imgsz, imgsz), buf, dynamo=False, do_constant_folding=True,
                          opset_version=MAX_TORCH_OPSET if options.int4 else options.opset,
                          input_names=[INPUT], output_names=outputs,
                          dynamic_axes={n: {0: "batch"} for n in [INPUT, *outputs]})
    proto = onnx.load_from_string(buf.getvalue())
    if options.int4:
        _int4_weights(proto, {f"{name}.weight_int" for name, b in layer_bits(model).items()
                              if b["w_bits"] is not None and b["w_bits"] <= 4})
    return proto


def _int4_weights(proto, names: set[str]) -> None:
    """Re-types the named int8 weight initializers (and their DequantizeLinear's zero point) as INT4, opset 21."""
    import onnx
    from onnx import numpy_helper

    inits = {t.name: t for t in proto.graph.initializer}
    for node in proto.graph.node:
        if node.op_type != "DequantizeLinear" or node.input[0] not in names or node.input[0] not in inits:
            continue
        values = numpy_helper.to_array(inits[node.input[0]])
        inits[node.input[0]].CopyFrom(onnx.helper.make_tensor(node.input[0], onnx.TensorProto.INT4, values.shape,
                                                              values.flatten().tolist()))
        zero = f"{node.input[0]}_zero_point"
        axis = next((a.i for a in node.attribute if a.name == "axis"), None)  # per-channel: one zero per channel
        shape = [] if axis is None else [values.shape[axis]]
        proto.graph.initializer.append(onnx.helper.make_tensor(zero, onnx.TensorProto.INT4, shape,
                                                               [0] * (shape[0] if shape else 1)))
        node.input[2] = zero
    for op in proto.opset_import:
        if op.domain in ("", "ai.onnx"):
            op.version = INT4_OPSET
    _drop_unused(proto)


def _drop_unused(proto) -> None:
    """Removes the initializers and Constant nodes that no node reads any more (the int8 zero points)."""
    graph = proto.graph
    used = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    keep = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    nodes = [n for n in graph.node if n.op_type != "Constant" or n.output[0] in used]
    del graph.node[:]
    graph.node.extend(nodes)


def export_onnx(model: nn.Module, out_dir: str | Path, *, imgsz: int, names: tuple[str, ...], task: str,
                options: ExportOptions, config: dict | None = None) -> dict:
    """Writes out_dir/model.onnx and out_dir/model.json for a fake-quantized model (QAT, or QC folded); returns
    the metadata. `config` (the run's model/data/quant settings) lets scripts/eval.py +onnx= find the data."""
    import onnx

    proto = graph_of(model, imgsz, task, options)
    stride = int(detect_head(model).stride.max())
    meta = {
        "format": FORMAT, "yoloq_version": yoloq.__version__, "opset": options.final_opset, "task": task,
        "imgsz": [imgsz, imgsz], "names": dict(enumerate(names)), "stride": stride,
        "input": f"{INPUT} [batch, 3, {imgsz}, {imgsz}] float32 RGB in 0..1",
        "outputs": output_names(task), "int4_weights": options.int4, "tensorrt": options.tensorrt,
        "nms": {"batch": options.batch, "conf": options.conf, "iou": options.iou, "max_det": options.max_det}
        if options.nms else None,
        "layers": layer_bits(model), "config": config or {},
    }
    props = {"yoloq": json.dumps(meta), "yoloq_version": yoloq.__version__, "task": task, "names": str(meta["names"]),
             "stride": str(stride), "imgsz": str(meta["imgsz"]), "batch": str(options.batch), "nms": str(options.nms),
             "description": f"yoloq {FORMAT}"}
    for key, value in props.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(proto)
    out_dir = Path(out_dir)
    write_atomic(out_dir / "model.onnx", lambda f: f.write(proto.SerializeToString()), what="ONNX model")
    write_json_atomic(out_dir / "model.json", meta)
    return meta
