"""Choosing a plan: per group of layers that must share a precision, a cost (BOPs) and an estimated gain for
each candidate bit width; the exact knapsack picks the best plan within the budget. The first and last layers
stay at their rule's bits (8) and count against the budget at that cost."""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from yoloq.mixed.cost import bops
from yoloq.mixed.knapsack import Option, solve, spend_leftover


@dataclass
class Choice:
    """The knapsack's answer: bits per layer, and the figures written to layer_bits.yaml."""

    plan: dict[str, tuple[int, int]]
    group_bits: list[int]
    bops: int
    budget_bops: int
    predicted_gain: float
    raised_to_fill: int = 0  # groups kept higher than the optimum needs, in budget it left, at no loss of gain


def uniform_bops(macs: Mapping[str, int], bits: float, fixed: Mapping[str, tuple[int, int]]) -> float:
    """BOPs of the model at uniform WbAb with the fixed layers (first/last) at their own bits (b may be
    fractional: budget=2.5 lies between W2A2's and W3A3's cost)."""
    return bops(macs, {n: fixed.get(n, (bits, bits)) for n in macs})


def choose(groups: list[list[str]], macs: Mapping[str, int], choices: list[int],
           gain: Callable[[list[str], int], float], budget_bops: int,
           fixed: Mapping[str, tuple[int, int]], prefer: Callable[[list[str]], float] | None = None) -> Choice:
    """The plan of highest summed gain whose BOPs (fixed layers included) are within budget_bops; weights and
    activations of a group take the same bit width b (WbAb, as the budget's uniform models). Budget the optimum
    leaves unspent goes to groups whose higher bits gain no less, highest `prefer` first (ALPS: the raw, unclipped
    drop), so that equal gains do not make the plan cheaper than its budget."""
    free = [g for g in groups if not set(g) & set(fixed)]
    fixed_cost = bops({n: macs[n] for n in fixed}, fixed)
    options = [[Option(sum(macs[n] for n in g) * b * b, gain(g, b)) for b in choices] for g in free]
    optimum, _, _ = solve(options, budget_bops - fixed_cost)
    order = sorted(range(len(free)), key=lambda k: -prefer(free[k])) if prefer else range(len(free))
    picks = spend_leftover(options, optimum, budget_bops - fixed_cost, order)
    plan = {n: (choices[i], choices[i]) for g, i in zip(free, picks) for n in g}
    total = bops(macs, {**{n: fixed[n] for n in fixed}, **plan})
    raised = sum(a != b for a, b in zip(picks, optimum))
    return Choice(plan, [choices[i] for i in picks], total, budget_bops, sum(o[i].gain for o, i in zip(options, picks)),
                  raised)


def random_gains(seed: int) -> Callable[[list[str], int], float]:
    """A random plan of the budget: random gains (one draw per group and bit width, more bits never worth less),
    so the knapsack fills the budget with an arbitrary set of layers kept high."""
    rng = random.Random(seed)
    drawn: dict[tuple[str, ...], float] = {}

    def gain(group: list[str], b: int) -> float:
        key = tuple(group)
        if key not in drawn:
            drawn[key] = rng.random()
        return drawn[key] * b

    return gain
