"""Composite addition ("anchor function") tasks, PAPER section 5.

An input holds a *key* number ``z`` and ``anchors_per_input`` consecutive
*anchor* tokens; each anchor stands for an operation on the key and the label is
the composition of the operations applied to ``z``. Shift anchors add a fixed
integer; memory anchors map a (key, anchor combination) to a fixed random label
from the key range. The generator produces either the exact distribution (every
distinct input once, with its probability as weight) or i.i.d. samples.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass

import numpy as np

from probsig_jax.config_base import Config
from probsig_jax.data.dataset import Dataset
from probsig_jax.validation import ConfigError, require, require_float, require_int, require_seed


def _parse_combo(text: str, field: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in text.strip().split("-"))
    except ValueError:
        raise ConfigError(field, f"anchor combination {text!r} must look like '4-3' (anchor tokens joined by '-')") from None


@dataclass(frozen=True)
class Relabel:
    """Label a combination of anchors as ``key + shift`` instead of its composed value.

    Text form (CLI): ``"3-4=-6"`` means the anchor pair (3, 4) is labelled ``z - 6``.
    """

    combo: tuple[int, ...]
    shift: int

    @classmethod
    def parse(cls, text: str, field: str = "relabel") -> "Relabel":
        combo, sep, shift = text.partition("=")
        if not sep:
            raise ConfigError(field, f"{text!r} must look like '3-4=-6' (combination=shift)")
        parsed = _parse_combo(combo, field)
        try:
            return cls(parsed, int(shift))
        except ValueError:
            raise ConfigError(field, f"shift in {text!r} must be an integer") from None

    def __str__(self) -> str:
        return "-".join(map(str, self.combo)) + f"={self.shift}"


@dataclass(frozen=True)
class ComboWeight:
    """Multiply the sampling weight of one anchor combination. Text form: ``"1-2=0.5"``."""

    combo: tuple[int, ...]
    weight: float

    @classmethod
    def parse(cls, text: str, field: str = "combination_weights") -> "ComboWeight":
        combo, sep, weight = text.partition("=")
        if not sep:
            raise ConfigError(field, f"{text!r} must look like '1-2=0.5' (combination=weight)")
        parsed = _parse_combo(combo, field)
        try:
            return cls(parsed, float(weight))
        except ValueError:
            raise ConfigError(field, f"weight in {text!r} must be a number") from None

    def __str__(self) -> str:
        return "-".join(map(str, self.combo)) + f"={self.weight:g}"


@dataclass(frozen=True)
class Combo:
    """A held-out anchor combination. Text form: ``"4-3"``."""

    combo: tuple[int, ...]

    @classmethod
    def parse(cls, text: str, field: str = "held_out") -> "Combo":
        return cls(_parse_combo(text, field))

    def __str__(self) -> str:
        return "-".join(map(str, self.combo))


@dataclass(frozen=True)
class CompositeAdditionConfig(Config):
    """Every knob of the composite addition generator (PAPER section 5).

    Token ids are vocabulary indices; keys are the integers they stand for.
    """

    key_min: int = 20
    """Smallest key token (inclusive)."""
    key_max: int = 59
    """Largest key token (inclusive)."""
    anchor_tokens: tuple[int, ...] = (1, 2, 3, 4)
    """Token id of each anchor."""
    anchor_shifts: tuple[int, ...] = (1, 2, 3, 4)
    """Shift applied by each anchor (same order as anchor_tokens); ignored for memory anchors."""
    memory_anchors: tuple[int, ...] = ()
    """Anchor tokens whose operation is a memorized random map into the key range."""
    anchors_per_input: int = 1
    """Number q of consecutive anchors after the key; the label composes their operations."""
    seq_len: int = 2
    """Input length L >= 1 + anchors_per_input; extra positions hold filler tokens."""
    key_position: int = 0
    """Position of the key; -1 draws it uniformly from every position that leaves room for the anchors."""
    filler_min: int = 0
    """Smallest filler token (inclusive); used only when seq_len > 1 + anchors_per_input."""
    filler_max: int = -1
    """Largest filler token (inclusive); -1 means 'the key range' (noise keys, as in the reasoning task)."""
    key_weights: tuple[float, ...] = ()
    """Sampling weight of each key (key_min..key_max); empty means uniform."""
    anchor_weights: tuple[float, ...] = ()
    """Sampling weight of each anchor (per position, independent); empty means uniform."""
    combination_weights: tuple[ComboWeight, ...] = ()
    """Extra multiplicative weights for particular combinations, e.g. '1-2=0.5'."""
    label_noise: float = 0.0
    """Probability that a label is replaced by a uniform random key-range token."""
    held_out: tuple[Combo, ...] = ()
    """Combinations never seen in training (all go to the test split)."""
    relabel: tuple[Relabel, ...] = ()
    """Combinations labelled key + shift instead of the composed value (memorizing trap)."""
    test_key_modulus: int = 0
    """Keys with key % modulus == residue go to the test split (0 disables the key split)."""
    test_key_residue: int = 0
    """See test_key_modulus."""
    n_samples: int = 0
    """0: the exact distribution (unique rows with probabilities); > 0: that many i.i.d. samples."""
    vocab_size: int = 0
    """V; 0 means the smallest vocabulary that holds every token and label."""
    seed: int = 0
    """Seed for sampling, memory maps, label noise and random key positions."""

    def _check(self) -> None:
        require_int(self.key_min, "key_min", minimum=0)
        require_int(self.key_max, "key_max", minimum=self.key_min)
        n_anchor = len(self.anchor_tokens)
        require(n_anchor >= 1, "anchor_tokens", "need at least one anchor token")
        require(len(set(self.anchor_tokens)) == n_anchor, "anchor_tokens", "anchor tokens must be distinct")
        for a in self.anchor_tokens:
            require_int(a, "anchor_tokens", minimum=0)
            require(not (self.key_min <= a <= self.key_max), "anchor_tokens",
                    f"anchor token {a} collides with the key range [{self.key_min}, {self.key_max}]")
        require(len(self.anchor_shifts) == n_anchor, "anchor_shifts",
                f"need one shift per anchor token ({n_anchor}), got {len(self.anchor_shifts)}")
        for m in self.memory_anchors:
            require(m in self.anchor_tokens, "memory_anchors", f"{m} is not one of anchor_tokens {self.anchor_tokens}")
        require_int(self.anchors_per_input, "anchors_per_input", minimum=1, maximum=8)
        require_int(self.seq_len, "seq_len", minimum=1 + self.anchors_per_input, maximum=4096)
        require_int(self.key_position, "key_position", minimum=-1, maximum=self.seq_len - 1 - self.anchors_per_input)
        has_filler = self.seq_len > 1 + self.anchors_per_input
        if has_filler and self.filler_max != -1:
            require_int(self.filler_min, "filler_min", minimum=0)
            require_int(self.filler_max, "filler_max", minimum=self.filler_min)
        n_keys = self.key_max - self.key_min + 1
        if self.key_weights:
            require(len(self.key_weights) == n_keys, "key_weights",
                    f"need one weight per key ({n_keys} keys in [{self.key_min}, {self.key_max}]), got {len(self.key_weights)}")
            require(all(math.isfinite(w) and w >= 0 for w in self.key_weights) and sum(self.key_weights) > 0,
                    "key_weights", f"weights must be finite, >= 0 and not all zero, got {self.key_weights}")
        if self.anchor_weights:
            require(len(self.anchor_weights) == n_anchor, "anchor_weights",
                    f"need one weight per anchor ({n_anchor}), got {len(self.anchor_weights)}")
            require(all(math.isfinite(w) and w >= 0 for w in self.anchor_weights) and sum(self.anchor_weights) > 0,
                    "anchor_weights", f"weights must be finite, >= 0 and not all zero, got {self.anchor_weights}")
        for cw in self.combination_weights:
            self._check_combo(cw.combo, "combination_weights")
            require(math.isfinite(cw.weight) and cw.weight >= 0, "combination_weights",
                    f"weight of {cw} must be finite and >= 0")
        for c in self.held_out:
            self._check_combo(c.combo, "held_out")
        for r in self.relabel:
            self._check_combo(r.combo, "relabel")
        require_float(self.label_noise, "label_noise", minimum=0.0, maximum=1.0)
        require_int(self.test_key_modulus, "test_key_modulus", minimum=0)
        if self.test_key_modulus:
            require_int(self.test_key_residue, "test_key_residue", minimum=0, maximum=self.test_key_modulus - 1)
        require_int(self.n_samples, "n_samples", minimum=0, maximum=10**8)
        require_int(self.vocab_size, "vocab_size", minimum=0)
        require_seed(self.seed)
        if has_filler and self.n_samples == 0:
            raise ConfigError("n_samples", "the exact distribution (n_samples=0) cannot enumerate filler tokens; "
                              f"set n_samples > 0 or seq_len = {1 + self.anchors_per_input}")

    def _check_combo(self, combo: tuple[int, ...], field: str) -> None:
        require(len(combo) == self.anchors_per_input, field,
                f"combination {combo} must have anchors_per_input={self.anchors_per_input} anchors")
        for a in combo:
            require(a in self.anchor_tokens, field, f"{a} in {combo} is not one of anchor_tokens {self.anchor_tokens}")


PRESETS: dict[str, CompositeAdditionConfig] = {
    # One key then one anchor, label z + shift(a): signatures by hand; the default of E1.
    "simple": CompositeAdditionConfig(),
    # Anchor-function benchmark (arXiv 2401.08309 / 2405.05409): anchors 1..4 mean +5, +1, -2, -8; the
    # pair (4, 3) is held out; the key sits at a random position of a length-9 input padded with filler.
    "anchor4": CompositeAdditionConfig(
        key_min=20, key_max=100, anchor_tokens=(1, 2, 3, 4), anchor_shifts=(5, 1, -2, -8), anchors_per_input=2,
        seq_len=9, key_position=-1, filler_min=5, filler_max=19, held_out=(Combo((4, 3)),),
        test_key_modulus=5, test_key_residue=0, n_samples=20000),
    # The memorizing-trap variant: (3, 4) labelled z - 6 instead of the compositional z - 10.
    "anchor4_trap": CompositeAdditionConfig(
        key_min=20, key_max=100, anchor_tokens=(1, 2, 3, 4), anchor_shifts=(5, 1, -2, -8), anchors_per_input=2,
        seq_len=9, key_position=-1, filler_min=5, filler_max=19, held_out=(Combo((4, 3)),),
        relabel=(Relabel((3, 4), -6),), test_key_modulus=5, test_key_residue=0, n_samples=20000),
    # Reasoning vs memory anchors (arXiv 2502.04375): anchors 11..20 add their value, 1..10 are memorized.
    "reasoning": CompositeAdditionConfig(
        key_min=21, key_max=120, anchor_tokens=tuple(range(1, 21)), anchor_shifts=tuple(range(1, 21)),
        memory_anchors=tuple(range(1, 11)), anchors_per_input=2, seq_len=2 + 1,
        held_out=(Combo((11, 13)), Combo((13, 11))), n_samples=0),
}


@dataclass(frozen=True)
class TaskData:
    """Train and test splits of a composite addition task plus the token groups.

    ``keys`` and ``anchors`` are token ids (keys in increasing order), used to
    order heatmaps and to select the token set T of the alignment metrics.
    """

    train: Dataset
    test: Dataset | None
    keys: tuple[int, ...]
    anchors: tuple[int, ...]
    config: CompositeAdditionConfig
    test_unseen_keys: Dataset | None = None
    """Test rows with the test keys (``test_key_modulus`` rule) and trained combinations."""
    test_held_out: Dataset | None = None
    """Test rows with the held-out anchor combinations (every key)."""


def _memory_label(rng_seed: int, key: int, combo: tuple[int, ...], key_min: int, key_max: int) -> int:
    # A fixed random label per (key, combination): hash-seeded so it does not depend on sampling order.
    rng = np.random.default_rng([rng_seed, 7919, key, *combo])
    return int(rng.integers(key_min, key_max + 1))


def composite_label(config: CompositeAdditionConfig, key: int, combo: tuple[int, ...]) -> int:
    """The clean label of ``key`` followed by anchors ``combo``."""
    for r in config.relabel:
        if r.combo == tuple(combo):
            return key + r.shift
    if any(a in config.memory_anchors for a in combo):
        return _memory_label(config.seed, key, tuple(combo), config.key_min, config.key_max)
    shift = dict(zip(config.anchor_tokens, config.anchor_shifts))
    return key + sum(shift[a] for a in combo)


def _combo_table(config: CompositeAdditionConfig) -> tuple[list[tuple[int, ...]], np.ndarray]:
    """All anchor combinations and their sampling probabilities (summing to 1)."""
    aw = np.asarray(config.anchor_weights or [1.0] * len(config.anchor_tokens), dtype=np.float64)
    aw = dict(zip(config.anchor_tokens, aw / aw.sum()))
    extra = {cw.combo: cw.weight for cw in config.combination_weights}
    combos = list(itertools.product(config.anchor_tokens, repeat=config.anchors_per_input))
    weights = np.array([np.prod([aw[a] for a in c]) * extra.get(c, 1.0) for c in combos])
    total = weights.sum()
    if not total > 0:
        raise ConfigError("combination_weights", "every anchor combination has weight 0; at least one must be > 0")
    return combos, weights / total


def _rows_exact(config: CompositeAdditionConfig, keys: np.ndarray, key_w: np.ndarray,
                combos: list, combo_w: np.ndarray, positions: list[int], labels_for_noise: np.ndarray):
    q, L = config.anchors_per_input, config.seq_len
    rows, labels, weights = [], [], []
    for key, kw in zip(keys, key_w):
        for combo, cw in zip(combos, combo_w):
            if kw * cw == 0:
                continue
            clean = composite_label(config, int(key), combo)
            for pos in positions:
                x = [0] * L
                x[pos] = int(key)
                x[pos + 1:pos + 1 + q] = combo
                p = kw * cw / len(positions)
                rows.append(x); labels.append(clean); weights.append(p * (1.0 - config.label_noise))
                if config.label_noise > 0:
                    for y in labels_for_noise:
                        rows.append(x); labels.append(int(y))
                        weights.append(p * config.label_noise / len(labels_for_noise))
    return np.array(rows, dtype=np.int64), np.array(labels, dtype=np.int64), np.array(weights)


def _rows_sampled(config: CompositeAdditionConfig, rng: np.random.Generator, keys: np.ndarray, key_w: np.ndarray,
                  combos: list, combo_w: np.ndarray, positions: list[int], labels_for_noise: np.ndarray, n: int):
    q, L = config.anchors_per_input, config.seq_len
    fmin, fmax = (config.key_min, config.key_max) if config.filler_max == -1 else (config.filler_min, config.filler_max)
    k_idx = rng.choice(len(keys), size=n, p=key_w / key_w.sum())
    c_idx = rng.choice(len(combos), size=n, p=combo_w / combo_w.sum())
    pos = rng.choice(positions, size=n)
    inputs = rng.integers(fmin, fmax + 1, size=(n, L))
    labels = np.empty(n, dtype=np.int64)
    for i in range(n):
        key, combo = int(keys[k_idx[i]]), combos[c_idx[i]]
        inputs[i, pos[i]] = key
        inputs[i, pos[i] + 1:pos[i] + 1 + q] = combo
        labels[i] = composite_label(config, key, combo)
    noisy = rng.random(n) < config.label_noise
    labels[noisy] = rng.choice(labels_for_noise, size=int(noisy.sum()))
    return inputs, labels, None


def vocabulary_size(config: CompositeAdditionConfig) -> int:
    """The task's vocabulary size V without generating it: ``config.vocab_size``, or (when 0) the smallest
    vocabulary that holds every key, anchor, filler token and label.

    Raises ConfigError if a label falls outside the vocabulary or ``vocab_size`` is too small.
    """
    config = config.validate()
    keys = range(config.key_min, config.key_max + 1)
    combos = itertools.product(config.anchor_tokens, repeat=config.anchors_per_input)
    all_labels = [composite_label(config, k, c) for c in combos for k in keys]
    has_filler = config.seq_len > 1 + config.anchors_per_input
    fill_max = config.key_max if config.filler_max == -1 else config.filler_max
    needed = max(max(all_labels), config.key_max, max(config.anchor_tokens), fill_max if has_filler else 0) + 1
    vocab = config.vocab_size or needed
    lo, hi = min(all_labels), max(all_labels)
    if lo < 0 or hi >= vocab:
        field = "anchor_shifts" if not config.relabel else "anchor_shifts/relabel"
        raise ConfigError(field, f"labels span [{lo}, {hi}] which leaves the vocabulary [0, {vocab - 1}]; "
                          "change the shifts, the key range or vocab_size")
    if vocab < needed:
        raise ConfigError("vocab_size", f"must be >= {needed} to hold every token, got {vocab}")
    return vocab


def make_composite_addition(config: CompositeAdditionConfig) -> TaskData:
    """Generate the train/test splits of a composite addition task.

    Raises ConfigError naming the field if the config is invalid, if a label
    falls outside the vocabulary, or if a split would be empty.
    """
    config = config.validate()
    keys = np.arange(config.key_min, config.key_max + 1)
    key_w = np.asarray(config.key_weights or np.ones(len(keys)), dtype=np.float64)
    key_w = key_w / key_w.sum()
    combos, combo_w = _combo_table(config)
    L, q = config.seq_len, config.anchors_per_input
    positions = [config.key_position] if config.key_position >= 0 else list(range(L - q))
    held = {c.combo for c in config.held_out}
    test_key = (keys % config.test_key_modulus == config.test_key_residue) if config.test_key_modulus else np.zeros(len(keys), bool)
    is_held = np.array([c in held for c in combos])

    vocab = vocabulary_size(config)

    rng = np.random.default_rng(config.seed)
    splits = {}
    for name, kmask, cmask in (("train", ~test_key, ~is_held), ("test", test_key, ~is_held), ("test_held", None, is_held)):
        km = np.ones(len(keys), bool) if kmask is None else kmask
        kw = key_w * km
        cw = combo_w * cmask
        if kw.sum() == 0 or cw.sum() == 0:
            splits[name] = None
            continue
        if config.n_samples == 0:
            x, y, w = _rows_exact(config, keys, kw, combos, cw, positions, keys)
        else:
            frac = 1.0 if name == "train" else 0.25
            x, y, w = _rows_sampled(config, rng, keys, kw, combos, cw, positions, keys, max(1, int(config.n_samples * frac)))
        splits[name] = Dataset(x, y, vocab, w)
    if splits["train"] is None:
        raise ConfigError("held_out", "every combination or key is held out: the training split is empty")
    test = splits["test"]
    if splits["test_held"] is not None:
        test = splits["test_held"] if test is None else test.concatenate(splits["test_held"])
    meta = {"task": "composite_addition", "keys": keys.tolist(), "anchors": list(config.anchor_tokens)}
    train = dataclasses.replace(splits["train"], metadata=dict(meta, split="train"))
    if test is not None:
        test = dataclasses.replace(test, metadata=dict(meta, split="test"))
    parts = {name: None if splits[name] is None else dataclasses.replace(splits[name], metadata=dict(meta, split=name))
             for name in ("test", "test_held")}
    return TaskData(train, test, tuple(int(k) for k in keys), tuple(config.anchor_tokens), config,
                    test_unseen_keys=parts["test"], test_held_out=parts["test_held"])
