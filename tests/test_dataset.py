"""Tests for probsig_jax.data.dataset and probsig_jax.data.features: the Dataset container and c(x).

Every expected value is derived by hand, never by calling the function under test a second time.
"""

from __future__ import annotations

import numpy as np
import pytest

from probsig_jax.data import Dataset, count_features, num_features
from probsig_jax.validation import ConfigError


def _field_of(excinfo) -> str:
    return excinfo.value.field


# =============================================================================== Dataset


def test_dataset_valid_and_properties():
    ds = Dataset(np.array([[0, 1], [2, 3], [1, 1]]), np.array([3, 0, 2]), 4, np.array([1.0, 2.0, 1.0]))
    assert ds.num_samples == 3
    assert ds.seq_len == 2
    assert ds.inputs.dtype == np.int32 and ds.labels.dtype == np.int32
    np.testing.assert_allclose(ds.sample_weights(), [0.25, 0.5, 0.25])
    unweighted = Dataset(np.array([[0, 1], [2, 3]]), np.array([3, 0]), 4)
    np.testing.assert_allclose(unweighted.sample_weights(), [0.5, 0.5])


def test_dataset_concatenate_counts_unweighted_as_one():
    a = Dataset(np.array([[0, 1]]), np.array([2]), 4, np.array([3.0]))
    b = Dataset(np.array([[2, 3], [1, 1]]), np.array([0, 1]), 4)
    c = a.concatenate(b)
    assert c.inputs.tolist() == [[0, 1], [2, 3], [1, 1]]
    assert c.labels.tolist() == [2, 0, 1]
    np.testing.assert_allclose(c.weights, [3.0, 1.0, 1.0])
    with pytest.raises(ConfigError) as info:
        a.concatenate(Dataset(np.array([[0, 1, 2]]), np.array([2]), 4))
    assert _field_of(info) == "other"


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(inputs=np.zeros((0, 2), dtype=int), labels=np.zeros(0, dtype=int), vocab_size=4), "inputs"),
        (dict(inputs=np.zeros((3, 0), dtype=int), labels=np.zeros(3, dtype=int), vocab_size=4), "inputs"),
        (dict(inputs=np.array([0, 1, 2]), labels=np.array([0, 1, 2]), vocab_size=4), "inputs"),
        (dict(inputs=np.array([[0.0, 1.0]]), labels=np.array([0]), vocab_size=4), "inputs"),
        (dict(inputs=np.array([[0, 4]]), labels=np.array([0]), vocab_size=4), "inputs"),
        (dict(inputs=np.array([[-1, 0]]), labels=np.array([0]), vocab_size=4), "inputs"),
        (dict(inputs=np.array([[0, 1]]), labels=np.array([4]), vocab_size=4), "labels"),
        (dict(inputs=np.array([[0, 1]]), labels=np.array([-1]), vocab_size=4), "labels"),
        (dict(inputs=np.array([[0, 1], [1, 2]]), labels=np.array([0]), vocab_size=4), "labels"),
        (dict(inputs=np.array([[0, 1]]), labels=np.array([0.5]), vocab_size=4), "labels"),
        (dict(inputs=np.array([[0, 1]]), labels=np.array([0]), vocab_size=0), "vocab_size"),
        (dict(inputs=np.array([[0, 1], [1, 2]]), labels=np.array([0, 1]), vocab_size=4, weights=np.ones(3)), "weights"),
        (dict(inputs=np.array([[0, 1], [1, 2]]), labels=np.array([0, 1]), vocab_size=4, weights=np.ones((2, 1))),
         "weights"),
        (dict(inputs=np.array([[0, 1], [1, 2]]), labels=np.array([0, 1]), vocab_size=4,
              weights=np.array([1.0, -0.5])), "weights"),
        (dict(inputs=np.array([[0, 1], [1, 2]]), labels=np.array([0, 1]), vocab_size=4,
              weights=np.array([1.0, np.nan])), "weights"),
        (dict(inputs=np.array([[0, 1], [1, 2]]), labels=np.array([0, 1]), vocab_size=4, weights=np.zeros(2)),
         "weights"),
    ],
)
def test_dataset_bad_input_names_field(kwargs, field):
    with pytest.raises(ConfigError) as info:
        Dataset(**kwargs)
    assert _field_of(info) == field
    assert str(info.value).startswith(field + ":")


def test_dataset_out_of_range_message_states_range():
    with pytest.raises(ConfigError, match=r"\[0, 3\]"):
        Dataset(np.array([[0, 7]]), np.array([0]), 4)


# =============================================================================== count_features


def test_count_features_bag_and_positional_by_hand():
    inputs = np.array([[0, 2, 2], [1, 0, 3]])
    bag = count_features(inputs, 4)
    # row 0: token 0 once, token 2 twice; row 1: tokens 1, 0, 3 once each
    np.testing.assert_array_equal(bag, [[1, 0, 2, 0], [1, 1, 0, 1]])
    pos = count_features(inputs, 4, positional=True)
    assert pos.shape == (2, 12)
    # feature l * V + t
    expected = np.zeros((2, 12))
    expected[0, [0 * 4 + 0, 1 * 4 + 2, 2 * 4 + 2]] = 1
    expected[1, [0 * 4 + 1, 1 * 4 + 0, 2 * 4 + 3]] = 1
    np.testing.assert_array_equal(pos, expected)
    # summing the positional blocks gives the bag features
    np.testing.assert_array_equal(pos.reshape(2, 3, 4).sum(axis=1), bag)
    assert num_features(4, 3, False) == 4 and num_features(4, 3, True) == 12
