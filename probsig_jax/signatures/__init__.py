"""Probability signatures (PAPER section 3).

- :mod:`.dense`: dense (V, F) statistics of a data set or of count matrices
  (:class:`SignatureCounts`), the signature matrix M, the signatures Q, R, K, J and
  their similarities. Everything it exports is re-exported here unchanged, so
  ``from probsig_jax.signatures import signature_matrix`` keeps working.
- :mod:`.pair_counts`: streaming windowed (context, next token) counts of a token stream,
  stored sparse.
- :mod:`.corpus`: corpus-scale, sparse signatures from those counts (label = next token,
  context window w): sparse Q / R, M as a ``LinearOperator``, similarities over a token set;
  it re-exports the counting functions.

Notation (ours / the paper's): Q_s = phi_x^y (phi_next for a corpus), R_y = psi_nu^X
(phi_pre), K_s = phi_x^X, J_s = phi_x^{X|y}, f_s ~ N_x^in, M before centering ~ N_{x,nu}.
"""

from probsig_jax.signatures import corpus, dense, pair_counts
from probsig_jax.signatures.dense import (
    SIMILARITIES,
    SignatureCounts,
    cooccurrence_matrix,
    cooccurrence_signatures,
    cosine_similarity,
    frequency_weights,
    hellinger_similarity,
    input_signatures,
    jensen_shannon_similarity,
    joint_signature,
    output_signatures,
    signature_counts,
    signature_matrix,
    signature_similarity,
    similarity_by_name,
)

__all__ = [
    "SIMILARITIES",
    "SignatureCounts",
    "cooccurrence_matrix",
    "cooccurrence_signatures",
    "corpus",
    "cosine_similarity",
    "dense",
    "frequency_weights",
    "hellinger_similarity",
    "input_signatures",
    "jensen_shannon_similarity",
    "joint_signature",
    "output_signatures",
    "pair_counts",
    "signature_counts",
    "signature_matrix",
    "signature_similarity",
    "similarity_by_name",
]
