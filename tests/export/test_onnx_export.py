"""ONNX QDQ export of tiny quantized models, run in onnxruntime and checked node by node against the deploy form."""

from __future__ import annotations

import copy
import functools
import json

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

import yoloq
from yoloq.errors import UserError
from yoloq.export.command import grid_images
from yoloq.export.onnx_export import ExportOptions, deploy_form, export_onnx
from yoloq.export.onnx_model import OnnxModel, read_metadata
from yoloq.export.output_check import compare_outputs
from yoloq.export.qdq import QDQActivation, QDQConv2d, QDQConvTranspose2d, is_image_grid, to_qdq
from yoloq.models.build import build_model, high_precision_layers, hyperparameters
from yoloq.quant import LSQQuantizer, QuantConfig, quantize_model

IMGSZ = 64
NAMES = ("circle", "square", "star")


@functools.cache
def float_model(task: str, seed: int):
    torch.manual_seed(seed)
    yaml = "yolov5n-seg.yaml" if task == "segment" else "yolov5n.yaml"
    return build_model(yaml, NAMES, hyperparameters(imgsz=IMGSZ, task=task), task).eval()


@pytest.fixture(autouse=True)
def eager_kernels(monkeypatch):
    monkeypatch.setenv("YOLOQ_FAKE_QUANT_KERNEL", "eager")  # compiling a kernel costs more than these tiny models


def quantized_model(task="detect", bits=4, per_channel=False, act_signed="auto", asymmetric=False, seed=0):
    """yolov5n (or -seg) at 64 px, its scales set from min/max (the MSE search costs seconds here). asymmetric:
    False, True (LSQ+'s float offset) or "integer" (an integer zero point)."""
    model = copy.deepcopy(float_model(task, seed))
    cfg = QuantConfig(w_bits=bits, a_bits=bits, per_channel=per_channel, act_signed=act_signed,
                      act_asymmetric=bool(asymmetric), scale_init="minmax",
                      act_zero_point="integer" if asymmetric == "integer" else "float")
    quantize_model(model, cfg, [grid_images(2, IMGSZ, seed=1)], high_precision=high_precision_layers(model))
    return model


def export(model, tmp_path, task="detect", **options):
    meta = export_onnx(model, tmp_path, imgsz=IMGSZ, names=NAMES, task=task, options=ExportOptions(**options))
    return meta, onnx.load(str(tmp_path / "model.onnx"))


class Graph:
    def __init__(self, proto):
        self.nodes = list(proto.graph.node)
        self.producer = {o: n for n in self.nodes for o in n.output}
        self.values = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
        for n in self.nodes:
            if n.op_type == "Constant":
                self.values[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)

    def value(self, name):
        """An initializer or constant, through the Identity nodes the exporter puts in for shared values."""
        while name not in self.values and self.producer[name].op_type == "Identity":
            name = self.producer[name].input[0]
        return self.values[name]

    def source(self, name):
        """The node producing `name`, looking through Identity nodes."""
        node = self.producer.get(name)
        while node is not None and node.op_type == "Identity":
            node = self.producer.get(node.input[0])
        return node


def check_graph(proto, qdq_model, tensorrt=False):
    """Every quantized conv in the graph: weights an integer initializer equal to the deploy form's, through
    DequantizeLinear with its scales; the input QuantizeLinear -> Clip(-Qn, Qp) -> DequantizeLinear (no Clip at 8
    bits), in int8 or uint8 as trained, with the trained scale (and the offset around it where asymmetric)."""
    g = Graph(proto)
    modules = {n: m for n, m in qdq_model.named_modules() if isinstance(m, (QDQConv2d, QDQConvTranspose2d))}
    convs = [n for n in g.nodes if n.op_type in ("Conv", "ConvTranspose")]
    checked = 0
    for conv in convs:
        w = g.source(conv.input[1])
        if w is None or w.op_type != "DequantizeLinear":
            assert conv.op_type == "Conv" and w is None or w.op_type != "DequantizeLinear"  # the float DFL conv
            continue
        name = w.input[0][: -len(".weight_int")]
        m = modules[name]
        np.testing.assert_array_equal(g.value(w.input[0]), m.weight_int.numpy())
        assert g.value(w.input[0]).dtype == np.int8
        np.testing.assert_array_equal(g.value(w.input[1]), m.weight_scale.numpy())
        assert not g.value(w.input[2]).any()
        act = m.act
        x = g.source(conv.input[0])
        if not isinstance(act, QDQActivation):
            assert tensorrt and (x is None or x.op_type != "DequantizeLinear")  # the image grid's pair, dropped
            checked += 1
            continue
        if act.offset is not None:
            assert x.op_type == "Add"
            x = g.source(x.input[0])
        assert x.op_type == "DequantizeLinear"
        np.testing.assert_allclose(g.value(x.input[1]), act.scale.numpy(), rtol=0)
        zero = g.value(x.input[2])
        assert zero.dtype == (np.int8 if act.lo < 0 else np.uint8) and zero == act.zero
        q = g.source(x.input[0])
        if act.hi - act.lo == 255:
            assert q.op_type == "QuantizeLinear"
        else:
            assert q.op_type == "Clip" and not tensorrt
            assert (int(g.value(q.input[1])), int(g.value(q.input[2]))) == (act.lo, act.hi)
            q = g.source(q.input[0])
            assert q.op_type == "QuantizeLinear"
        assert g.value(q.input[2]) == act.zero
        if act.offset is not None:
            sub = g.source(q.input[0])
            assert sub.op_type == "Sub"
            np.testing.assert_allclose(g.value(sub.input[1]), act.offset.numpy(), rtol=0)
        checked += 1
    assert checked == len(modules) > 50


CASES = {  # (task, bits, per_channel, activations, asymmetric)
    "w8a8-per-tensor-signed": ("detect", 8, False, "signed", False),
    "w4a4-per-channel-asymmetric": ("detect", 4, True, "auto", True),
    "w3a3-per-tensor-integer-zero-point": ("detect", 3, False, "auto", "integer"),
    "w2a2-per-channel-unsigned": ("detect", 2, True, "unsigned", False),
    "seg-w3a3-per-tensor-signed": ("segment", 3, False, "auto", False),
}


@pytest.mark.parametrize("case", CASES)
def test_export_runs_in_onnxruntime_within_2_lsb(case, tmp_path):
    task, bits, per_channel, act_signed, asymmetric = CASES[case]
    model = quantized_model(task, bits, per_channel, act_signed, asymmetric)
    meta, proto = export(model, tmp_path, task)
    check_graph(proto, to_qdq(deploy_form(model)))
    assert meta["layers"]["model.0.conv"]["w_bits"] == 8 and meta["layers"]["model.2.cv1.conv"]["w_bits"] == bits
    assert json.loads((tmp_path / "model.json").read_text())["yoloq_version"] == yoloq.__version__
    onnx_model = OnnxModel(tmp_path / "model.onnx")
    images = grid_images(3, IMGSZ, seed=2)  # 3, not the traced 1: the batch axis is dynamic
    check = compare_outputs(deploy_form(model), onnx_model, images, len(NAMES))
    assert check["onnx_within_2lsb"] >= 0.999, check
    assert check["onnx_mean_diff"] < 1e-2, check
    if task == "segment":
        assert set(check["parts"]) == {"boxes", "scores", "mask_coefficients", "prototypes"}


def test_integer_zero_point_is_the_graphs_zero_point(tmp_path):
    """With quant.act_zero_point=integer the graph has no float Sub/Add: the uint8 zero points carry the offsets."""
    model = quantized_model("detect", 3, False, asymmetric="integer")
    meta, proto = export(model, tmp_path)
    assert subtracted_before_quantize(proto) == 0
    acts = {n: m.act for n, m in to_qdq(deploy_form(model)).named_modules() if isinstance(m, QDQConv2d)}
    zeros = {n: a.zero for n, a in acts.items() if isinstance(a, QDQActivation) and a.lo == 0 and a.hi == 7}
    assert len(zeros) > 50 and any(zeros.values())  # the 3-bit layers, most of them after a negative tail
    assert all(meta["layers"][n]["act_zero_point"] == z for n, z in zeros.items())
    meta, proto = export(quantized_model("detect", 3, False, asymmetric=True), tmp_path / "float")
    assert meta["layers"]["model.2.cv1.conv"]["act_zero_point"] == "float" and subtracted_before_quantize(proto) > 50


def subtracted_before_quantize(proto) -> int:
    """How many QuantizeLinear nodes take a Sub's output (a float offset)."""
    g = Graph(proto)
    sources = [g.source(n.input[0]) for n in g.nodes if n.op_type == "QuantizeLinear"]
    return sum(s is not None and s.op_type == "Sub" for s in sources)


def test_layer_check_finds_no_flip_where_the_graph_is_the_deploy_form(tmp_path):
    from yoloq.export.layer_check import layer_flips

    model = quantized_model("detect", 4, True, asymmetric=True)
    export(model, tmp_path)
    flips = layer_flips(deploy_form(model), tmp_path / "model.onnx", grid_images(2, IMGSZ))
    assert len(flips) > 50 and flips["model.0.conv"]["bits"] == 8 and flips["model.2.cv1.conv"]["bits"] == 4
    assert all(f["max"] <= 1 for f in flips.values()) and max(f["differ"] for f in flips.values()) < 1e-3
    # a graph whose scale is off by 10% shows up in the first layer it reaches
    proto = onnx.load(str(tmp_path / "model.onnx"))
    scale = next(t for t in proto.graph.initializer if t.name == "model.1.conv.act.scale")
    scale.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(scale) * 1.1, scale.name))
    onnx.save(proto, str(tmp_path / "off.onnx"))
    flips = layer_flips(deploy_form(model), tmp_path / "off.onnx", grid_images(2, IMGSZ))
    assert flips["model.0.conv"]["differ"] == 0 and flips["model.1.conv"]["differ"] > 0.05


def test_int4_weights_at_opset_21(tmp_path):
    model = quantized_model("detect", 4, True)
    meta, proto = export(model, tmp_path, int4=True)
    assert meta["opset"] == 21 and proto.opset_import[0].version == 21
    types = {t.name: t.data_type for t in proto.graph.initializer}
    assert types["model.2.cv1.conv.weight_int"] == onnx.TensorProto.INT4
    assert types["model.0.conv.weight_int"] == onnx.TensorProto.INT8  # the 8-bit stem stays int8
    ints = numpy_helper.to_array(next(t for t in proto.graph.initializer if t.name == "model.2.cv1.conv.weight_int"))
    np.testing.assert_array_equal(ints.astype(np.int8), deploy_form(model).model[2].cv1.conv.weight_int.numpy())
    check = compare_outputs(deploy_form(model), OnnxModel(tmp_path / "model.onnx"), grid_images(2, IMGSZ), 3)
    assert check["onnx_within_2lsb"] >= 0.999


def test_tensorrt_graph_is_plain_int8_qdq(tmp_path):
    model = quantized_model("detect", 8, True, act_signed="signed")
    # the stem keeps the image grid: unsigned 1/255, exact on images
    quantize_model_input_grid(model)
    meta, proto = export(model, tmp_path, tensorrt=True)
    ops = {n.op_type for n in proto.graph.node}
    assert "Clip" not in ops and {"QuantizeLinear", "DequantizeLinear"} <= ops
    g = Graph(proto)
    for n in g.nodes:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            assert g.value(n.input[2]).dtype == np.int8 and not g.value(n.input[2]).any()
    check_graph(proto, to_qdq(deploy_form(model), tensorrt=True), tensorrt=True)
    check = compare_outputs(deploy_form(model), OnnxModel(tmp_path / "model.onnx"), grid_images(2, IMGSZ), 3)
    assert check["onnx_within_2lsb"] >= 0.999


def quantize_model_input_grid(model):
    model.model[0].conv.act_quantizer.fix_scale(1 / 255, signed=False)


@pytest.mark.parametrize("asymmetric", [False, True])
def test_image_grid_is_recognised_only_while_it_is_the_image_grid(asymmetric):
    q = LSQQuantizer(8, signed=None if not asymmetric else False, asymmetric=asymmetric,
                     integer_zero_point=asymmetric)
    q.fix_scale(1 / 255, signed=False)
    assert is_image_grid(q)  # TensorRT drops its QDQ pair: exact on images
    with torch.no_grad():
        if asymmetric:
            q.offset.fill_(-2 / 255)  # zero point 2: no longer the image's grid
        else:
            q.scale.fill_(2 / 255)
    assert not is_image_grid(q)


def test_tensorrt_refuses_low_bit_and_unsigned_activations(tmp_path):
    with pytest.raises(UserError, match="model.1.conv takes 4-bit activations.*W8A8"):
        export(quantized_model("detect", 4), tmp_path, tensorrt=True)
    with pytest.raises(UserError, match="unsigned or asymmetric.*act_signed=signed"):
        export(quantized_model("detect", 8, act_signed="unsigned"), tmp_path, tensorrt=True)


def test_nms_appended(tmp_path):
    model = quantized_model("detect", 4)
    meta, proto = export(model, tmp_path, nms=True, conf=0.0, max_det=20)
    assert "NonMaxSuppression" in {n.op_type for n in proto.graph.node}
    out = OnnxModel(tmp_path / "model.onnx").run(grid_images(1, IMGSZ))[0]
    assert out.shape == (1, 20, 6)
    scores = out[0, :, 4]
    assert (np.diff(scores) <= 1e-6).all() and (out[0, :, 5] < len(NAMES)).all()
    assert (out[0, :, 2] >= out[0, :, 0]).all()  # xyxy corners


def test_foreign_damaged_and_other_version_files_are_one_line(tmp_path):
    model = quantized_model("detect", 3)
    export(model, tmp_path)
    path = tmp_path / "model.onnx"
    assert read_metadata(path)["task"] == "detect"
    damaged = tmp_path / "damaged.onnx"
    damaged.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(UserError, match="damaged or not an ONNX file"):
        read_metadata(damaged)
    proto = onnx.load(str(path))
    for p in proto.metadata_props:
        if p.key == "yoloq":
            meta = json.loads(p.value)
            meta["yoloq_version"] = "0.0.1"
            p.value = json.dumps(meta)
    other = tmp_path / "other.onnx"
    onnx.save(proto, str(other))
    with pytest.raises(UserError, match="exported by yoloq 0.0.1, this is yoloq"):
        OnnxModel(other)
    del proto.metadata_props[:]
    onnx.save(proto, str(other))
    with pytest.raises(UserError, match="not exported by yoloq"):
        OnnxModel(other)
    with pytest.raises(UserError, match="does not exist"):
        OnnxModel(tmp_path / "missing.onnx")
