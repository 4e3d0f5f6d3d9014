"""Layers that must share a precision: convs that read the same activation tensor (e.g. a C3 block's cv1 and
cv2, or the box and class branches of a head level). At deploy one integer tensor feeds them all, so their
activation bit width is one choice; yoloq makes their weight bit width the same choice too (EAGL/ALPS seed,
§3.4.1). Found from a forward pass: two convs whose inputs are the same storage, offset, shape and strides."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from yoloq.errors import UserError
from yoloq.mixed.cost import probe_forward
from yoloq.quant.prepare import quantizable_convs


def _tensor_key(x: torch.Tensor) -> tuple:
    return (x.untyped_storage().data_ptr(), x.storage_offset(), tuple(x.shape), tuple(x.stride()))


def shared_input_groups(model: nn.Module, imgsz: int = 64, channels: int = 3) -> list[list[str]]:
    """Every quantizable conv in exactly one group, groups in the order their first conv is registered."""
    convs = quantizable_convs(model)
    names = {id(m): n for n, m in convs.items()}
    readers: dict[tuple, list[str]] = {}
    held = []  # every input stays alive through the pass, so a freed tensor's memory cannot be reused and match

    def hook(module, inputs):
        held.append(inputs[0])
        readers.setdefault(_tensor_key(inputs[0]), []).append(names[id(module)])

    probe_forward(model, imgsz, channels, [m.register_forward_pre_hook(hook) for m in convs.values()])
    group_of = {}
    for members in readers.values():
        for n in members:
            group_of.setdefault(n, members)  # a conv called twice keeps its first group
    order = list(convs)
    groups, seen = [], set()
    for n in order:
        if n in group_of and n not in seen:
            members = sorted(dict.fromkeys(group_of[n]), key=order.index)
            groups.append(members)
            seen.update(members)
    return groups + [[n] for n in order if n not in seen]  # convs a forward pass did not reach


def check_shared_precision(groups: list[list[str]], bits: Mapping[str, tuple[int, int]]) -> None:
    """One line naming two layers that read the same activation at different activation bit widths."""
    for group in groups:
        members = [n for n in group if n in bits]
        for other in members[1:]:
            first = members[0]
            if bits[other][1] != bits[first][1]:
                raise UserError(f"layers {first} (a_bits={bits[first][1]}) and {other} (a_bits={bits[other][1]}) read "
                                "the same activation at different precisions: give every layer of that group the "
                                f"same a_bits (group: {', '.join(group)})")
