"""Where an exported graph departs from the PyTorch deploy form: per quantized layer, the share of its input
integers (the codes its QuantizeLinear produces) that differ between onnxruntime and the deploy form on a batch.

One flipped code early on, from float summation order, can multiply through later low-bit layers; this table shows
where that starts and how it grows (docs/RESULTS.md, issue 17)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from yoloq.quant.deploy import DeployConv2d


def deploy_codes(deploy: torch.nn.Module, images: torch.Tensor) -> dict[str, np.ndarray]:
    """Each DeployConv2d's input integers clip(round((x - offset) / s), -Qn, Qp) on `images`."""
    codes, hooks = {}, []
    for name, m in deploy.named_modules():
        q = m.act_quantizer if isinstance(m, DeployConv2d) else None
        if q is not None:
            hooks.append(m.register_forward_pre_hook(
                lambda _, inp, name=name, q=q: codes.__setitem__(name, q.integers(inp[0]).to(torch.int32).numpy())))
    with torch.no_grad():
        deploy.eval()(images)
    for h in hooks:
        h.remove()
    return codes


def onnx_codes(path: str | Path, images: torch.Tensor) -> dict[str, np.ndarray]:
    """The same integers from onnxruntime: every QuantizeLinear's output made a graph output (the Clip that follows
    is applied here), keyed by its layer's name."""
    import onnx
    import onnxruntime as ort

    proto = onnx.load(str(path))
    layers = {}
    for node in proto.graph.node:
        if node.op_type == "QuantizeLinear" and node.input[1].endswith(".act.scale"):
            layers[node.output[0]] = node.input[1][: -len(".act.scale")]
            proto.graph.output.append(onnx.helper.make_empty_tensor_value_info(node.output[0]))
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    outs = dict(zip(names, session.run(None, {"images": images.numpy()})))
    return {layer: outs[out].astype(np.int32) for out, layer in layers.items()}


def layer_flips(deploy: torch.nn.Module, onnx_path: str | Path, images: torch.Tensor) -> dict[str, dict]:
    """layer -> {"bits", "differ" (share of its input integers), "max" (largest difference in steps)}, in order."""
    ours, theirs = deploy_codes(deploy, images), onnx_codes(onnx_path, images)
    table = {}
    for name, a in ours.items():
        if name not in theirs:  # a QDQ pair the graph leaves out (the image grid's, under export.tensorrt)
            continue
        q = deploy.get_submodule(name).act_quantizer
        b = np.clip(theirs[name], -q.qn, q.qp)
        d = np.abs(a - b)
        table[name] = {"bits": q.bits, "differ": float((d > 0).mean()), "max": int(d.max())}
    return table
