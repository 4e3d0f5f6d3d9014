import pytest
import torch

from yoloq.errors import UserError
from yoloq.models.build import build_model, high_precision_layers, load_weights

NAMES3 = ("a", "b", "c")


def test_build_uses_data_classes():
    m = build_model("yolov5n.yaml", NAMES3)
    assert m.model[-1].nc == 3 and m.names == {0: "a", 1: "b", 2: "c"}
    assert m.args.box > 0  # the loss gains ultralytics' loss reads


def test_first_and_last_layers():
    m = build_model("yolov5n.yaml", NAMES3)
    names = high_precision_layers(m)
    assert names[0] == "model.0.conv"
    assert sorted(names[1:]) == sorted(f"model.24.{b}.{i}.2" for b in ("cv2", "cv3") for i in range(3))
    modules = dict(m.named_modules())
    assert [modules[n].out_channels for n in names if ".cv3." in n] == [3, 3, 3]  # class logits


def test_ultralytics_checkpoint_with_other_nc_transfers_all_but_the_class_convs(tmp_path):
    src = build_model("yolov5n.yaml", tuple(f"c{i}" for i in range(80)))
    torch.save({"model": src.half(), "ema": None, "epoch": -1}, tmp_path / "w.pt")  # how ultralytics saves
    dst = build_model("yolov5n.yaml", NAMES3)
    done, total = load_weights(dst, tmp_path / "w.pt")
    src_state = src.state_dict()
    skipped = [k for k, v in dst.state_dict().items() if k not in src_state or src_state[k].shape != v.shape]
    # only the class branch differs: its width depends on nc in ultralytics' head
    assert skipped and len(skipped) == total - done and all(".cv3." in k for k in skipped)
    assert torch.equal(dst.model[0].conv.weight, src.model[0].conv.weight.float())


@pytest.mark.parametrize("content", ["missing", "garbage", "other_arch", "no_model"])
def test_bad_weights_are_one_line_errors(tmp_path, content):
    path = tmp_path / "w.pt"
    if content == "garbage":
        path.write_bytes(b"\x00not a checkpoint")
    elif content == "other_arch":
        torch.save({"model": torch.nn.Linear(3, 4)}, path)
    elif content == "no_model":
        torch.save({"epoch": 3}, path)
    with pytest.raises(UserError) as e:
        load_weights(build_model("yolov5n.yaml", NAMES3), path)
    assert "\n" not in str(e.value) and "model.weights=" in str(e.value)


@pytest.mark.parametrize("name, official", [("yolov7-tiny.yaml", 6.2e6), ("yolov7.yaml", 36.9e6)])
def test_yolov7_parameter_counts_match_the_official_models(name, official):
    m = build_model(name, tuple(f"c{i}" for i in range(80)))
    n = sum(p.numel() for p in m.parameters())
    assert abs(n / official - 1) < 0.05, n


def test_yolov7_tiny_is_the_v7_structure():
    m = build_model("yolov7-tiny.yaml", NAMES3)
    acts = {type(mod.act).__name__ for mod in m.modules() if hasattr(mod, "act") and hasattr(mod, "conv")}
    assert acts == {"LeakyReLU"}
    assert sum(isinstance(mod, torch.nn.MaxPool2d) for mod in m.modules()) == 3 + 3  # MP x3, SPPCSPC's 3 pools
    out = m.eval()(torch.zeros(1, 3, 128, 128))
    assert out[0].shape[1:] == (4 + 3, (16 * 16 + 8 * 8 + 4 * 4))  # strides 8, 16, 32
    assert build_model("yolov5n.yaml", NAMES3).model[0].act.__class__.__name__ == "SiLU"  # no leak of the act
    names = high_precision_layers(m)
    assert names[0] == "model.0.conv" and all(n.startswith("model.77.") for n in names[1:])


def test_segmentation_model_and_its_8_bit_layers():
    m = build_model("yolov5n-seg.yaml", NAMES3, task="segment")
    head = m.model[-1]
    assert type(head).__name__ == "Segment" and head.nm == 32 and head.npr == 64  # 256 x width 0.25
    names = high_precision_layers(m)
    assert "model.24.proto.cv3.conv" in names
    assert sorted(n for n in names if ".cv4." in n) == [f"model.24.cv4.{i}.2" for i in range(3)]
    assert len(names) == 1 + 3 * 3 + 1  # stem; box, class and mask-coefficient convs per level; prototypes
    from yoloq.quant import QuantConfig, QuantConv2d, QuantConvTranspose2d, quantize_model

    quantize_model(m, QuantConfig(w_bits=3, a_bits=3), None, names)
    proto = head.proto
    assert isinstance(proto.upsample, QuantConvTranspose2d) and proto.upsample.weight_quantizer.bits == 3
    assert isinstance(proto.cv1.conv, QuantConv2d) and proto.cv1.conv.w_bits == 3
    assert proto.cv3.conv.w_bits == 8 and head.cv4[0][2].w_bits == 8 and head.cv4[0][0].conv.w_bits == 3
    s = build_model("yolov5s-seg.yaml", NAMES3, task="segment")
    assert s.model[-1].npr == 128  # the scale letter is read from the name
