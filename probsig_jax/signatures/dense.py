"""Probability signatures (PAPER section 3) from a data set or from count matrices.

Everything is computed from :class:`SignatureCounts`: the weighted joint count
matrix ``N[y, s] = sum_i w_i 1{y_i = y} c_s(x_i)`` (the paper's N_{x,nu} before
centering), the label counts and the total weight. A corpus can build the same
object from bigram counts, so one code path serves the synthetic tasks and
language corpora. Host-side numpy in float64: these are statistics, not a hot loop.

Notation (ours / the paper's): Q_s = phi_x^y (label signature of input token s),
R_y = psi_nu^X (input signature of label y), K_s = phi_x^X (co-occurrence
signature), J_s = phi_x^{X|y} (joint signature), f_s ~ N_x^in / N.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from probsig_jax.analysis.metrics import cosine_similarity_matrix
from probsig_jax.data.dataset import Dataset
from probsig_jax.data.features import count_features, num_features
from probsig_jax.validation import ConfigError, require


@dataclass(frozen=True)
class SignatureCounts:
    """Sufficient statistics of the signatures.

    Attributes:
      joint: (V, F) float64, ``sum_i w_i 1{y_i = y} c_s(x_i)``.
      label_counts: (V,) float64, ``sum_i w_i 1{y_i = y}``.
      total_weight: ``sum_i w_i`` (> 0).
      seq_len: L, the number of input positions (features counted per sample).
    """

    joint: np.ndarray
    label_counts: np.ndarray
    total_weight: float
    seq_len: int

    def __post_init__(self) -> None:
        joint = np.asarray(self.joint, dtype=np.float64)
        labels = np.asarray(self.label_counts, dtype=np.float64)
        require(joint.ndim == 2, "joint", f"must be a (V, F) matrix, got shape {joint.shape}")
        require(labels.shape == (joint.shape[0],), "label_counts",
                f"must have shape ({joint.shape[0]},) to match joint, got {labels.shape}")
        require(bool(np.all(joint >= 0)), "joint", "counts must be >= 0")
        require(bool(np.all(labels >= 0)), "label_counts", "counts must be >= 0")
        require(self.total_weight > 0, "total_weight", f"must be > 0, got {self.total_weight}")
        object.__setattr__(self, "joint", joint)
        object.__setattr__(self, "label_counts", labels)

    @property
    def vocab_size(self) -> int:
        return int(self.joint.shape[0])

    @property
    def num_features(self) -> int:
        return int(self.joint.shape[1])

    @property
    def feature_counts(self) -> np.ndarray:
        """(F,) ``sum_i w_i c_s(x_i)``: the paper's N_x^in when tokens occur once per input."""
        return self.joint.sum(axis=0)


def signature_counts(dataset: Dataset, positional: bool = False) -> SignatureCounts:
    """Count statistics of a data set (bag-of-tokens or positional features).

    Scatters each sample's weight into ``joint[label, feature]`` directly: memory is
    O(V F + N L), never the dense (N, F) feature matrix.
    """
    w = np.ones(dataset.num_samples) if dataset.weights is None else np.asarray(dataset.weights, dtype=np.float64)
    n, seq_len = dataset.inputs.shape
    F = num_features(dataset.vocab_size, seq_len, positional)
    cols = dataset.inputs + (np.arange(seq_len)[None, :] * dataset.vocab_size if positional else 0)
    joint = np.zeros((dataset.vocab_size, F))
    np.add.at(joint, (np.repeat(dataset.labels, seq_len), cols.reshape(-1)), np.repeat(w, seq_len))
    label_counts = np.bincount(dataset.labels, weights=w, minlength=dataset.vocab_size).astype(np.float64)
    return SignatureCounts(joint, label_counts, float(w.sum()), dataset.seq_len)


def _as_counts(data: Dataset | SignatureCounts, positional: bool = False) -> SignatureCounts:
    if not isinstance(data, (Dataset, SignatureCounts)):
        raise TypeError(f"data must be a probsig_jax.data.Dataset or SignatureCounts, got {type(data).__name__} "
                        "(wrap arrays as Dataset(inputs, labels, vocab_size))")
    return data if isinstance(data, SignatureCounts) else signature_counts(data, positional)


def frequency_weights(data: Dataset | SignatureCounts, positional: bool = False) -> np.ndarray:
    """(F,) f_s = E[c_s(X)]: the mean count of feature s per input."""
    c = _as_counts(data, positional)
    return c.feature_counts / c.total_weight


def signature_matrix(data: Dataset | SignatureCounts, positional: bool = False) -> np.ndarray:
    """(V, F) M = E[(e_Y - u 1) c(X)^T] with u = 1/V.

    Column s equals f_s (Q_s - u); row y equals P(Y=y) L R_y - u f. M drives the
    linearised gradient flow of the linear model (PAPER section 4).
    """
    c = _as_counts(data, positional)
    u = 1.0 / c.vocab_size
    return (c.joint - u * c.feature_counts[None, :]) / c.total_weight


def input_signatures(data: Dataset | SignatureCounts, positional: bool = False) -> np.ndarray:
    """(V, F) Q with column s = P(Y = . | s in X) (count weighted); the paper's phi_x^y.

    Columns of features that never occur are all-zero (no distribution exists).
    """
    c = _as_counts(data, positional)
    n = c.feature_counts
    return np.divide(c.joint, n[None, :], out=np.zeros_like(c.joint), where=n[None, :] > 0)


def output_signatures(data: Dataset | SignatureCounts, positional: bool = False) -> np.ndarray:
    """(V, F) R with row y = E[c(X) | Y = y] / L, a distribution over features; the paper's psi_nu^X.

    Rows of labels that never occur are all-zero.
    """
    c = _as_counts(data, positional)
    denom = c.label_counts * c.seq_len
    return np.divide(c.joint, denom[:, None], out=np.zeros_like(c.joint), where=denom[:, None] > 0)


def cooccurrence_matrix(dataset: Dataset, positional: bool = False) -> np.ndarray:
    """(F, F) second moment Sigma_c = E[c(X) c(X)^T]; enters the next-order softmax correction."""
    feats = count_features(dataset.inputs, dataset.vocab_size, positional)
    w = dataset.sample_weights()
    return (feats * w[:, None]).T @ feats


def cooccurrence_signatures(dataset: Dataset, positional: bool = False) -> np.ndarray:
    """(F, F) K with row s = distribution of the *other* input tokens given s in X; the paper's phi_x^X.

    ``K[s, r] ~ E[c_s c_r] - delta_{rs} E[c_s]`` (pairs of distinct positions), normalised over r.
    """
    second = cooccurrence_matrix(dataset, positional)
    pairs = second - np.diag(frequency_weights(dataset, positional))
    pairs = np.clip(pairs, 0.0, None)
    norm = pairs.sum(axis=1, keepdims=True)
    return np.divide(pairs, norm, out=np.zeros_like(pairs), where=norm > 0)


def joint_signature(dataset: Dataset, token: int, positional: bool = False) -> np.ndarray:
    """(F, V) J_s[r, y] = P(r in X, Y = y | s in X) for s = ``token``; the paper's phi_x^{X|y}."""
    feats = count_features(dataset.inputs, dataset.vocab_size, positional)
    require(0 <= token < feats.shape[1], "token", f"must be in [0, {feats.shape[1] - 1}], got {token}")
    w = dataset.sample_weights()
    has_s = feats[:, token] > 0
    require(bool(has_s.any()), "token", f"token {token} never occurs in the inputs")
    ws = w * has_s
    onehot = np.zeros((dataset.num_samples, dataset.vocab_size))
    onehot[np.arange(dataset.num_samples), dataset.labels] = 1.0
    return ((feats > 0) * ws[:, None]).T @ onehot / ws.sum()


# ----------------------------------------------------------------------------- similarities

def _columns(matrix: np.ndarray, name: str) -> np.ndarray:
    matrix = np.asarray(matrix, dtype=np.float64)
    require(matrix.ndim == 2, name, f"must be a 2-D matrix (dim, tokens), got shape {matrix.shape}")
    return matrix


def cosine_similarity(matrix: np.ndarray) -> np.ndarray:
    """(n, n) cosine similarity of the columns of ``matrix`` (dim, n); zero columns give 0."""
    return cosine_similarity_matrix(_columns(matrix, "matrix").T)


def signature_similarity(data: Dataset | SignatureCounts, positional: bool = False) -> np.ndarray:
    """(F, F) cosine similarity of the columns of M: the similarity the theory predicts."""
    return cosine_similarity(signature_matrix(data, positional))


def _distributions(matrix: np.ndarray, name: str) -> np.ndarray:
    m = _columns(matrix, name)
    require(bool(np.all(m >= 0)), name, "distributions must be non-negative")
    s = m.sum(axis=0, keepdims=True)
    return np.divide(m, s, out=np.zeros_like(m), where=s > 0)


def hellinger_similarity(distributions: np.ndarray) -> np.ndarray:
    """(n, n) ``1 - H(p, q)`` for the columns (each a distribution) of ``distributions`` (V, n).

    H is the Hellinger distance in [0, 1]: ``H^2 = 1 - sum sqrt(p q)``.
    """
    p = np.sqrt(_distributions(distributions, "distributions"))
    bc = np.clip(p.T @ p, 0.0, 1.0)
    return 1.0 - np.sqrt(1.0 - bc)


def jensen_shannon_similarity(distributions: np.ndarray) -> np.ndarray:
    """(n, n) ``1 - JS(p, q)`` with JS the Jensen-Shannon divergence in bits (in [0, 1])."""
    p = _distributions(distributions, "distributions")
    n = p.shape[1]

    def plogp(x):
        return np.where(x > 0, x * np.log2(np.where(x > 0, x, 1.0)), 0.0)

    ent = plogp(p).sum(axis=0)
    out = np.empty((n, n))
    for i in range(n):
        mid = 0.5 * (p[:, i:i + 1] + p)
        js = -plogp(mid).sum(axis=0) - 0.5 * (-ent[i] - ent)
        out[i] = 1.0 - np.clip(js, 0.0, 1.0)
    return out


SIMILARITIES = {
    "cosine_M": lambda data, positional=False: signature_similarity(data, positional),
    "cosine_Q": lambda data, positional=False: cosine_similarity(input_signatures(data, positional)),
    "hellinger_Q": lambda data, positional=False: hellinger_similarity(input_signatures(data, positional)),
    "js_Q": lambda data, positional=False: jensen_shannon_similarity(input_signatures(data, positional)),
}
"""Named signature similarities: cosine of M columns (the default) and of the raw Q columns, Hellinger, JS."""


def similarity_by_name(name: str, data: Dataset | SignatureCounts, positional: bool = False) -> np.ndarray:
    """One of :data:`SIMILARITIES`; raises ConfigError for an unknown name."""
    if name not in SIMILARITIES:
        raise ConfigError("signature_similarity", f"must be one of {sorted(SIMILARITIES)}, got {name!r}")
    return SIMILARITIES[name](data, positional)
