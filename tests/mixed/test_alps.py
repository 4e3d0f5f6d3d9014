"""ALPS's pieces: the held-out split, lowering a layer group in place, and the knapsack gains from held-out mAP."""

import pytest
import torch
from torch import nn

from yoloq.errors import UserError
from yoloq.mixed.alps import alps_gain, check_high, finetune_fraction, layer_bits, lower, split_indices
from yoloq.quant import QuantConfig, quantize_model


def test_the_held_out_images_are_never_fine_tuned_on():
    finetune, held = split_indices(100, holdout=20, fraction=0.5)
    assert held == list(range(80, 100)) and finetune == list(range(40))
    finetune, held = split_indices(100, holdout=50, fraction=1.0)
    assert not set(finetune) & set(held) and len(finetune) + len(held) == 100
    with pytest.raises(UserError, match="mixed.alps.holdout=60 must be from 1 to half"):
        split_indices(100, holdout=60, fraction=0.5)
    with pytest.raises(UserError, match=r"mixed.alps.fraction=0 must be in \(0, 1\]"):
        split_indices(100, holdout=10, fraction=0)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 3, padding=1)
        self.c = nn.Conv2d(8, 8, 1)
        self.d = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        h = torch.relu(self.a(x))
        return self.d(torch.relu(self.b(h) + self.c(h)))  # b and c read one activation


def quantized_net(bits=4):
    torch.manual_seed(0)
    calib = [torch.randn(2, 3, 16, 16) for _ in range(2)]
    return quantize_model(Net(), QuantConfig(w_bits=bits, a_bits=bits), calib, ["a", "d"]), calib


def test_the_fine_tuning_share_is_one_epoch_on_a_gpu_and_a_tenth_on_cpu_unless_given():
    assert finetune_fraction("auto", torch.device("cuda")) == 1.0
    assert finetune_fraction("auto", torch.device("cpu")) == 0.1
    assert finetune_fraction(0.5, torch.device("cuda")) == 0.5
    with pytest.raises(UserError, match=r"mixed.alps.fraction=half is not a number: .* or auto"):
        finetune_fraction("half", torch.device("cpu"))


def test_lowering_a_group_reinitialises_only_its_quantizers():
    model, calib = quantized_net()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    lower(model, ["b", "c"], 2, calib)
    assert layer_bits(model) == {"a": (8, 8), "b": (2, 2), "c": (2, 2), "d": (8, 8)}
    after = model.state_dict()
    for name in ("b", "c"):  # new grids, scales fitted to them: a 2-bit grid needs a larger step than a 4-bit one
        q = getattr(model, name).weight_quantizer
        assert (q.qn, q.qp) == (2, 1)
        assert after[f"{name}.weight_quantizer.scale"] > before[f"{name}.weight_quantizer.scale"]
        assert after[f"{name}.act_quantizer.scale"] > before[f"{name}.act_quantizer.scale"]
    for k in before:  # weights and every other layer's quantizers as they were
        if not k.startswith(("b.weight_quantizer", "b.act_quantizer", "c.weight_quantizer", "c.act_quantizer")):
            assert torch.equal(before[k], after[k]), k
    assert model.b.training and model(calib[0]).isfinite().all()
    with pytest.raises(UserError, match=r"ALPS starts from a model at W4A4, but b .* W2A2"):
        check_high(model, [["b", "c"]], 4)
    check_high(quantized_net()[0], [["b", "c"]], 4)


def test_gains_are_the_mAP_a_lowering_costs():
    scores = {"base": 0.50, "g1@3": 0.49, "g1@2": 0.40, "g2@3": 0.52, "g2@2": 0.48}
    gain = alps_gain(scores, [4, 3, 2])
    assert gain(["g1"], 4) == pytest.approx(0.10) and gain(["g1"], 3) == pytest.approx(0.09)
    assert gain(["g1"], 2) == 0.0
    # g2 at 3 bits scored above the baseline (noise): no drop there, so 3 bits keep all of the 2-bit drop's gain
    assert gain(["g2"], 3) == pytest.approx(0.02) and gain(["g2"], 4) == pytest.approx(0.02)


def test_alps_scores_each_group_on_held_out_images_and_continues_a_stopped_search(tiny_cfg, tmp_path):
    import copy

    from yoloq.factory import build_data, calibration_batches, float_model
    from yoloq.mixed.alps import held_out_data, alps_scores
    from yoloq.mixed.groups import shared_input_groups
    from yoloq.models.build import high_precision_layers
    from yoloq.config import quant_config

    cfg = tiny_cfg("mixed.alps.holdout=16", "mixed.alps.fraction=0.5")
    device = torch.device("cpu")
    data = build_data(cfg, device)
    held = held_out_data(cfg, data, device)
    tuned, scored = held.loader.dataset.im_files, held.evaluate.loader.dataset.im_files
    assert (len(tuned), len(scored)) == (16, 16) and not set(tuned) & set(scored)
    assert set(scored) <= {str(p) for p in data.info.images(data.info.train_split).iterdir()}

    model = float_model(cfg, data)
    high = high_precision_layers(model)
    groups = [g for g in shared_input_groups(model) if not set(g) & set(high)][:2]
    calib = calibration_batches(cfg, data, device)
    model = quantize_model(copy.deepcopy(model), quant_config(cfg), calib, high,
                           layer_bits={n: (4, 4) for g in groups for n in g})
    path, identity = tmp_path / "alps_scores.json", {"source": "test"}
    scores, cost = alps_scores(cfg, model, groups, [4, 3, 2], held, calib, device, path, identity, progress=False)
    assert set(scores) == {"base"} | {f"{g[0]}@{b}" for g in groups for b in (3, 2)}
    assert cost["alps_candidates"] == 5 and cost["alps_finetune_steps"] == 5 * 2 == 5 * cost["alps_steps_per_candidate"]
    assert layer_bits(model)[groups[0][0]] == (4, 4)  # every candidate fine-tunes a copy

    # the same search again (e.g. after a stop, or another budget): every candidate's score is reused, nothing
    # fine-tunes, and the cost reported is still the search's
    first = cost
    again, cost = alps_scores(cfg, model, groups, [4, 3, 2], held, calib, device, path, identity, progress=False)
    assert again == scores and cost["alps_reused_candidates"] == 5
    assert cost["alps_finetune_steps"] == first["alps_finetune_steps"] == 10
    assert first["alps_seconds"] > 1 and cost["alps_seconds"] == pytest.approx(first["alps_seconds"], abs=0.5)
