"""Mixed precision's pieces: BOPs of a hand-counted network, the knapsack against brute force, and the groups
of layers that read one activation on yolov5n's graph."""

import itertools
import random

import pytest
import torch
from torch import nn

from yoloq.errors import UserError
from yoloq.mixed.cost import bops, conv_macs, weight_bytes
from yoloq.mixed.eagl import eagl_gain, weight_entropy
from yoloq.mixed.groups import check_shared_precision, shared_input_groups
from yoloq.mixed.knapsack import Option, solve, spend_leftover
from yoloq.mixed.search import choose
from yoloq.models.build import build_model


class Tiny(nn.Module):
    """3 -> 8 (3x3, 16x16 out) -> 4 (1x1, stride 2: 8x8 out), depthwise 4 (3x3 groups 4), up x2 transposed."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 4, 1, stride=2)
        self.c = nn.Conv2d(4, 4, 3, padding=1, groups=4)
        self.d = nn.ConvTranspose2d(4, 2, 2, stride=2)

    def forward(self, x):
        return self.d(self.c(self.b(self.a(x))))


def test_macs_and_bops_of_a_hand_counted_network():
    macs = conv_macs(Tiny(), imgsz=16)
    assert macs == {"a": 16 * 16 * 8 * 3 * 9,       # output elements x (in channels x kernel area)
                    "b": 8 * 8 * 4 * 8,
                    "c": 8 * 8 * 4 * 9,              # depthwise: one input channel per output
                    "d": 8 * 8 * 4 * 2 * 4}          # transposed: each input element to 2 channels x 2x2
    bits = {"a": (8, 8), "b": (4, 4), "c": (2, 3), "d": (8, 8)}
    assert bops(macs, bits) == 55296 * 64 + 2048 * 16 + 2304 * 6 + 2048 * 64
    assert weight_bytes(Tiny(), bits) == (8 * 3 * 9 * 8 + 4 * 8 * 4 + 4 * 9 * 2 + 4 * 2 * 4 * 8) / 8


def brute_force(groups, budget):
    best = None
    for combo in itertools.product(*[range(len(g)) for g in groups]):
        cost = sum(groups[i][j].cost for i, j in enumerate(combo))
        gain = sum(groups[i][j].gain for i, j in enumerate(combo))
        if cost <= budget and (best is None or gain > best + 1e-12):
            best = gain
    return best


def test_knapsack_is_exact_against_brute_force():
    rng = random.Random(0)
    for _ in range(300):  # 0-1 (two options) and multiple-choice (three) instances, integer and float costs
        groups = [[Option(rng.choice([rng.randint(1, 30), rng.uniform(1, 30)]), rng.uniform(0, 4))
                   for _ in range(rng.choice([2, 3]))] for _ in range(rng.randint(1, 7))]
        budget = rng.uniform(5, 120)
        best = brute_force(groups, budget)
        if best is None:
            with pytest.raises(UserError, match="no precision plan fits the budget"):
                solve(groups, budget)
            continue
        picks, cost, gain = solve(groups, budget)
        assert gain == pytest.approx(best) and cost <= budget
        assert cost == pytest.approx(sum(g[i].cost for g, i in zip(groups, picks)))


def test_unspent_budget_goes_to_groups_of_no_measured_gain_without_losing_gain():
    rng = random.Random(1)
    for _ in range(200):  # many zero gains, as ALPS's clipped drops give: the exact optimum is then often cheap
        groups = [[Option(rng.randint(1, 30) * b * b, rng.choice([0.0, 0.0, rng.uniform(0, 2)]) * (b > 2))
                   for b in (4, 2)] for _ in range(rng.randint(1, 7))]
        groups = [[g[1], g[0]] if rng.random() < 0.5 else g for g in groups]  # option order must not matter
        budget = sum(min(o.cost for o in g) for g in groups) + rng.uniform(0, 400)
        optimum, _, best = solve(groups, budget)
        picks = spend_leftover(groups, optimum, budget, range(len(groups)))
        cost = sum(g[i].cost for g, i in zip(groups, picks))
        assert cost <= budget and sum(g[i].gain for g, i in zip(groups, picks)) == pytest.approx(best)
        for g, i in zip(groups, picks):  # nothing is left that could still be raised at no loss of gain
            assert not any(o.gain >= g[i].gain and g[i].cost < o.cost <= g[i].cost + budget - cost for o in g)


def test_a_plan_of_equal_gains_keeps_the_most_promising_groups_high_within_budget():
    macs = {"first": 10, "a": 10, "b": 10, "c": 10, "last": 10}
    groups = [["first"], ["a"], ["b"], ["c"], ["last"]]
    fixed = {"first": (8, 8), "last": (8, 8)}
    gain = {("a", 4): 1.0}  # only a showed a drop; b and c none (clipped at zero)
    budget = 2 * 10 * 64 + 10 * (16 + 16 + 4)  # room for a and one more group at 4 bits
    prefer = {"a": 0.1, "b": -0.02, "c": 0.01}.__getitem__  # raw drops: c's lowering looked worse than b's
    choice = choose(groups, macs, [4, 2], lambda g, b: gain.get((g[0], b), 0.0), budget, fixed,
                    prefer=lambda g: prefer(g[0]))
    assert choice.plan == {"a": (4, 4), "b": (2, 2), "c": (4, 4)} and choice.bops == budget
    assert choice.raised_to_fill == 1 and choice.predicted_gain == pytest.approx(1.0)
    cheapest = choose(groups, macs, [4, 2], lambda g, b: gain.get((g[0], b), 0.0), budget - 1, fixed)
    assert cheapest.plan == {"a": (4, 4), "b": (2, 2), "c": (2, 2)} and cheapest.raised_to_fill == 0


def test_groups_on_yolov5n_are_c3_pairs_and_shared_head_inputs():
    groups = shared_input_groups(build_model("yolov5n.yaml", ("a", "b", "c")))
    shared = [g for g in groups if len(g) > 1]
    assert ["model.2.cv1.conv", "model.2.cv2.conv"] in shared          # a C3 block's two branches read x
    assert ["model.13.cv1.conv", "model.13.cv2.conv"] in shared        # ... also after a Concat in the neck
    # P3's output feeds both the downsampling conv to P4 and the head's box and class branches
    assert ["model.18.conv", "model.24.cv2.0.0.conv", "model.24.cv3.0.0.conv"] in shared
    assert sum(len(g) for g in groups) == 75 and len({n for g in groups for n in g}) == 75
    bits = {n: (4, 4) for g in groups for n in g}
    check_shared_precision(groups, bits)
    bits["model.24.cv3.0.0.conv"] = (4, 2)
    with pytest.raises(UserError, match=r"model.18.conv \(a_bits=4\) and model.24.cv3.0.0.conv \(a_bits=2\) read the same activation"):
        check_shared_precision(groups, bits)


def test_entropy_of_weights_on_the_grid():
    uniform = torch.linspace(-1, 1, 16 * 100).reshape(16, 100)  # every 4-bit level about equally often
    assert weight_entropy(uniform, 4) == pytest.approx(4.0, abs=0.1)
    spike = torch.zeros(16, 100)
    spike[0, 0] = 1.0                                            # nearly all weights on one level
    assert weight_entropy(spike, 4) < 0.05
    assert eagl_gain(3.2, 4, 2) == pytest.approx(1.2) and eagl_gain(1.5, 4, 2) == 0.0
