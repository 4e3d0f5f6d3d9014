import pytest
import torch

from yoloq.quant import LSQQuantizer


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(bits=1), "bits=1"),
        (dict(bits=4, init_method="percentile"), "init_method"),
        (dict(bits=4, signed=True, asymmetric=True), "asymmetric"),
        (dict(bits=4, per_channel=True, per_sample=True), "per_sample"),
    ],
)
def test_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LSQQuantizer(**kwargs)


def test_state_lives_in_the_state_dict():
    q = LSQQuantizer(4, per_channel=True, num_channels=3, asymmetric=True, signed=None)
    state = q.state_dict()
    assert set(state) == {"scale", "offset", "signed", "initialized"}
    assert state["scale"].shape == (3,) and state["signed"].dtype == torch.bool
    assert set(LSQQuantizer(4).state_dict()) == {"scale", "signed", "initialized"}
    assert LSQQuantizer(4).state_dict()["scale"].shape == ()


def test_set_signed_updates_the_grid():
    q = LSQQuantizer(3, signed=True)
    assert (q.qn, q.qp) == (4, 3)
    q.set_signed(False)
    assert (q.qn, q.qp) == (0, 7) and not q.signed
    with pytest.raises(ValueError):
        LSQQuantizer(3, signed=None, asymmetric=True).set_signed(True)


def test_extra_repr():
    q = LSQQuantizer(4, signed=None)
    assert q.extra_repr() == "bits=4, signed=auto, per_channel=False, asymmetric=False"
    q.init_from(torch.rand(10))
    assert q.extra_repr() == "bits=4, signed=False, per_channel=False, asymmetric=False"


def test_observing_passes_input_through():
    q = LSQQuantizer(4, signed=None)
    q.start_observing()
    x = torch.randn(2, 3)
    assert q(x) is x and q.observing and not q.initialized
    observer = q.stop_observing()
    assert not q.observing and observer.values.numel() == 6
    with pytest.raises(ValueError, match="per-channel"):
        LSQQuantizer(4, per_channel=True, num_channels=2).start_observing()
