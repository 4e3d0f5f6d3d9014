"""The stem's 8-bit input quantizer on the image's own grid: fixed scale 1/255, exact, no input gradient."""

import copy

import pytest
import torch

from tests.quant.test_quant_prepare import Toy
from yoloq.quant import QuantConfig, QuantConv2d, kernels, quantize_model


def images(n=2, size=16, seed=0):
    """uint8 images scaled to [0, 1], as the trainer and the evaluator feed them."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), generator=gen).float() / 255


def quantized(batches, **cfg):
    config = QuantConfig(**{"w_bits": 4, "a_bits": 4, **cfg})
    return quantize_model(Toy(), config, calib_batches=batches, high_precision=["stem", "head"])


# The activation grids: the paper's (symmetric, sign decided at calibration) and asymmetric with a float offset or an
# integer zero point. Each keeps the image's grid at the stem.
GRIDS = {
    "symmetric": {},
    "asymmetric": {"act_asymmetric": True},
    "integer zero point": {"act_asymmetric": True, "act_zero_point": "integer"},
}


@pytest.mark.parametrize("grid", GRIDS)
def test_image_input_gets_the_fixed_grid_and_other_inputs_learn(grid):
    torch.manual_seed(0)
    model = quantized([images(seed=1), images(seed=2)], **GRIDS[grid])
    q = model.stem.act_quantizer
    assert q.scale.item() == pytest.approx(1 / 255, rel=1e-7) and not q.scale.requires_grad
    assert (q.qn, q.qp) == (0, 255)
    if q.asymmetric:
        assert q.offset.item() == 0 and not q.offset.requires_grad and int(q.zero_point()) == 0
    for name in ("body.0.conv", "body.1.conv", "head"):
        conv = model.get_submodule(name)
        assert conv.act_quantizer.scale.requires_grad  # SiLU outputs: learned scales
        assert conv.act_quantizer.offset is None or conv.act_quantizer.offset.requires_grad
    assert model.stem.weight_quantizer.scale.requires_grad


@pytest.mark.parametrize("why, batches, cfg", [
    ("switched off", [images()], {"input_grid": False}),
    ("not on the grid", [torch.rand(2, 3, 16, 16)], {}),
    ("outside [0, 1]", [images() * 2], {}),
    ("too few bits for the grid", [images()], {"first_last_bits": 4}),
])
def test_learned_scale_otherwise(why, batches, cfg):
    model = quantized(batches, **cfg)
    assert model.stem.act_quantizer.scale.requires_grad, why


@pytest.mark.parametrize("grid", GRIDS)
def test_fixed_grid_is_exact_on_images(grid):
    torch.manual_seed(0)
    model = quantized([images(seed=1)], **GRIDS[grid])
    x = images(seed=3)
    assert torch.allclose(model.stem.act_quantizer(x), x, rtol=0, atol=1e-7)


@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("mode", ["eager", "compiled"])
def test_stem_step_needs_no_input_gradient_and_matches_the_learned_path_otherwise(mode, grid):
    torch.manual_seed(0)
    fixed = quantized([images(seed=1)], **GRIDS[grid])
    learned = copy.deepcopy(fixed)
    for p in (learned.stem.act_quantizer.scale, learned.stem.act_quantizer.offset):  # the same grid, but learned
        if p is not None:
            p.requires_grad_(True)
    x = images(n=4, seed=4)
    grads = {}
    with kernels.forced(mode):
        for name, model in (("fixed", fixed), ("learned", learned)):
            out = model(x)
            out.square().mean().backward()
            grads[name] = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert not {"stem.act_quantizer.scale", "stem.act_quantizer.offset"} & set(grads["fixed"])
    assert "stem.act_quantizer.scale" in grads["learned"]
    assert ("stem.act_quantizer.offset" in grads["learned"]) == (grid != "symmetric")
    for name, g in grads["fixed"].items():
        torch.testing.assert_close(g, grads["learned"][name], rtol=0, atol=0)


@pytest.mark.parametrize("grid", GRIDS)
def test_stem_conv_backward_skips_its_input_gradient(monkeypatch, grid):
    """The fused conv asks convolution_backward for no input gradient when nothing upstream learns."""
    torch.manual_seed(0)
    model = quantized([images(seed=1)], **GRIDS[grid])
    asked = []
    real = torch.ops.aten.convolution_backward

    class Spy:
        def __call__(self, *args):
            asked.append(tuple(args[-1]))
            return real(*args)

    import yoloq.quant.fused_conv as fused

    monkeypatch.setattr(fused.torch.ops.aten, "convolution_backward", Spy())
    model.stem(images(n=2, seed=5)).sum().backward()
    assert asked == [(False, True, True)]
    assert isinstance(model.stem, QuantConv2d)
