"""Quantization settings, validated once so that later code can trust them."""

from dataclasses import dataclass

BITS_RANGE = (2, 8)
ACT_SIGNED_CHOICES = ("auto", "signed", "unsigned")
SCALE_INIT_CHOICES = ("lsq", "mse", "minmax")
ZERO_POINT_CHOICES = ("float", "integer")


class QuantConfigError(ValueError):
    """An invalid quantization setting; the message is one line naming the field and the fix."""


def _is_int(value) -> bool:
    # bool is a subclass of int, but `w_bits: true` in a config is a mistake, not 1 bit.
    return isinstance(value, int) and not isinstance(value, bool)


def _check_bits(field: str, value, allow_none: bool = False) -> None:
    lo, hi = BITS_RANGE
    hint = f"use an integer from {lo} to {hi}" + (" or null" if allow_none else "")
    if value is None and allow_none:
        return
    if not _is_int(value):
        raise QuantConfigError(f"quant.{field}={value!r} is not an integer: {hint}")
    if not lo <= value <= hi:
        raise QuantConfigError(f"quant.{field}={value!r} is out of range: {hint}")


def _check_bool(field: str, value) -> None:
    if not isinstance(value, bool):
        raise QuantConfigError(f"quant.{field}={value!r} is not a boolean: use true or false")


def _check_choice(field: str, value, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise QuantConfigError(
            f"quant.{field}={value!r} is not a valid choice: use one of {', '.join(choices)}"
        )


@dataclass
class QuantConfig:
    """How weights and conv inputs are fake-quantized.

    per_channel applies to weights only; activations always use one scale per tensor.
    act_signed="auto" makes an activation quantizer signed iff its calibration minimum is < 0.
    act_asymmetric uses an unsigned grid 0..2^b-1 plus a learnable offset (LSQ+).
    act_zero_point (asymmetric only): "float" keeps LSQ+'s offset as it is learned; "integer" rounds it to a whole
    number of steps during QAT, so that an integer runtime's uint8 zero point expresses it exactly.
    first_last_bits is used for the high-precision layers (None: the same as w_bits/a_bits).
    input_grid: an activation quantizer of 8 or more bits whose calibration inputs all lie on the 8-bit image
    grid k/255 in [0, 1] (the stem conv's input: uint8 images / 255) keeps that grid, unsigned with the fixed
    scale 1/255 (asymmetric grids too, with the offset fixed at 0): exact, nothing to learn, and the stem needs no
    input gradient.
    """

    w_bits: int = 4
    a_bits: int = 4
    per_channel: bool = False
    act_signed: str = "auto"
    act_asymmetric: bool = False
    act_zero_point: str = "float"
    first_last_bits: int | None = 8
    scale_init: str = "mse"
    input_grid: bool = True

    def __post_init__(self) -> None:
        _check_bits("w_bits", self.w_bits)
        _check_bits("a_bits", self.a_bits)
        _check_bool("per_channel", self.per_channel)
        _check_choice("act_signed", self.act_signed, ACT_SIGNED_CHOICES)
        _check_bool("act_asymmetric", self.act_asymmetric)
        _check_choice("act_zero_point", self.act_zero_point, ZERO_POINT_CHOICES)
        _check_bits("first_last_bits", self.first_last_bits, allow_none=True)
        _check_choice("scale_init", self.scale_init, SCALE_INIT_CHOICES)
        _check_bool("input_grid", self.input_grid)
        if self.act_asymmetric and self.act_signed == "signed":
            raise QuantConfigError(
                "quant.act_signed='signed' conflicts with quant.act_asymmetric=True: "
                "the asymmetric grid is unsigned, use act_signed auto or unsigned"
            )
        if self.act_zero_point == "integer" and not self.act_asymmetric:
            raise QuantConfigError(
                "quant.act_zero_point='integer' needs quant.act_asymmetric=True: a symmetric grid's zero point is 0"
            )

    def for_layer(self, high_precision: bool) -> tuple[int, int]:
        """(w_bits, a_bits) for a layer; high-precision layers use first_last_bits when set."""
        if high_precision and self.first_last_bits is not None:
            return self.first_last_bits, self.first_last_bits
        return self.w_bits, self.a_bits
