"""How well a predicted change of token similarity matches the measured change after an edit of the data.

The tokens of a measured set fall into *planted* tokens (those whose signature the edit targets: a planted
cluster's tokens on the embedding side, its shared successors on the unembedding side), *touched* tokens (planted,
or otherwise named by the edit) and the rest. The pairs then fall into three classes:

* ``planted``: both tokens planted (the pairs the edit is meant to make similar);
* ``affected``: at least one token planted (the pairs whose change the prediction is scored on);
* ``untouched``: no token touched: the null. Their measured change is what two trainings from one
  initialisation and batch order differ by when the data of both tokens is (nearly) the same.

:func:`edit_effect` scores one predicted change against the measured one on these classes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from probsig_jax.analysis.metrics import pearson
from probsig_jax.analysis.significance import vector_correlation_test
from probsig_jax.validation import require


def pair_classes(n: int, planted: Any, touched: Any) -> dict[str, np.ndarray]:
    """Boolean (n, n) upper-triangle masks (diagonal excluded) ``planted``, ``affected``, ``untouched`` for
    boolean (n,) token masks ``planted`` and ``touched`` (planted tokens count as touched)."""
    planted, touched = np.asarray(planted, bool), np.asarray(touched, bool)
    require(planted.shape == (n,) and touched.shape == (n,), "planted",
            f"token masks must have shape ({n},), got {planted.shape} and {touched.shape}")
    touched = touched | planted
    upper = np.triu(np.ones((n, n), bool), 1)
    return {"planted": upper & planted[:, None] & planted[None, :],
            "affected": upper & (planted[:, None] | planted[None, :]),
            "untouched": upper & ~touched[:, None] & ~touched[None, :]}


def edit_effect(predicted: Any, measured: Any, classes: dict[str, np.ndarray], *, permutations: int = 999,
                seed: int = 0) -> dict[str, Any]:
    """Scores of a predicted (n, n) change of similarity against the measured (n, n) change.

    Returns:
      ``affected``: over the affected pairs, Pearson r with its permutation null (measured values relabelled
        among the affected pairs; ``r_null_q975``: its 97.5 % quantile; pairs share tokens, so the p-value is
        optimistic), and the sign agreement (share of pairs whose measured change has the predicted sign; its null
        ``sign_agreement_null`` is the agreement expected if the signs were independent, its ceiling 1);
      ``planted``: the mean predicted and measured change of the planted pairs and their ratio;
      ``untouched``: the measured change of the untouched pairs (mean, std, 2.5 / 97.5 % quantiles, mean |.|);
      ``separation``: (planted mean - untouched mean) / untouched std, and the share of untouched pairs whose
        change reaches the planted pairs' mean (the null's tail probability; 0 = clearly separated);
      the pair counts.
    """
    P, D = np.asarray(predicted, np.float64), np.asarray(measured, np.float64)
    require(P.shape == D.shape and P.ndim == 2 and P.shape[0] == P.shape[1], "measured",
            f"predicted and measured must be the same (n, n) shape, got {P.shape} and {D.shape}")
    affected, planted, untouched = (np.asarray(classes[k], bool) for k in ("affected", "planted", "untouched"))
    out: dict[str, Any] = {"pairs": {k: int(np.count_nonzero(m)) for k, m in
                                     (("affected", affected), ("planted", planted), ("untouched", untouched))}}
    p, d = P[affected], D[affected]
    if p.size >= 3 and np.ptp(p) > 0 and np.ptp(d) > 0:
        test = vector_correlation_test(p, d, permutations=permutations, seed=seed)
        sp, sd = np.sign(p), np.sign(d)
        share_pos_p, share_pos_d = float(np.mean(sp > 0)), float(np.mean(sd > 0))
        out["affected"] = {"pearson": test["r"], "pearson_p": test["p"], "r_null_q975": test["null_q975"],
                           "sign_agreement": float(np.mean(sp == sd)),
                           "sign_agreement_null": share_pos_p * share_pos_d + (1 - share_pos_p) * (1 - share_pos_d)}
    else:
        out["affected"] = {"pearson": None, "sign_agreement": None}
    u = D[untouched]
    out["untouched"] = ({"mean": float(u.mean()), "std": float(u.std()), "q025": float(np.quantile(u, 0.025)),
                         "q975": float(np.quantile(u, 0.975)), "mean_abs": float(np.mean(np.abs(u)))}
                        if u.size else {})
    if planted.any():
        pm, dm = float(P[planted].mean()), float(D[planted].mean())
        out["planted"] = {"predicted_mean": pm, "measured_mean": dm,
                          "measured_over_predicted": dm / pm if pm != 0 else None}
        if u.size >= 2 and u.std() > 0:
            out["separation"] = {"z": (dm - float(u.mean())) / float(u.std()),
                                 "untouched_tail": float(np.mean(u >= dm) if dm >= u.mean() else np.mean(u <= dm))}
    return out


def pearson_over(predicted: Any, measured: Any, mask: np.ndarray) -> float:
    """Pearson r of the two (n, n) matrices over the pairs of ``mask`` (nan where either is constant)."""
    return pearson(np.asarray(predicted, np.float64)[mask], np.asarray(measured, np.float64)[mask])


__all__ = ["edit_effect", "pair_classes", "pearson_over"]
