import math

import pytest
import torch

from yoloq.quant import LSQQuantizer
from yoloq.quant.grid import fake_quantize
from yoloq.quant.observer import SampleObserver
from yoloq.quant.scale_init import MSE_FRACTIONS


def quant_error(q: LSQQuantizer, x: torch.Tensor) -> float:
    with torch.no_grad():
        return (q(x) - x).square().mean().item()


def heavy_tailed(*shape, seed=0):
    # Gaussian with a log-normal spread: a few values far out in the tails, like real weights.
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=gen) * torch.exp(torch.randn(*shape, generator=gen))


def test_lsq_init_formula():
    # 4-bit, auto sign: min < 0 -> signed, Qp = 7. mean|x| = 1.5 -> s = 2*1.5/sqrt(7) = 1.1338934
    q = LSQQuantizer(4, signed=None, init_method="lsq")
    q.init_from(torch.tensor([-1.0, 1.0, 2.0, -2.0]))
    assert q.qn == 8 and q.qp == 7
    assert q.scale.item() == pytest.approx(1.1338934, abs=1e-6)


def test_minmax_init_symmetric_and_asymmetric():
    q = LSQQuantizer(4, signed=True, init_method="minmax")
    q.init_from(torch.tensor([-1.0, 1.0, 2.0, -2.0]))
    assert q.scale.item() == pytest.approx(2 / 7)
    # Asymmetric 2-bit: s = (max - min)/(2^2 - 1) = 3/3, offset = min.
    q = LSQQuantizer(2, signed=None, asymmetric=True, init_method="minmax")
    q.init_from(torch.tensor([-0.5, 1.0, 2.5]))
    assert (q.scale.item(), q.offset.item()) == pytest.approx((1.0, -0.5))
    assert q.qn == 0 and q.qp == 3


def test_minmax_init_with_an_integer_zero_point():
    # 2-bit: s = (2.3 - -0.7) / 3 = 1, z = round(0.7) = 1, so the offset is -z * s = -1 (a whole step).
    q = LSQQuantizer(2, signed=None, asymmetric=True, integer_zero_point=True, init_method="minmax")
    q.init_from(torch.tensor([-0.7, 1.0, 2.3]))
    assert (q.scale.item(), q.offset.item(), int(q.zero_point())) == pytest.approx((1.0, -1.0, 1))


def test_mse_init_searches_the_scale_with_its_rounded_zero_point():
    # A LeakyReLU-like activation: a short negative tail and a long positive one. Rounding the zero point after
    # a search made for the float offset shifts the grid; searching with each candidate's own z does better.
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4096, generator=gen) * 1.5
    x = torch.where(x < 0, 0.1 * x, x)

    def error(q):
        with torch.no_grad():
            return float((q(x) - x).square().mean())

    joint = LSQQuantizer(3, signed=None, asymmetric=True, integer_zero_point=True)
    joint.init_from(x)
    z = int(joint.zero_point())
    assert 0 < z < 7 and joint.offset.item() == pytest.approx(-z * joint.scale.item())
    rounded_after = LSQQuantizer(3, signed=None, asymmetric=True)
    rounded_after.init_from(x)
    rounded_after.integer_zero_point = True  # the float search's scale and offset, then z rounded
    assert error(joint) < error(rounded_after)


def test_auto_sign_follows_the_minimum():
    q = LSQQuantizer(4, signed=None)
    q.init_from(torch.linspace(0.01, 1, 100))
    assert not q.signed and q.qn == 0 and q.qp == 15
    q = LSQQuantizer(4, signed=None)
    q.init_from(torch.linspace(-0.01, 1, 100))  # (rand() - 0.01 had no negative value in 37% of draws)
    assert q.signed and q.qn == 8 and q.qp == 7


def test_mse_beats_minmax_on_heavy_tails():
    x = heavy_tailed(10_000)
    errors = {}
    for method in ("mse", "minmax", "lsq"):
        q = LSQQuantizer(4, signed=True, init_method=method)
        q.init_from(x)
        errors[method] = quant_error(q, x)
    assert errors["mse"] < errors["minmax"]
    assert errors["mse"] <= errors["lsq"]


def test_mse_picks_the_best_candidate():
    x = heavy_tailed(4096)
    q = LSQQuantizer(3, signed=True, init_method="mse")
    q.init_from(x)
    chosen = quant_error(q, x)
    max_scale = x.abs().max() / q.qp
    for fraction in MSE_FRACTIONS:
        error = (fake_quantize(x, max_scale * fraction, q.qn, q.qp) - x).square().mean().item()
        assert chosen <= error + 1e-9


def test_mse_per_channel_searches_each_channel_alone():
    w = heavy_tailed(6, 4, 3, 3) * torch.arange(1.0, 7.0).view(6, 1, 1, 1)
    q = LSQQuantizer(4, signed=True, per_channel=True, num_channels=6, init_method="mse")
    q.init_from(w)
    for c in range(6):
        alone = LSQQuantizer(4, signed=True, init_method="mse")
        alone.init_from(w[c])
        assert q.scale[c].item() == pytest.approx(alone.scale.item(), rel=1e-6)


def test_all_zero_input_gives_a_usable_scale():
    for method in ("lsq", "mse", "minmax"):
        q = LSQQuantizer(4, signed=None, init_method=method)
        q.init_from(torch.zeros(10))
        assert q.scale.item() > 0
        assert torch.equal(q(torch.zeros(10)), torch.zeros(10))


def test_first_batch_init():
    q = LSQQuantizer(4, signed=None, init_method="minmax")
    x = torch.tensor([0.0, 1.5, 3.75])
    assert torch.equal(q(x), x)  # unsigned, s = 3.75 / 15 = 0.25: all three values are on the grid
    assert q.initialized and q.scale.item() == 0.25


def test_observer_is_bounded_exact_in_range_and_deterministic():
    batches = [heavy_tailed(1000, seed=i) for i in range(5)]
    samples = []
    for _ in range(2):
        observer = SampleObserver(max_samples=256, seed=0)
        for batch in batches:
            observer.update(batch)
        samples.append(observer.values)
    everything = torch.cat(batches)
    assert samples[0].numel() == 256 and torch.equal(samples[0], samples[1])
    assert observer.min == everything.min() and observer.max == everything.max()
    assert torch.isin(samples[0], everything).all()
    # A uniform sample over all batches: later batches do not crowd out earlier ones.
    from_first = torch.isin(samples[0], batches[0]).sum().item()
    assert abs(from_first - 256 / 5) < 4 * math.sqrt(256 * 0.2 * 0.8)
