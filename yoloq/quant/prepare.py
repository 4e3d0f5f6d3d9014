"""Turning a float model into a fake-quantized one and back, and calibrating its quantizers."""

import contextlib
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping

import torch
from torch import nn

from .config import QuantConfig, QuantConfigError
from .lsq import LSQQuantizer
from .qconv import QuantConv2d
from .qconv_transpose import QuantConvTranspose2d


QUANTIZED = {nn.Conv2d: QuantConv2d, nn.ConvTranspose2d: QuantConvTranspose2d}


def _quantizable_convs(model: nn.Module) -> dict[str, nn.Conv2d]:
    """Every name of every conv (and transposed conv) to quantize, in registration order.

    Exact type only: a Conv2d subclass may change forward, which the copy would silently lose.
    Convs whose weight is frozen (e.g. a fixed projection) are not trained, so stay float.
    """
    return {
        name: m
        for name, m in model.named_modules(remove_duplicate=False)
        if type(m) in QUANTIZED and m.weight.requires_grad
    }


def quantizable_convs(model: nn.Module) -> dict[str, nn.Module]:
    """The convs a bit width applies to, by name: those quantize_model would quantize in a float model, the
    quantized ones in a quantized model (frozen or not)."""
    return {
        name: m
        for name, m in model.named_modules(remove_duplicate=False)
        if (type(m) in QUANTIZED and m.weight.requires_grad) or type(m) in QUANTIZED.values()
    }


def _swap(model: nn.Module, replacements: dict[int, nn.Module]) -> nn.Module:
    """Replaces modules (keyed by id) wherever they are registered; shared modules stay shared."""
    for parent in list(model.modules()):
        # _modules, not named_children(): that skips a module registered twice in one parent.
        for name, child in list(parent._modules.items()):
            if id(child) in replacements:
                setattr(parent, name, replacements[id(child)])
    return replacements.get(id(model), model)


def quantize_model(
    model: nn.Module,
    config: QuantConfig,
    calib_batches: Iterable | None = None,
    high_precision: Iterable[str] | str | None = None,
    *,
    forward: Callable[[nn.Module, object], object] | None = None,
    layer_bits: Mapping[str, tuple[int, int]] | None = None,
) -> nn.Module:
    """Replaces, in place, every trainable nn.Conv2d with a QuantConv2d (nn.ConvTranspose2d with a
    QuantConvTranspose2d) and returns the model.

    high_precision: module names (as in named_modules) quantized at config.first_last_bits;
    None means the first and the last quantizable conv in registration order. Convs with
    frozen weights stay float and do not count as first/last. The new convs hold copies of the
    weights, so build optimizers after this call. With calib_batches, calibrate() is run
    (forward as there). layer_bits: (w_bits, a_bits) by module name, over the config's rule (mixed
    precision, yoloq/mixed/plan.py); names that are no quantizable conv raise QuantConfigError.
    """
    convs = _quantizable_convs(model)
    if high_precision is None:
        ordered = list(convs.values())
        high = {id(ordered[0]), id(ordered[-1])} if ordered else set()
    else:
        names = [high_precision] if isinstance(high_precision, str) else list(high_precision)
        unknown = [name for name in names if name not in convs]
        if unknown:
            examples = ", ".join(repr(name) for name in list(convs)[:3])
            raise QuantConfigError(
                f"high_precision names no trainable nn.Conv2d: {', '.join(map(repr, unknown))}; "
                f"use names from model.named_modules(), e.g. {examples}"
            )
        high = {id(convs[name]) for name in names}

    layer_bits = dict(layer_bits or {})
    unknown = [name for name in layer_bits if name not in convs]
    if unknown:
        raise QuantConfigError(f"layer_bits names no trainable nn.Conv2d: {', '.join(map(repr, unknown[:3]))}; use "
                               f"names from model.named_modules(), e.g. {', '.join(map(repr, list(convs)[1:3]))}")
    planned = {id(convs[name]): bits for name, bits in layer_bits.items()}
    replacements: dict[int, nn.Module] = {}
    for conv in convs.values():
        if id(conv) not in replacements:
            w_bits, a_bits = planned.get(id(conv)) or config.for_layer(id(conv) in high)
            replacements[id(conv)] = QUANTIZED[type(conv)].from_float(conv, w_bits, a_bits, config)
    model = _swap(model, replacements)
    if calib_batches is not None:
        calibrate(model, calib_batches, forward, input_grid=config.input_grid)
    return model


IMAGE_LEVELS = 255  # uint8 images scaled to [0, 1]


def calibrate(
    model: nn.Module, batches: Iterable, forward: Callable[[nn.Module, object], object] | None = None,
    input_grid: bool = False,
) -> None:
    """Initialises every quantizer from data, deterministically.

    Weight quantizers are initialised from their weights first, so that activation statistics
    are those of the quantized-weight model. Activation quantizers then observe the model run
    in eval mode without gradients on every batch (forward(model, batch), default model(batch))
    and afterwards decide their sign (auto) and scale/offset. With input_grid, a per-tensor quantizer of
    8 or more bits that saw only 8-bit image values (k/255) gets that grid, fixed (QuantConfig.input_grid; an
    asymmetric one with its offset fixed at 0).
    The train/eval flag of every module is restored.
    """
    weight_quantizers = set()
    for m in model.modules():
        if isinstance(m, (QuantConv2d, QuantConvTranspose2d)) and m.weight_quantizer is not None:
            m.weight_quantizer.init_from(m.weight)
            weight_quantizers.add(id(m.weight_quantizer))
    observed = [(name, q) for name, q in iter_quantizers(model) if id(q) not in weight_quantizers]

    run = forward if forward is not None else (lambda m, batch: m(batch))
    modes = {m: m.training for m in model.modules()}
    num_batches = 0
    try:
        for _, q in observed:
            q.start_observing()
        model.eval()
        with torch.no_grad():
            for batch in batches:
                run(model, batch)
                num_batches += 1
    finally:
        observers = [q.stop_observing() for _, q in observed]
        for m, training in modes.items():
            m.training = training
    if num_batches == 0:
        raise ValueError("calibrate got no batches: pass a non-empty iterable of inputs")

    unseen = []
    for (name, q), observer in zip(observed, observers):
        if observer.empty:
            unseen.append(name)
        elif input_grid and q.bits >= 8 and not q.per_channel and observer.on_grid(IMAGE_LEVELS):
            q.fix_scale(1.0 / IMAGE_LEVELS, signed=False)
        else:
            q.init_from_observer(observer)
    if unseen:
        warnings.warn(
            f"quantizers not reached during calibration keep their state (uninitialised ones "
            f"initialise on their first input): {', '.join(unseen)}",
            stacklevel=2,
        )


def iter_quantizers(model: nn.Module) -> Iterator[tuple[str, LSQQuantizer]]:
    for name, m in model.named_modules():
        if isinstance(m, LSQQuantizer):
            yield name, m


def quant_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Scales and offsets of all quantizers (they are also in model.parameters())."""
    return [p for _, q in iter_quantizers(model) for p in (q.scale, q.offset) if p is not None]


def dequantize_model(model: nn.Module) -> nn.Module:
    """Replaces, in place, every QuantConv2d (QuantConvTranspose2d) with a float nn.Conv2d (nn.ConvTranspose2d)
    holding its latent weights."""
    replacements = {id(m): m.to_float() for m in model.modules()
                    if isinstance(m, (QuantConv2d, QuantConvTranspose2d))}
    return _swap(model, replacements)


@contextlib.contextmanager
def soft_rounding(model: nn.Module, k: float | None):
    """Within the block every quantizer soft-rounds (round only within k of an integer); k=None: unchanged."""
    quantizers = [q for _, q in iter_quantizers(model)]
    for q in quantizers:
        q.soft_round = k
    try:
        yield model
    finally:
        for q in quantizers:
            q.soft_round = None
