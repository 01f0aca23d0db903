"""Tests for probsig_jax.data.composite_addition: the composite addition generator (PAPER section 5).

Every expected value is derived independently (by hand or by brute-force enumeration in the
test), never by calling the function under test a second time.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict

import numpy as np
import pytest

from probsig_jax.data import (
    PRESETS,
    Combo,
    ComboWeight,
    CompositeAdditionConfig,
    Dataset,
    Relabel,
    composite_label,
    make_composite_addition,
)
from probsig_jax.validation import ConfigError


def _field_of(excinfo) -> str:
    return excinfo.value.field


def _rows(ds: Dataset) -> list[tuple[tuple[int, ...], int, float]]:
    w = np.ones(ds.num_samples) if ds.weights is None else ds.weights
    return [(tuple(int(t) for t in x), int(y), float(wi)) for x, y, wi in zip(ds.inputs, ds.labels, w)]


def _total(ds: Dataset | None) -> float:
    if ds is None:
        return 0.0
    return float(np.sum(ds.weights)) if ds.weights is not None else float(ds.num_samples)


# A small two-anchor exact config used by several tests: keys 20..29, anchors 1..4 (+1..+4).
SMALL2 = CompositeAdditionConfig(key_min=20, key_max=29, anchor_tokens=(1, 2, 3, 4), anchor_shifts=(1, 2, 3, 4),
                                 anchors_per_input=2, seq_len=3)


# =============================================================================== composite addition: simple


def test_simple_preset_rows_and_labels():
    task = make_composite_addition(PRESETS["simple"])
    ds = task.train
    assert task.test is None
    assert ds.inputs.shape == (160, 2)
    assert task.keys == tuple(range(20, 60))
    assert task.anchors == (1, 2, 3, 4)
    shift = {1: 1, 2: 2, 3: 3, 4: 4}
    seen = set()
    for (z, a), y, w in _rows(ds):
        assert 20 <= z <= 59 and a in shift
        assert y == z + shift[a]
        assert w == pytest.approx(1 / 160)
        seen.add((z, a))
    assert len(seen) == 160  # every (key, anchor) exactly once
    assert ds.vocab_size == 64  # largest label 59 + 4 = 63
    assert _total(ds) == pytest.approx(1.0)


def _exact_sum_cases():
    yield PRESETS["simple"]
    yield PRESETS["simple"].replace(test_key_modulus=3, test_key_residue=2)
    yield PRESETS["simple"].replace(held_out=(Combo((2,)),), label_noise=0.2)
    yield SMALL2.replace(held_out=(Combo((4, 3)), Combo((1, 1))), test_key_modulus=5, test_key_residue=0,
                         anchor_weights=(1.0, 2.0, 3.0, 4.0), key_weights=tuple(range(1, 11)))


@pytest.mark.parametrize("config", list(_exact_sum_cases()))
def test_exact_weights_sum_to_one(config):
    task = make_composite_addition(config)
    assert _total(task.train) + _total(task.test) == pytest.approx(1.0, abs=1e-12)


def test_exact_weights_sum_to_one_with_combination_weights():
    # "n_samples=0: the exact distribution (unique rows with probabilities)": a combination
    # weight changes the relative probability of a combination, but the rows must still be a
    # probability distribution.
    config = PRESETS["simple"].replace(combination_weights=(ComboWeight((1,), 0.5),))
    task = make_composite_addition(config)
    assert _total(task.train) + _total(task.test) == pytest.approx(1.0, abs=1e-12)


def test_label_noise_exact_spreads_p_uniformly_over_key_range():
    p = 0.3
    config = CompositeAdditionConfig(key_min=20, key_max=24, anchor_tokens=(1, 2), anchor_shifts=(1, 2),
                                     label_noise=p)
    task = make_composite_addition(config)
    agg: dict[tuple, dict[int, float]] = defaultdict(lambda: defaultdict(float))
    for x, y, w in _rows(task.train):
        agg[x][y] += w
    keys = range(20, 25)
    assert set(agg) == {(z, a) for z in keys for a in (1, 2)}
    for (z, a), dist in agg.items():
        mass = 1 / 5 * 1 / 2
        expected = defaultdict(float)
        for k in keys:
            expected[k] += mass * p / 5
        expected[z + a] += mass * (1 - p)
        assert set(dist) == set(expected), (z, a)
        for y in expected:
            assert dist[y] == pytest.approx(expected[y], abs=1e-15)
        assert sum(dist.values()) == pytest.approx(mass)


def test_label_noise_sampled_fraction():
    config = PRESETS["simple"].replace(label_noise=0.5, n_samples=4000, seed=3)
    ds = make_composite_addition(config).train
    clean = ds.inputs[:, 0] + ds.inputs[:, 1]  # shift(a) == a in the simple preset
    wrong = ds.labels != clean
    # a noisy label differs from the clean one with probability 0.5 * 39/40 ~ 0.4875
    assert 0.44 < wrong.mean() < 0.535
    assert ds.labels[wrong].min() >= 20 and ds.labels[wrong].max() <= 59


def test_held_out_combos_only_in_test():
    config = SMALL2.replace(held_out=(Combo((4, 3)), Combo((2, 2))))
    task = make_composite_addition(config)
    train_combos = {tuple(int(a) for a in x[1:]) for x in task.train.inputs}
    test_combos = {tuple(int(a) for a in x[1:]) for x in task.test.inputs}
    all_combos = {(a, b) for a in range(1, 5) for b in range(1, 5)}
    assert train_combos == all_combos - {(4, 3), (2, 2)}
    assert test_combos == {(4, 3), (2, 2)}
    # every key is tested on the held-out combos, labelled compositionally
    for (z, a, b), y, _ in _rows(task.test):
        assert y == z + a + b
    assert {int(x[0]) for x in task.test.inputs} == set(range(20, 30))


def test_relabel_changes_exactly_those_labels():
    base = make_composite_addition(SMALL2).train
    config = SMALL2.replace(relabel=(Relabel.parse("3-4=-6"),))
    trap = make_composite_addition(config).train
    # same enumeration of inputs
    assert sorted(_rows(base)) != sorted(_rows(trap))
    base_map = {x: y for x, y, _ in _rows(base)}
    trap_map = {x: y for x, y, _ in _rows(trap)}
    assert set(base_map) == set(trap_map)
    changed = {x for x in base_map if base_map[x] != trap_map[x]}
    assert changed == {(z, 3, 4) for z in range(20, 30)}
    for z, _, _ in changed:
        assert trap_map[(z, 3, 4)] == z - 6
        assert base_map[(z, 3, 4)] == z + 7
    # (4, 3) is not relabelled
    assert trap_map[(25, 4, 3)] == 32


def test_memory_anchors():
    config = CompositeAdditionConfig(key_min=20, key_max=39, anchor_tokens=(1, 2, 3), anchor_shifts=(1, 2, 3),
                                     memory_anchors=(3,))
    exact = make_composite_addition(config).train
    mem = {z: y for (z, a), y, _ in _rows(exact) if a == 3}
    assert set(mem) == set(range(20, 40))
    assert all(20 <= y <= 39 for y in mem.values())
    assert len(set(mem.values())) > 1  # differs across keys for at least some
    assert any(y != z + 3 for z, y in mem.items())  # not the shift rule
    # shift anchors still follow the shift
    for (z, a), y, _ in _rows(exact):
        if a != 3:
            assert y == z + a
    # sampled mode with the same seed: the same (key, combo) always gets the same label
    sampled = make_composite_addition(config.replace(n_samples=3000)).train
    seen: dict[tuple, set] = defaultdict(set)
    for (z, a), y, _ in _rows(sampled):
        seen[(z, a)].add(y)
    assert all(len(v) == 1 for v in seen.values())
    for z in range(20, 40):
        if (z, 3) in seen:
            assert seen[(z, 3)] == {mem[z]}


def test_memory_anchor_two_combos_fixed_per_key_and_combo():
    config = SMALL2.replace(memory_anchors=(1,), n_samples=4000, seed=5)
    ds = make_composite_addition(config).train
    labels: dict[tuple, set] = defaultdict(set)
    for (z, a, b), y, _ in _rows(ds):
        labels[(z, a, b)].add(y)
        if 1 not in (a, b):
            assert y == z + a + b
    assert all(len(v) == 1 for v in labels.values())
    mem_labels = [next(iter(v)) for k, v in labels.items() if 1 in k[1:]]
    assert all(20 <= y <= 29 for y in mem_labels)
    assert len(set(mem_labels)) > 1


def test_anchor_weights_ratio():
    config = PRESETS["simple"].replace(anchor_weights=(1.0, 2.0, 3.0, 4.0))
    rows = _rows(make_composite_addition(config).train)
    w = {x: wi for x, _, wi in rows}
    for z in range(20, 60):
        for a in (2, 3, 4):
            assert w[(z, a)] / w[(z, 1)] == pytest.approx(a)
    # total mass of anchor a is a / 10
    for a in (1, 2, 3, 4):
        assert sum(wi for (z, aa), wi in w.items() if aa == a) == pytest.approx(a / 10)


def test_anchor_weights_factorise_over_positions():
    config = SMALL2.replace(anchor_weights=(1.0, 1.0, 2.0, 4.0))
    w = {x: wi for x, _, wi in _rows(make_composite_addition(config).train)}
    pa = {1: 1 / 8, 2: 1 / 8, 3: 2 / 8, 4: 4 / 8}
    for (z, a, b), wi in w.items():
        assert wi == pytest.approx(pa[a] * pa[b] / 10)


def test_key_weights_ratio():
    kw = tuple(float(i) for i in range(1, 41))
    config = PRESETS["simple"].replace(key_weights=kw)
    w = {x: wi for x, _, wi in _rows(make_composite_addition(config).train)}
    total = sum(kw)
    for z in range(20, 60):
        for a in (1, 2, 3, 4):
            assert w[(z, a)] == pytest.approx(kw[z - 20] / total / 4)


def test_zero_key_weight_drops_key():
    kw = tuple(0.0 if z == 30 else 1.0 for z in range(20, 60))
    ds = make_composite_addition(PRESETS["simple"].replace(key_weights=kw)).train
    assert 30 not in set(ds.inputs[:, 0].tolist())
    assert ds.num_samples == 39 * 4


def test_combination_weights_ratio():
    config = SMALL2.replace(combination_weights=(ComboWeight.parse("1-2=0.5"), ComboWeight.parse("3-3=3")))
    w = {x: wi for x, _, wi in _rows(make_composite_addition(config).train)}
    for z in range(20, 30):
        assert w[(z, 1, 2)] / w[(z, 2, 1)] == pytest.approx(0.5)
        assert w[(z, 3, 3)] / w[(z, 2, 1)] == pytest.approx(3.0)
        assert w[(z, 4, 4)] / w[(z, 2, 1)] == pytest.approx(1.0)


def test_combination_weight_zero_removes_combo():
    config = SMALL2.replace(combination_weights=(ComboWeight((1, 2), 0.0),))
    ds = make_composite_addition(config).train
    combos = {tuple(int(a) for a in x[1:]) for x in ds.inputs}
    assert (1, 2) not in combos and (2, 1) in combos


def test_test_key_modulus_residue_split():
    config = PRESETS["simple"].replace(test_key_modulus=4, test_key_residue=1)
    task = make_composite_addition(config)
    train_keys = set(task.train.inputs[:, 0].tolist())
    test_keys = set(task.test.inputs[:, 0].tolist())
    assert train_keys == {z for z in range(20, 60) if z % 4 != 1}
    assert test_keys == {z for z in range(20, 60) if z % 4 == 1}
    assert _total(task.test) == pytest.approx(len(test_keys) / 40)
    for (z, a), y, _ in _rows(task.test):
        assert y == z + a


def test_sampled_mode_reproducible_and_seeded():
    config = PRESETS["anchor4"].replace(n_samples=500)
    a = make_composite_addition(config)
    b = make_composite_addition(config)
    c = make_composite_addition(config.replace(seed=1))
    assert a.train.weights is None
    assert a.train.num_samples == 500
    np.testing.assert_array_equal(a.train.inputs, b.train.inputs)
    np.testing.assert_array_equal(a.train.labels, b.train.labels)
    np.testing.assert_array_equal(a.test.inputs, b.test.inputs)
    assert not np.array_equal(a.train.inputs, c.train.inputs)


def _key_positions(inputs: np.ndarray, key_min: int, key_max: int) -> np.ndarray:
    is_key = (inputs >= key_min) & (inputs <= key_max)
    assert np.all(is_key.sum(axis=1) == 1), "exactly one key token per input"
    return is_key.argmax(axis=1)


def test_key_position_random_puts_keys_at_several_positions():
    config = PRESETS["anchor4"].replace(n_samples=2000)
    ds = make_composite_addition(config).train
    pos = _key_positions(ds.inputs, 20, 100)
    # length 9, two anchors: the key can sit at 0..6; all should be hit with 2000 samples
    assert set(pos.tolist()) == set(range(7))
    rows = np.arange(ds.num_samples)
    a1, a2 = ds.inputs[rows, pos + 1], ds.inputs[rows, pos + 2]
    assert np.all(np.isin(a1, [1, 2, 3, 4])) and np.all(np.isin(a2, [1, 2, 3, 4]))
    # everything else is filler 5..19
    mask = np.ones_like(ds.inputs, bool)
    mask[rows, pos] = mask[rows, pos + 1] = mask[rows, pos + 2] = False
    assert ds.inputs[mask].min() >= 5 and ds.inputs[mask].max() <= 19


def test_fixed_key_position():
    config = PRESETS["anchor4"].replace(n_samples=300, key_position=3)
    ds = make_composite_addition(config).train
    pos = _key_positions(ds.inputs, 20, 100)
    assert set(pos.tolist()) == {3}


# =============================================================================== presets

ANCHOR4_SHIFT = {1: 5, 2: 1, 3: -2, 4: -8}


def _anchor4_rows(ds):
    pos = _key_positions(ds.inputs, 20, 100)
    rows = np.arange(ds.num_samples)
    return ds.inputs[rows, pos], ds.inputs[rows, pos + 1], ds.inputs[rows, pos + 2]


def test_preset_anchor4():
    task = make_composite_addition(PRESETS["anchor4"])
    z, a1, a2 = _anchor4_rows(task.train)
    assert task.train.num_samples == 20000
    f = np.vectorize(ANCHOR4_SHIFT.get)
    np.testing.assert_array_equal(task.train.labels, z + f(a1) + f(a2))
    # (4, 3) never seen in training, present in test
    assert not np.any((a1 == 4) & (a2 == 3))
    zt, b1, b2 = _anchor4_rows(task.test)
    assert np.any((b1 == 4) & (b2 == 3))
    np.testing.assert_array_equal(task.test.labels, zt + f(b1) + f(b2))
    # residue rule: keys % 5 == 0 are test keys
    assert np.all(z % 5 != 0)
    assert np.any(zt % 5 == 0)
    # held-out combination on training keys is in test, on any key
    assert set(zt[(b1 == 4) & (b2 == 3)] % 5) - {0}
    # the other 15 combinations all appear in training
    assert {(int(x), int(y)) for x, y in zip(a1, a2)} == {(x, y) for x in range(1, 5) for y in range(1, 5)} - {(4, 3)}
    assert task.train.seq_len == 9


def test_preset_anchor4_trap():
    task = make_composite_addition(PRESETS["anchor4_trap"])
    z, a1, a2 = _anchor4_rows(task.train)
    f = np.vectorize(ANCHOR4_SHIFT.get)
    trap = (a1 == 3) & (a2 == 4)
    assert trap.any()
    np.testing.assert_array_equal(task.train.labels[trap], z[trap] - 6)
    np.testing.assert_array_equal(task.train.labels[~trap], (z + f(a1) + f(a2))[~trap])
    assert not np.any((a1 == 4) & (a2 == 3))
    zt, b1, b2 = _anchor4_rows(task.test)
    held = (b1 == 4) & (b2 == 3)
    assert held.any()
    np.testing.assert_array_equal(task.test.labels[held], zt[held] - 10)  # compositional


@pytest.fixture(scope="module")
def reasoning_task():
    return make_composite_addition(PRESETS["reasoning"])


def test_preset_reasoning(reasoning_task):
    task = reasoning_task
    assert task.keys == tuple(range(21, 121))
    assert task.train.seq_len == 3
    z, a1, a2 = (task.train.inputs[:, i] for i in range(3))
    assert set(z.tolist()) == set(range(21, 121))
    reasoning = (a1 >= 11) & (a2 >= 11)
    np.testing.assert_array_equal(task.train.labels[reasoning], (z + a1 + a2)[reasoning])
    mem_labels = task.train.labels[~reasoning]
    assert mem_labels.min() >= 21 and mem_labels.max() <= 120
    assert np.any(mem_labels != (z + a1 + a2)[~reasoning])
    # held-out reasoning pairs
    for pair in ((11, 13), (13, 11)):
        assert not np.any((a1 == pair[0]) & (a2 == pair[1]))
    test_pairs = {(int(x[1]), int(x[2])) for x in task.test.inputs}
    assert test_pairs == {(11, 13), (13, 11)}
    assert task.test.num_samples == 200
    np.testing.assert_array_equal(task.test.labels, task.test.inputs.sum(axis=1))
    assert task.train.num_samples == 100 * 400 - 200
    assert _total(task.train) + _total(task.test) == pytest.approx(1.0)
    assert task.train.vocab_size == 161  # largest label 120 + 20 + 20


# =============================================================================== composite_label


def test_composite_label_by_hand():
    cfg = PRESETS["anchor4_trap"]
    assert composite_label(cfg, 50, (1, 2)) == 56
    assert composite_label(cfg, 50, (4, 3)) == 40
    assert composite_label(cfg, 50, (3, 4)) == 44  # trap
    assert composite_label(PRESETS["anchor4"], 50, (3, 4)) == 40


# =============================================================================== bad configs


@pytest.mark.parametrize(
    "changes, field",
    [
        (dict(key_min=-1), "key_min"),
        (dict(key_min=30, key_max=29), "key_max"),
        (dict(anchor_tokens=(1, 25, 3, 4)), "anchor_tokens"),
        (dict(anchor_tokens=(1, 1, 3, 4)), "anchor_tokens"),
        (dict(anchor_tokens=()), "anchor_tokens"),
        (dict(anchor_shifts=(1, 2, 3)), "anchor_shifts"),
        (dict(anchor_weights=(1.0, 2.0)), "anchor_weights"),
        (dict(anchor_weights=(1.0, -2.0, 1.0, 1.0)), "anchor_weights"),
        (dict(anchor_weights=(0.0, 0.0, 0.0, 0.0)), "anchor_weights"),
        (dict(key_weights=(1.0,)), "key_weights"),
        (dict(key_weights=tuple([0.0] * 40)), "key_weights"),
        (dict(label_noise=1.5), "label_noise"),
        (dict(label_noise=-0.1), "label_noise"),
        (dict(held_out=(Combo((1, 2)),)), "held_out"),
        (dict(held_out=(Combo((9,)),)), "held_out"),
        (dict(relabel=(Relabel((1, 2), 3),)), "relabel"),
        (dict(combination_weights=(ComboWeight((1,), -1.0),)), "combination_weights"),
        (dict(combination_weights=(ComboWeight((1, 2), 1.0),)), "combination_weights"),
        (dict(memory_anchors=(7,)), "memory_anchors"),
        (dict(seq_len=3), "n_samples"),  # filler with the exact distribution
        (dict(seq_len=1), "seq_len"),
        (dict(key_position=1), "key_position"),
        (dict(key_position=-2), "key_position"),
        (dict(anchors_per_input=0), "anchors_per_input"),
        (dict(test_key_modulus=4, test_key_residue=4), "test_key_residue"),
        (dict(n_samples=-1), "n_samples"),
        (dict(seed=-1), "seed"),
        (dict(held_out=tuple(Combo((a,)) for a in (1, 2, 3, 4))), "held_out"),
        (dict(anchor_tokens=(1, 2, 3, 70), vocab_size=65), "vocab_size"),
    ],
)
def test_bad_config_names_field(changes, field):
    config = PRESETS["simple"].replace(**changes)
    with pytest.raises(ConfigError) as info:
        make_composite_addition(config)
    assert _field_of(info) == field, str(info.value)


def test_label_outside_vocab_blames_anchor_shifts():
    # labels reach 59 + 4 = 63 but vocab_size = 62
    with pytest.raises(ConfigError) as info:
        make_composite_addition(PRESETS["simple"].replace(vocab_size=62))
    assert "anchor_shifts" in _field_of(info)
    # a negative shift from key 0 gives label -1
    cfg = CompositeAdditionConfig(key_min=0, key_max=5, anchor_tokens=(10, 11), anchor_shifts=(-1, 1))
    with pytest.raises(ConfigError) as info:
        make_composite_addition(cfg)
    assert "anchor_shifts" in _field_of(info)
    assert "-1" in str(info.value)


def test_explicit_vocab_size_respected():
    task = make_composite_addition(PRESETS["simple"].replace(vocab_size=100))
    assert task.train.vocab_size == 100


# =============================================================================== parsers


def test_relabel_parse_roundtrip():
    r = Relabel.parse("3-4=-6")
    assert r.combo == (3, 4) and r.shift == -6
    assert str(r) == "3-4=-6"
    assert Relabel.parse(str(r)) == r
    assert Relabel.parse(" 2 = 7").combo == (2,)
    r3 = Relabel((1, 2, 3), 0)
    assert Relabel.parse(str(r3)) == r3


def test_combo_weight_parse_roundtrip():
    cw = ComboWeight.parse("1-2=0.5")
    assert cw.combo == (1, 2) and cw.weight == 0.5
    assert str(cw) == "1-2=0.5"
    assert ComboWeight.parse(str(cw)) == cw
    assert ComboWeight.parse("4=3").weight == 3.0


def test_combo_parse_roundtrip():
    c = Combo.parse("4-3")
    assert c.combo == (4, 3)
    assert str(c) == "4-3"
    assert Combo.parse(str(c)) == c
    assert Combo.parse("7").combo == (7,)


@pytest.mark.parametrize("text", ["3-4", "3-4=x", "3-4=1.5", "a-b=1", "=2", "3--4=1"])
def test_relabel_parse_bad(text):
    with pytest.raises(ConfigError) as info:
        Relabel.parse(text)
    assert _field_of(info) == "relabel"
    with pytest.raises(ConfigError) as info:
        Relabel.parse(text, field="trap")
    assert _field_of(info) == "trap"


@pytest.mark.parametrize("text", ["1-2", "1-2=x", "a-b=1", "=0.5", "1,2=0.5"])
def test_combo_weight_parse_bad(text):
    with pytest.raises(ConfigError) as info:
        ComboWeight.parse(text)
    assert _field_of(info) == "combination_weights"


@pytest.mark.parametrize("text", ["4,3", "a-b", "", "4-", "4.0-3"])
def test_combo_parse_bad(text):
    with pytest.raises(ConfigError) as info:
        Combo.parse(text)
    assert _field_of(info) == "held_out"
    assert "4-3" in str(info.value)


def test_parse_bad_combination_message_points_at_combination():
    # The combination part is what is wrong, so the message must not claim the shift/weight is.
    with pytest.raises(ConfigError) as info:
        Relabel.parse("a-b=1")
    assert "shift" not in str(info.value), str(info.value)
    assert "combination" in str(info.value)
    with pytest.raises(ConfigError) as info:
        ComboWeight.parse("a-b=0.5")
    assert "weight in" not in str(info.value), str(info.value)
    assert "combination" in str(info.value)


def test_task_metadata():
    task = make_composite_addition(PRESETS["simple"].replace(test_key_modulus=2))
    assert task.train.metadata["split"] == "train"
    assert task.test.metadata["split"] == "test"
    assert task.train.metadata["keys"] == list(range(20, 60))
    assert dataclasses.is_dataclass(task.config)
