"""Modular arithmetic tasks with label noise (MODADD section 1): the full table of input pairs, a seeded
train/test split, noisy training labels and the label-collision count of MODADD section 5 item 4.

Every pair of the table is one row, in lexicographic order of ``(a, b)``; the splits are boolean masks over
those rows. Operations:

* ``add``: ``a, b`` in ``{0..P-1}``, ``P`` prime, label ``(a + b) mod P``;
* ``xor``: ``a, b`` in ``{0..P-1}``, ``P`` a power of two, label ``a xor b``;
* ``mul``: ``a, b`` in ``{1..M}`` with ``M = max(mul_moduli)`` (``{1..61}`` for the paper's 59/60/61). The
  values of ``a`` are cut into ``k = len(mul_moduli)`` contiguous blocks of near-equal size
  (``np.array_split``: ``a`` in 1..21, 22..41, 42..61 for the default), block ``k`` is part ``k`` and its
  label is ``(a * b) mod mul_moduli[k]``. The part is a function of ``a``, so the rule can be learned and a
  test split is meaningful. Labels lie in ``[0, M - 1]``, hence ``num_classes = M``; input token ids are the
  values themselves, hence ``num_inputs = M + 1`` (id 0 never occurs as an input).

Counts are rounded with Python's ``round`` (nearest integer, ties to even): ``n_train = round(train_fraction *
N)`` and ``n_noisy = round(noise_ratio * n_train)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from probsig_jax.config_base import Config
from probsig_jax.data.dataset import Dataset
from probsig_jax.validation import ConfigError, require, require_float, require_int, require_seed

MAX_ALPHABET = 4096
"""The largest input alphabet (P or max(mul_moduli)); the table has P^2 rows."""

SUBSETS = ("train", "test", "clean", "noisy", "all")
"""Names accepted by :meth:`ModularTask.subset_mask`: ``clean`` and ``noisy`` are parts of the training set."""


def _is_prime(n: int) -> bool:
    return n >= 2 and all(n % d for d in range(2, int(n ** 0.5) + 1))


def legendre_symbol(n, P: int) -> np.ndarray:
    """The Legendre symbol ``(n / P)`` for an odd prime ``P``, elementwise.

    ``n``: int array of any shape (any integers; reduced mod P). Returns an int64 array of the same shape:
    0 where ``n = 0 mod P``, +1 where ``n`` is a nonzero square mod P, -1 otherwise (from the table of
    squares ``k^2 mod P``, k = 1..P-1).
    """
    P = require_int(P, "P", minimum=3, maximum=MAX_ALPHABET)
    require(_is_prime(P), "P", f"must be an odd prime, got {P}")
    table = np.full(P, -1, dtype=np.int64)
    k = np.arange(1, P, dtype=np.int64)
    table[(k * k) % P] = 1
    table[0] = 0
    return table[np.mod(np.asarray(n, dtype=np.int64), P)]


def bijective_noise_label(x, y, P: int) -> np.ndarray:
    """The "bijective" noisy label of MODADD section 1, elementwise over int arrays ``x``, ``y`` (same shape):

    ``g(x, y) = x`` if ``x = y``, else ``(x + (4 + Leg(y - x)) (y - x)) mod P``, with ``Leg`` the Legendre
    symbol mod the odd prime ``P``. (The first case is the second at ``y - x = 0``.) ``g`` is a bijection
    in each argument exactly when 2 and 15 are squares mod P (true for P = 7, 17, 113;
    :class:`ModularTaskConfig` checks it).
    """
    x = np.asarray(x, dtype=np.int64)
    d = np.asarray(y, dtype=np.int64) - x
    return np.mod(x + (4 + legendre_symbol(d, P)) * d, P)


def _bijective_ok(P: int) -> bool:
    return P > 5 and _is_prime(P) and int(legendre_symbol(2, P)) == 1 and int(legendre_symbol(15, P)) == 1


@dataclass(frozen=True)
class ModularTaskConfig(Config):
    """Every knob of the modular arithmetic task (MODADD section 1)."""

    modulus: int = 113
    """P: the alphabet ``{0..P-1}``; prime for ``add``, a power of two for ``xor`` (64 in the paper);
    ignored by ``mul``."""
    operation: Literal["add", "xor", "mul"] = "add"
    """The clean rule: ``(a + b) mod P``, ``a xor b`` or ``(a * b) mod m`` with the part's modulus m."""
    mul_moduli: tuple[int, ...] = (59, 60, 61)
    """``mul`` only: one modulus per part; the alphabet is ``{1..max(mul_moduli)}`` (module docstring)."""
    train_fraction: float = 0.8
    """Fraction of the table in the training split, in (0, 1]; ``n_train = round(train_fraction * N)``."""
    split_seed: int = 0
    """Seed of the random train/test split."""
    noise_ratio: float = 0.0
    """alpha in [0, 1): fraction of the training rows relabelled, ``n_noisy = round(alpha * n_train)``."""
    noise: Literal["uniform", "bijective"] = "uniform"
    """``uniform``: the new label is uniform over all ``num_classes`` classes (it may equal the clean one);
    ``bijective``: the label is ``g(a, b)`` (:func:`bijective_noise_label`; ``add`` only)."""
    noise_seed: int = 0
    """Seed of which training rows are noisy and of their uniform labels."""
    full_table: bool = False
    """Train on all pairs (no test split; ``train_fraction`` is then ignored)."""

    def _check(self) -> None:
        require(self.operation in ("add", "xor", "mul"), "operation",
                f"must be one of add, xor, mul, got {self.operation!r}")
        if self.operation == "mul":
            require(isinstance(self.mul_moduli, tuple) and len(self.mul_moduli) >= 1, "mul_moduli",
                    f"must be a non-empty tuple of integers, got {self.mul_moduli!r}")
            for m in self.mul_moduli:
                require_int(m, "mul_moduli", minimum=2, maximum=MAX_ALPHABET)
            require(len(self.mul_moduli) <= max(self.mul_moduli), "mul_moduli",
                    f"needs at most max(mul_moduli)={max(self.mul_moduli)} parts, got {len(self.mul_moduli)}")
        else:
            P = require_int(self.modulus, "modulus", minimum=2, maximum=MAX_ALPHABET)
            if self.operation == "add":
                require(_is_prime(P), "modulus", f"must be a prime for operation='add' (e.g. 113), got {P}")
            else:
                require(P & (P - 1) == 0, "modulus",
                        f"must be a power of two for operation='xor' (e.g. 64), got {P}")
        require_float(self.train_fraction, "train_fraction", minimum=0.0, maximum=1.0, strict_minimum=True)
        require_seed(self.split_seed, "split_seed")
        alpha = require_float(self.noise_ratio, "noise_ratio", minimum=0.0, maximum=1.0)
        require(alpha < 1.0, "noise_ratio", f"must be in [0, 1), got {alpha:g}")
        require(self.noise in ("uniform", "bijective"), "noise",
                f"must be one of uniform, bijective, got {self.noise!r}")
        require_seed(self.noise_seed, "noise_seed")
        require(isinstance(self.full_table, bool), "full_table", f"must be true or false, got {self.full_table!r}")
        if self.noise == "bijective":
            require(self.operation == "add", "noise",
                    f"'bijective' applies only to operation='add' (g is defined mod a prime), got {self.operation!r}")
            require(_bijective_ok(self.modulus), "modulus",
                    "noise='bijective' needs an odd prime P > 5 with 2 and 15 squares mod P (so that g is a "
                    f"bijection in each argument, e.g. 7, 17, 113), got {self.modulus}")
        if not self.full_table:
            require(round(self.train_fraction * self.table_size) >= 1, "train_fraction",
                    f"leaves the training split empty (round({self.train_fraction:g} * {self.table_size}) = 0)")

    @property
    def alphabet(self) -> np.ndarray:
        """The input values (A,): ``0..P-1`` for add/xor, ``1..max(mul_moduli)`` for mul."""
        if self.operation == "mul":
            return np.arange(1, max(self.mul_moduli) + 1, dtype=np.int64)
        return np.arange(self.modulus, dtype=np.int64)

    @property
    def table_size(self) -> int:
        """N = A^2, the number of input pairs."""
        return len(self.alphabet) ** 2

    @property
    def num_inputs(self) -> int:
        """Input token vocabulary: P for add/xor, max(mul_moduli) + 1 for mul (the values are the ids)."""
        return self.modulus if self.operation != "mul" else max(self.mul_moduli) + 1

    @property
    def num_classes(self) -> int:
        """Label vocabulary: P for add/xor, max(mul_moduli) for mul."""
        return self.modulus if self.operation != "mul" else max(self.mul_moduli)


def _readonly(arr: np.ndarray) -> np.ndarray:
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True, eq=False)
class ModularTask:
    """The full table of a modular task with its split and noise; every array has one entry per pair (N,).

    Attributes:
      config: the (validated) config.
      a, b: int64 (N,), the inputs of every pair, in lexicographic order.
      clean_labels: int64 (N,), the rule's label.
      labels: int64 (N,), ``clean_labels`` except on the noisy training rows.
      train, test: bool (N,), the split (disjoint, covering the table; ``test`` is empty with ``full_table``).
      noisy: bool (N,), the relabelled training rows (a subset of ``train``).
      clean_train: bool (N,), ``train & ~noisy``.
      noisy_correct: bool (N,), the noisy rows whose new label happens to equal the clean one (they stay
        flagged ``noisy``).
      part: int64 (N,) for ``mul`` (index into ``config.mul_moduli``), ``None`` otherwise.
    """

    config: ModularTaskConfig
    a: np.ndarray
    b: np.ndarray
    clean_labels: np.ndarray
    labels: np.ndarray
    train: np.ndarray
    test: np.ndarray
    noisy: np.ndarray
    clean_train: np.ndarray
    noisy_correct: np.ndarray
    part: np.ndarray | None = None

    @property
    def num_inputs(self) -> int:
        """Input alphabet size (see :attr:`ModularTaskConfig.num_inputs`)."""
        return self.config.num_inputs

    @property
    def num_classes(self) -> int:
        """Label vocabulary size (see :attr:`ModularTaskConfig.num_classes`)."""
        return self.config.num_classes

    @property
    def vocab_size(self) -> int:
        """V = max(num_inputs, num_classes), the shared vocabulary of :meth:`dataset`."""
        return max(self.num_inputs, self.num_classes)

    @property
    def num_rows(self) -> int:
        """N, the number of pairs in the table."""
        return int(self.a.shape[0])

    def subset_mask(self, name: str = "train") -> np.ndarray:
        """Bool (N,) mask of a subset: ``train``, ``test``, ``clean`` (clean training rows), ``noisy`` or ``all``."""
        masks = {"train": self.train, "test": self.test, "clean": self.clean_train, "noisy": self.noisy,
                 "all": np.ones(self.num_rows, dtype=bool)}
        if name not in masks:
            raise ConfigError("subset", f"must be one of {', '.join(SUBSETS)}, got {name!r}")
        return masks[name]

    def dataset(self, subset: str = "train", use_clean_labels: bool = False) -> Dataset:
        """The rows of ``subset`` as a :class:`Dataset`: inputs (n, 2) = ``[a, b]``, labels (n,) (the current,
        possibly noisy, labels; the clean ones with ``use_clean_labels``), ``vocab_size`` V, unweighted.

        Raises ConfigError naming ``subset`` if it is unknown or empty.
        """
        mask = self.subset_mask(subset)
        if not mask.any():
            raise ConfigError("subset", f"the {subset!r} subset is empty for this config")
        labels = self.clean_labels if use_clean_labels else self.labels
        meta = {"task": "modular", "operation": self.config.operation, "subset": subset,
                "labels": "clean" if use_clean_labels else "current"}
        return Dataset(np.stack([self.a[mask], self.b[mask]], axis=1), labels[mask], self.vocab_size, metadata=meta)


def _clean_labels(config: ModularTaskConfig, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    if config.operation == "add":
        return (a + b) % config.modulus, None
    if config.operation == "xor":
        return a ^ b, None
    blocks = np.array_split(config.alphabet, len(config.mul_moduli))
    part_of_value = np.concatenate([np.full(len(blk), k, dtype=np.int64) for k, blk in enumerate(blocks)])
    part = part_of_value[a - 1]
    return (a * b) % np.asarray(config.mul_moduli, dtype=np.int64)[part], part


def make_modular_task(config: ModularTaskConfig) -> ModularTask:
    """Build the table, the split (seeded by ``split_seed``) and the noisy labels (seeded by ``noise_seed``).

    The training rows are the first ``n_train`` of a ``split_seed`` permutation of the table; the noisy rows
    are the first ``n_noisy`` of a ``noise_seed`` permutation of the (sorted) training rows. Raises
    ConfigError naming the field if the config is invalid.
    """
    config = config.validate()
    values = config.alphabet
    a = np.repeat(values, len(values))
    b = np.tile(values, len(values))
    clean, part = _clean_labels(config, a, b)
    N = len(a)

    train = np.zeros(N, dtype=bool)
    if config.full_table:
        train[:] = True
    else:
        n_train = round(config.train_fraction * N)
        train[np.random.default_rng(config.split_seed).permutation(N)[:n_train]] = True
    train_idx = np.flatnonzero(train)

    rng = np.random.default_rng(config.noise_seed)
    n_noisy = round(config.noise_ratio * len(train_idx))
    noisy_idx = np.sort(rng.permutation(train_idx)[:n_noisy])
    labels = clean.copy()
    if config.noise == "uniform":
        labels[noisy_idx] = rng.integers(0, config.num_classes, size=n_noisy)
    else:
        labels[noisy_idx] = bijective_noise_label(a[noisy_idx], b[noisy_idx], config.modulus)
    noisy = np.zeros(N, dtype=bool)
    noisy[noisy_idx] = True

    arrays = dict(a=a, b=b, clean_labels=clean, labels=labels, train=train, test=~train, noisy=noisy,
                  clean_train=train & ~noisy, noisy_correct=noisy & (labels == clean), part=part)
    return ModularTask(config, **{k: None if v is None else _readonly(v) for k, v in arrays.items()})


def label_collisions(task: ModularTask, subset: str = "train") -> np.ndarray:
    """Label collisions (MODADD section 5 item 4) of the rows of ``subset``: int64 (n_subset,),

    ``Delta_i = sum_{j in train, j != i} 1{z_j = z_i} (1{a_j = a_i} + 1{b_j = b_i})``

    with ``z`` the current (possibly noisy) labels. For a row outside the training set (``test``) there is
    no ``j = i`` term to drop. Computed from the counts of the (a, z) and (b, z) pairs in the training set.
    """
    mask = task.subset_mask(subset)
    V, z, tr = task.vocab_size, task.labels, task.train
    count_az = np.bincount(task.a[tr] * V + z[tr], minlength=V * V)
    count_bz = np.bincount(task.b[tr] * V + z[tr], minlength=V * V)
    am, bm, zm = task.a[mask], task.b[mask], z[mask]
    return count_az[am * V + zm] + count_bz[bm * V + zm] - 2 * tr[mask].astype(np.int64)


def _same_label_counts(labels_AxA: np.ndarray, other_AxA: np.ndarray, num_classes: int) -> np.ndarray:
    """(A, A): for each row (a, b), how many entries of row ``a`` of ``other`` equal ``labels[a, b]``."""
    A = labels_AxA.shape[0]
    counts = np.zeros((A, num_classes), dtype=np.int64)
    np.add.at(counts, (np.repeat(np.arange(A), A), other_AxA.ravel()), 1)
    return np.take_along_axis(counts, labels_AxA, axis=1)


def expected_label_collisions(config: ModularTaskConfig) -> tuple[np.ndarray, np.ndarray]:
    """The expectation of :func:`label_collisions` of every row, over the random split and noise of
    :func:`make_modular_task` (exact: no sampling), given that the row is a clean or a noisy training row.

    The split is a uniform random ``n_train``-subset of the table and the noisy rows a uniform random
    ``n_noisy``-subset of it, so for a training row ``i`` any other row is a clean training row with probability
    ``(n_train - n_noisy - 1) / (N - 1)`` (``i`` clean) or ``(n_train - n_noisy) / (N - 1)`` (``i`` noisy) and a
    noisy one with ``n_noisy / (N - 1)`` or ``(n_noisy - 1) / (N - 1)``. Two rows sharing an input collide with
    probability ``1 / num_classes`` when either label is uniform noise, else when their deterministic labels
    (the rule's, or the bijective ``g``) are equal. Summing over the ``2 (A - 1)`` rows that share ``a`` or ``b``
    gives, e.g. for ``add`` with uniform noise on the full table, ``2 (1 - 1/P)`` for a noisy row and
    ``2 (1 - 1/P) n_noisy / (N - 1)`` (the paper's ``2 alpha (1 - 1/P)``) for a clean one.

    Returns ``(given_clean, given_noisy)``: float64 (N,) each, in the table's row order; average them over the
    rows of a part (e.g. ``task.part == k``) for that part's expected mean. ``given_noisy`` is nan when the config
    has no noisy rows (and ``given_clean`` is nan if every training row is noisy).
    """
    config = config.validate()
    task = make_modular_task(config.replace(noise_ratio=0.0))
    N, A, C = task.num_rows, len(config.alphabet), config.num_classes
    n_train = N if config.full_table else round(config.train_fraction * N)
    n_noisy = round(config.noise_ratio * n_train)
    f = task.clean_labels.reshape(A, A)
    sides = (f, f.T)          # rows sharing a: along axis 1 of f; sharing b: along axis 1 of f.T
    uniform = config.noise == "uniform"
    g = None if uniform else bijective_noise_label(task.a, task.b, config.modulus).reshape(A, A)

    match = {"cc": np.zeros((A, A)), "cn": np.zeros((A, A)), "nc": np.zeros((A, A)), "nn": np.zeros((A, A))}
    for k, f_side in enumerate(sides):
        back = (lambda x: x) if k == 0 else (lambda x: x.T)
        match["cc"] += back(_same_label_counts(f_side, f_side, C) - 1)
        if uniform:
            for key in ("cn", "nc", "nn"):
                match[key] += (A - 1) / C
        else:
            g_side = g if k == 0 else g.T
            self_match = (f_side == g_side).astype(np.int64)
            match["cn"] += back(_same_label_counts(f_side, g_side, C) - self_match)
            match["nc"] += back(_same_label_counts(g_side, f_side, C) - self_match)
            match["nn"] += back(_same_label_counts(g_side, g_side, C) - 1)
    denom = max(N - 1, 1)
    given_clean = ((n_train - n_noisy - 1) * match["cc"] + n_noisy * match["cn"]) / denom
    given_noisy = ((n_train - n_noisy) * match["nc"] + (n_noisy - 1) * match["nn"]) / denom
    if n_noisy == 0:
        given_noisy = np.full((A, A), np.nan)
    if n_train - n_noisy == 0:
        given_clean = np.full((A, A), np.nan)
    return given_clean.ravel(), given_noisy.ravel()
