"""Which quantized layer's activation codes differ first between two forms of one model."""

import copy

import torch

from tests.quant.test_quant_correction import toy_model
from yoloq.eval.code_flips import activation_codes, code_flips, flip_summary


def test_identical_models_flip_nothing():
    model, x = toy_model()
    codes = activation_codes(model, x)
    assert list(codes) == ["0.conv", "1.conv", "2"]  # every quantized conv, in forward order
    assert all(c.dtype == torch.int16 for c in codes.values())
    flips = code_flips(model, copy.deepcopy(model), x)
    assert flips == {"0.conv": 0.0, "1.conv": 0.0, "2": 0.0}
    assert flip_summary(flips) == "no activation code differs in 3 quantized layers"


def test_a_change_after_the_first_conv_flips_codes_from_the_second_on():
    model, x = toy_model()
    moved = copy.deepcopy(model)
    with torch.no_grad():  # half a step of the second conv's input quantizer: many codes cross a threshold
        moved[0].bn.bias.add_(0.5 * moved[1].conv.act_quantizer.scale.detach())
    flips = code_flips(model, moved, x)
    assert flips["0.conv"] == 0.0 and flips["1.conv"] > 0.1
    summary = flip_summary(flips)
    assert summary.startswith("activation codes differ in ") and "first at 1.conv" in summary
    assert summary.endswith(f"{100 * flips['2']:.4f}% at the last (2)")
