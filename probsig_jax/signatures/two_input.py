"""Signatures of a two-input task ``(X, Y) -> Z`` (modular arithmetic, MODADD section 3), from its data set.

With ``p(x, y, z)`` the (weighted) empirical distribution of the rows ``(a, b, label)``:

==========  =====================  ============================================================
name        shape                  definition
==========  =====================  ============================================================
``r_a``     (P_in,)                ``P(X = x)``; ``r_b`` likewise ``P(Y = y)``; ``r_z`` (P_out,) ``P(Z = z)``
``phi_a``   (P_in, P_out)          label signature ``P(Z = z | X = x)``; ``phi_b``: ``P(Z = z | Y = x)``
``Phi_a``   (P_in, P_in, P_out)    joint signature ``Phi_a[x](y, z) = P(Y = y, Z = z | X = x)``;
                                   ``Phi_b[x](y, z) = P(X = y, Z = z | Y = x)``
``psi_a``   (P_in, P_in)           trace-back ``P(Y = y | X = x)``; ``psi_b[x](y) = P(X = y | Y = x)``
``Psi``     (P_out, P_in, P_in)    output side ``Psi[z](x, y) = P(X = x, Y = y | Z = z)``
==========  =====================  ============================================================

A conditional on a token that never occurs (marginal 0) is set to 0; every use multiplies it by that
marginal.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from probsig_jax.data.dataset import Dataset
from probsig_jax.validation import require, require_int


@dataclass(frozen=True)
class TwoInputSignatures:
    """Every signature of MODADD section 3 (float64 numpy; see the module docstring for shapes)."""

    joint: np.ndarray      # (P_in, P_in, P_out) p(x, y, z)
    r_a: np.ndarray
    r_b: np.ndarray
    r_z: np.ndarray
    phi_a: np.ndarray
    phi_b: np.ndarray
    Phi_a: np.ndarray
    Phi_b: np.ndarray
    psi_a: np.ndarray
    psi_b: np.ndarray
    Psi: np.ndarray

    @property
    def num_inputs(self) -> int:
        return int(self.joint.shape[0])

    @property
    def num_classes(self) -> int:
        return int(self.joint.shape[2])


def _conditional(joint: np.ndarray, marginal: np.ndarray) -> np.ndarray:
    """``joint / marginal`` over the leading axis, 0 where the marginal is 0."""
    shape = (-1,) + (1,) * (joint.ndim - 1)
    safe = np.where(marginal > 0, marginal, 1.0).reshape(shape)
    return np.where(marginal.reshape(shape) > 0, joint / safe, 0.0)


def joint_distribution(dataset: Dataset, num_inputs: int, num_classes: int) -> np.ndarray:
    """``p(x, y, z)`` (P_in, P_in, P_out) of a data set with inputs (N, 2) and labels < num_classes."""
    require(dataset.seq_len == 2, "dataset", f"needs inputs (N, 2) = (a, b), got length {dataset.seq_len}")
    require_int(num_inputs, "num_inputs", minimum=1)
    require_int(num_classes, "num_classes", minimum=1)
    a, b = dataset.inputs[:, 0], dataset.inputs[:, 1]
    require(int(a.max(initial=0)) < num_inputs and int(b.max(initial=0)) < num_inputs, "num_inputs",
            f"inputs go up to {max(int(a.max()), int(b.max()))}, beyond num_inputs - 1 = {num_inputs - 1}")
    require(int(dataset.labels.max(initial=0)) < num_classes, "num_classes",
            f"labels go up to {int(dataset.labels.max())}, beyond num_classes - 1 = {num_classes - 1}")
    joint = np.zeros((num_inputs, num_inputs, num_classes))
    np.add.at(joint, (a, b, dataset.labels), dataset.sample_weights())
    return joint


def two_input_signatures(dataset: Dataset, num_inputs: int, num_classes: int) -> TwoInputSignatures:
    """Every signature of the data set's distribution (see the module docstring)."""
    p = joint_distribution(dataset, num_inputs, num_classes)
    r_a, r_b, r_z = p.sum(axis=(1, 2)), p.sum(axis=(0, 2)), p.sum(axis=(0, 1))
    p_b_first = p.transpose(1, 0, 2)                 # [y, x, z]
    return TwoInputSignatures(
        joint=p, r_a=r_a, r_b=r_b, r_z=r_z,
        phi_a=_conditional(p.sum(axis=1), r_a), phi_b=_conditional(p.sum(axis=0), r_b),
        Phi_a=_conditional(p, r_a), Phi_b=_conditional(p_b_first, r_b),
        psi_a=_conditional(p.sum(axis=2), r_a), psi_b=_conditional(p_b_first.sum(axis=2), r_b),
        Psi=_conditional(p.transpose(2, 0, 1), r_z))
