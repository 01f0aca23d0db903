"""Tests for probsig_jax.validation: every check names the field and states the accepted range."""

from __future__ import annotations

import math

import numpy as np
import pytest

from probsig_jax.validation import ConfigError, require, require_float, require_int, require_shape


def test_config_error_is_value_error_with_field():
    err = ConfigError("learning_rate", "must be > 0")
    assert isinstance(err, ValueError)
    assert err.field == "learning_rate"
    assert str(err) == "learning_rate: must be > 0"


def test_require_passes_and_raises():
    require(True, "x", "never shown")
    with pytest.raises(ConfigError) as info:
        require(False, "width", "must be even")
    assert info.value.field == "width"
    assert str(info.value) == "width: must be even"


# ----------------------------------------------------------------------------- require_int


@pytest.mark.parametrize("value", [0, 3, 7, np.int64(5), np.int32(0), np.uint8(7)])
def test_require_int_accepts_integers_in_range(value):
    out = require_int(value, "steps", minimum=0, maximum=7)
    assert out == int(value)
    assert type(out) is int


@pytest.mark.parametrize("value", [-1, 8, 100])
def test_require_int_out_of_range_message_names_field_and_range(value):
    with pytest.raises(ConfigError) as info:
        require_int(value, "steps", minimum=0, maximum=7)
    assert info.value.field == "steps"
    msg = str(info.value)
    assert msg.startswith("steps:")
    assert "[0, 7]" in msg
    assert str(value) in msg


def test_require_int_open_bounds_in_message():
    with pytest.raises(ConfigError) as info:
        require_int(-5, "seed", minimum=0)
    assert "[0, inf]" in str(info.value)
    with pytest.raises(ConfigError) as info:
        require_int(11, "depth", maximum=10)
    assert "[-inf, 10]" in str(info.value)
    # no bounds at all: any integer passes
    assert require_int(-10**12, "anything") == -10**12


@pytest.mark.parametrize("value", [True, False, np.True_, np.False_])
def test_require_int_rejects_bool(value):
    with pytest.raises(ConfigError) as info:
        require_int(value, "n_layers", minimum=0)
    assert info.value.field == "n_layers"
    assert "integer" in str(info.value)


@pytest.mark.parametrize("value", [3.0, 2.5, "3", None, np.float64(3.0), [3]])
def test_require_int_rejects_non_integers(value):
    with pytest.raises(ConfigError) as info:
        require_int(value, "batch_size", minimum=1)
    assert info.value.field == "batch_size"
    assert str(info.value).startswith("batch_size: must be an integer")


# ----------------------------------------------------------------------------- require_float


@pytest.mark.parametrize("value", [0.0, 0.5, 1, "0.25", np.float32(1.0)])
def test_require_float_accepts_numbers_in_range(value):
    out = require_float(value, "label_noise", minimum=0.0, maximum=1.0)
    assert out == pytest.approx(float(value))
    assert isinstance(out, float)


@pytest.mark.parametrize("value", [-0.1, 1.5])
def test_require_float_out_of_range_message(value):
    with pytest.raises(ConfigError) as info:
        require_float(value, "label_noise", minimum=0.0, maximum=1.0)
    assert info.value.field == "label_noise"
    msg = str(info.value)
    assert msg.startswith("label_noise:")
    assert "[0, 1]" in msg
    assert f"got {value:g}" in msg


def test_require_float_strict_minimum():
    with pytest.raises(ConfigError) as info:
        require_float(0.0, "learning_rate", minimum=0.0, strict_minimum=True)
    assert info.value.field == "learning_rate"
    assert "must be > 0, got 0" in str(info.value)
    assert require_float(1e-12, "learning_rate", minimum=0.0, strict_minimum=True) == 1e-12
    # non-strict: the bound itself is allowed
    assert require_float(0.0, "learning_rate", minimum=0.0) == 0.0


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, np.nan])
def test_require_float_rejects_non_finite(value):
    with pytest.raises(ConfigError) as info:
        require_float(value, "eps")
    assert info.value.field == "eps"
    assert "finite" in str(info.value)


@pytest.mark.parametrize("value", ["abc", None, [1.0], object()])
def test_require_float_rejects_non_numbers(value):
    with pytest.raises(ConfigError) as info:
        require_float(value, "eps")
    assert info.value.field == "eps"
    assert "real number" in str(info.value)


# ----------------------------------------------------------------------------- require_shape


def test_require_shape_accepts_matching_and_wildcards():
    a = np.zeros((4, 3))
    require_shape(a, (4, 3), "E")
    require_shape(a, (None, 3), "E")
    require_shape(a, (None, None), "E")


@pytest.mark.parametrize("shape", [(3, 4), (4,), (4, 3, 1), (None, 4)])
def test_require_shape_mismatch_message(shape):
    a = np.zeros((4, 3))
    with pytest.raises(ConfigError) as info:
        require_shape(a, shape, "embedding")
    assert info.value.field == "embedding"
    msg = str(info.value)
    want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
    assert want in msg
    assert "(4, 3)" in msg


def test_require_shape_wildcard_written_as_star():
    with pytest.raises(ConfigError, match=r"must have shape \(\*, 5\), got \(2, 2\)"):
        require_shape(np.ones((2, 2)), (None, 5), "U")


def test_require_shape_non_array_has_empty_shape():
    with pytest.raises(ConfigError, match=r"got \(\)"):
        require_shape([1, 2, 3], (3,), "x")
    require_shape(3.0, (), "scalar")
