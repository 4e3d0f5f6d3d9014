import pytest

from yoloq.quant import QuantConfig, QuantConfigError

INVALID = [
    ("w_bits", 9, "out of range"),
    ("w_bits", 1, "out of range"),
    ("w_bits", "4", "not an integer"),
    ("w_bits", True, "not an integer"),
    ("w_bits", 4.0, "not an integer"),
    ("a_bits", 0, "out of range"),
    ("a_bits", None, "not an integer"),
    ("per_channel", "yes", "not a boolean"),
    ("per_channel", 1, "not a boolean"),
    ("act_signed", "maybe", "not a valid choice"),
    ("act_asymmetric", 0, "not a boolean"),
    ("act_zero_point", "int", "not a valid choice"),
    ("first_last_bits", 16, "out of range"),
    ("first_last_bits", False, "not an integer"),
    ("scale_init", "percentile", "not a valid choice"),
]


@pytest.mark.parametrize("field, value, problem", INVALID)
def test_invalid_field_is_named_on_one_line(field, value, problem):
    with pytest.raises(QuantConfigError) as info:
        QuantConfig(**{field: value})
    message = str(info.value)
    assert "\n" not in message
    assert f"quant.{field}={value!r}" in message and problem in message
    assert ": use " in message  # says what would have been right


def test_example_message():
    with pytest.raises(QuantConfigError, match=r"^quant.w_bits=9 is out of range: use an integer from 2 to 8$"):
        QuantConfig(w_bits=9)


def test_asymmetric_activations_cannot_be_forced_signed():
    with pytest.raises(QuantConfigError, match="act_asymmetric") as info:
        QuantConfig(act_asymmetric=True, act_signed="signed")
    assert "\n" not in str(info.value)
    QuantConfig(act_asymmetric=True, act_signed="unsigned")


def test_integer_zero_point_needs_the_asymmetric_grid():
    with pytest.raises(QuantConfigError, match="act_zero_point='integer' needs quant.act_asymmetric=True") as info:
        QuantConfig(act_zero_point="integer")
    assert "\n" not in str(info.value)
    QuantConfig(act_asymmetric=True, act_zero_point="integer")


def test_is_a_value_error():
    assert issubclass(QuantConfigError, ValueError)


def test_for_layer():
    config = QuantConfig(w_bits=3, a_bits=4, first_last_bits=8)
    assert config.for_layer(False) == (3, 4)
    assert config.for_layer(True) == (8, 8)
    assert QuantConfig(w_bits=3, a_bits=4, first_last_bits=None).for_layer(True) == (3, 4)
