"""Exact multiple-choice knapsack: one option per group (a bit width), maximising the summed gain subject to a
cost budget. Dynamic programming over the groups on the set of reachable (cost, gain) states, keeping only the
Pareto-optimal ones (no other state is both cheaper and better); with two options per group this is the seed's
0-1 knapsack, with more (bits=[4,3,2]) the multiple-choice one. Exact for any integer or float costs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from yoloq.errors import UserError


@dataclass(frozen=True)
class Option:
    cost: float
    gain: float


def _pareto(states: dict[float, tuple[float, tuple[int, ...]]]) -> dict[float, tuple[float, tuple[int, ...]]]:
    """Keep a state only if every cheaper state has a strictly lower gain."""
    kept, best = {}, float("-inf")
    for cost in sorted(states):
        gain, picks = states[cost]
        if gain > best:
            kept[cost], best = (gain, picks), gain
    return kept


def solve(groups: Sequence[Sequence[Option]], budget: float) -> tuple[list[int], float, float]:
    """(the chosen option index per group, its total cost, its total gain): the highest total gain whose total
    cost is at most budget; among equal gains the cheapest. One line if no choice fits the budget."""
    states: dict[float, tuple[float, tuple[int, ...]]] = {0: (0.0, ())}
    for options in groups:
        grown: dict[float, tuple[float, tuple[int, ...]]] = {}
        for cost, (gain, picks) in states.items():
            for i, opt in enumerate(options):
                c, g = cost + opt.cost, gain + opt.gain
                if c <= budget and (c not in grown or g > grown[c][0]):
                    grown[c] = (g, picks + (i,))
        if not grown:
            cheapest = sum(min(o.cost for o in options) for options in groups)
            raise UserError(f"no precision plan fits the budget {budget:.4g}: the cheapest costs {cheapest:.4g}; "
                            "raise the budget (or lower the low bit width)")
        states = _pareto(grown)
    cost = max(states, key=lambda c: (states[c][0], -c))
    gain, picks = states[cost]
    return list(picks), cost, gain


def spend_leftover(groups: Sequence[Sequence[Option]], picks: list[int], budget: float,
                   order: Sequence[int]) -> list[int]:
    """`solve` returns the cheapest of the plans of highest gain, so where many groups gain nothing measurable (ALPS's
    drops at or below zero, noise) it can leave much of the budget unspent. Raise the groups, in `order` (most
    promising first), each to its costliest option that gains no less and fits what is left: the total gain stays
    the optimum, and layers that showed no drop are kept high rather than lowered for nothing."""
    picks = list(picks)
    left = budget - sum(g[i].cost for g, i in zip(groups, picks))
    for k in order:
        now = groups[k][picks[k]]
        fits = [j for j, o in enumerate(groups[k]) if o.gain >= now.gain and now.cost < o.cost <= now.cost + left]
        if fits:
            j = max(fits, key=lambda j: groups[k][j].cost)
            left -= groups[k][j].cost - now.cost
            picks[k] = j
    return picks
