"""Quantization correction: identity init, folding into BN and into the conv, the deploy form."""

import copy

import pytest
import torch
from torch import nn

from yoloq.quant import QuantConfig, quantize_model
from yoloq.quant.correction import ChannelAffine, add_corrections, fold_corrections, match_state
from yoloq.quant.deploy import DeployConv2d, to_deploy
from yoloq.quant.prepare import soft_rounding


class Block(nn.Module):
    """ultralytics' Conv shape: conv -> bn -> act."""

    def __init__(self, c1, c2):
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(c2)
        self.act = nn.SiLU()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


def toy_model(seed=0, per_channel=False):
    torch.manual_seed(seed)
    model = nn.Sequential(Block(3, 8), Block(8, 8), nn.Conv2d(8, 5, 1))  # the last conv has no BN, like Detect's
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):  # non-trivial eval statistics, some negative BN weights
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(-1.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    x = torch.randn(4, 3, 12, 12)
    quantize_model(model, QuantConfig(w_bits=4, a_bits=4, per_channel=per_channel), [x], high_precision=[])
    return model.eval(), x


def randomise(model, seed=1):
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, ChannelAffine):
            m.gamma.data = 1 + 0.3 * torch.rand(m.gamma.shape, generator=g)
            m.beta.data = 0.5 * torch.randn(m.beta.shape, generator=g)


def test_identity_init_leaves_outputs_unchanged():
    model, x = toy_model()
    before = model(x)
    params = add_corrections(model)
    assert len(params) == 2 * 3 and all(p.requires_grad for p in params)
    assert torch.equal(model(x), before)


@pytest.mark.parametrize("per_channel_weights", [False, True])
@pytest.mark.parametrize("per_channel_qc", [False, True])
def test_fold_gives_the_same_outputs(per_channel_weights, per_channel_qc):
    model, x = toy_model(per_channel=per_channel_weights)
    add_corrections(model, per_channel=per_channel_qc)
    randomise(model)
    expected = model(x)
    last_int = model[2].weight_quantizer.integers(model[2].weight)
    folded = copy.deepcopy(model)
    assert fold_corrections(folded) == 3
    assert all(m.correction is None for m in (folded[0].conv, folded[1].conv, folded[2]))
    torch.testing.assert_close(folded(x), expected, rtol=1e-4, atol=1e-4)
    # the conv without BN took gamma into a per-channel weight scale, keeping its integers
    assert folded[2].weight_quantizer.per_channel
    assert torch.equal(folded[2].weight_quantizer.integers(folded[2].weight), last_int)


def test_bn_fold_matches_the_paper_formula():
    model, _ = toy_model()
    add_corrections(model)
    randomise(model)
    bn, qc = model[0].bn, model[0].conv.correction
    w, b, mu, sigma = bn.weight.clone(), bn.bias.clone(), bn.running_mean.clone(), torch.sqrt(bn.running_var + bn.eps)
    fold_corrections(model)
    torch.testing.assert_close(bn.weight, w * qc.gamma)
    torch.testing.assert_close(bn.bias, b + w * (qc.beta - mu + qc.gamma * mu) / sigma)
    torch.testing.assert_close(torch.sqrt(bn.running_var + bn.eps), sigma)  # statistics unchanged


@pytest.mark.parametrize("scale, shift", [(True, False), (False, True)])
def test_scale_only_and_shift_only(scale, shift):
    model, x = toy_model()
    params = add_corrections(model, scale=scale, shift=shift)
    assert len(params) == 3
    qc = model[0].conv.correction
    assert isinstance(qc.gamma, nn.Parameter) == scale and isinstance(qc.beta, nn.Parameter) == shift


@pytest.mark.parametrize("per_channel", [False, True])
def test_deploy_form_keeps_integers_and_outputs(per_channel):
    model, x = toy_model(per_channel=per_channel)
    add_corrections(model)
    randomise(model)
    ints = [c.weight_quantizer.integers(c.weight) for c in (model[0].conv, model[1].conv, model[2])]
    expected = model(x)
    deployed = to_deploy(copy.deepcopy(model))
    convs = [deployed[0].conv, deployed[1].conv, deployed[2]]
    assert all(isinstance(c, DeployConv2d) for c in convs)
    assert all(isinstance(b.bn, nn.Identity) for b in (deployed[0], deployed[1]))
    for c, w_int in zip(convs, ints):
        assert c.weight_int.dtype == torch.int8 and torch.equal(c.weight_int.float(), w_int)  # bit-identical
        assert c.channel_scale.shape == (c.weight_int.shape[0],)  # per-tensor became per-channel
    torch.testing.assert_close(deployed(x), expected, rtol=1e-4, atol=1e-4)


def test_match_state_rebuilds_qc_and_folded_structure():
    model, x = toy_model()
    add_corrections(model)
    randomise(model)
    fresh, _ = toy_model(seed=5)
    match_state(fresh, model.state_dict()).load_state_dict(model.state_dict())
    torch.testing.assert_close(fresh(x), model(x))
    fold_corrections(model)
    fresh, _ = toy_model(seed=5)
    match_state(fresh, model.state_dict()).load_state_dict(model.state_dict())
    torch.testing.assert_close(fresh(x), model(x))


def test_soft_rounding_keeps_values_far_from_integers():
    model, x = toy_model()
    q = model[1].conv.weight_quantizer
    w = torch.tensor([0.1, 0.5, 0.96, 1.3]) * q.scale.detach()  # w/s = 0.1, 0.5, 0.96, 1.3
    with soft_rounding(model, 0.45):
        soft = q(w) / q.scale.detach()
    torch.testing.assert_close(soft, torch.tensor([0.0, 0.5, 1.0, 1.0]))
    assert q.soft_round is None  # restored
    torch.testing.assert_close(q(w) / q.scale.detach(), torch.tensor([0.0, 0.0, 1.0, 1.0]))
