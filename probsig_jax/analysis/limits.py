"""What each alignment metric can reach: its ceiling and its chance level, in closed form.

* ceiling: the expected value for an embedding equal to the signature similarity up to tie-breaking (below 1
  when the signature has ties: a tied signature cannot be matched better than a random order of its ties);
* chance level: the expected value under a uniformly random relabelling of the tokens.

Both use the same tie conventions as :mod:`probsig_jax.analysis.metrics`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from probsig_jax.analysis.metrics import (_check_k, _check_q, _square, _top_count, midranks, offdiagonal,
                                          top_inclusion, topk_inclusion)
from probsig_jax.validation import require

__all__ = ["metric_ceilings", "metric_chance_levels"]


def metric_ceilings(S_sig: Any, *, k: int, q: float) -> dict[str, float]:
    """What a perfect embedding scores: the expected metrics of an embedding equal to ``S_sig`` up to
    tie-breaking (``S_sig`` plus an infinitesimal symmetric perturbation), in closed form.

    * ``pearson``, ``strong_pair_pearson``: 1;
    * ``topk_overlap``: mean over rows of ``sum_j p_ij^2 / k`` with ``p`` the top-k inclusion probabilities;
    * ``strong_pair_precision`` / ``weak_pair_precision``: ``sum_p p_p^2 / c`` over the top / bottom pairs;
    * ``spearman``: the tie-broken embedding has ordinal ranks whose mean given the tie group is the
      signature's midrank, so its Spearman is ``sqrt(var(midranks) / var(ordinal ranks))`` exactly.

    Without ties every ceiling is 1.
    """
    s = _square(S_sig, "S_sig", 3)
    qf = _check_q(q)
    k = _check_k(k, s.shape[0])
    ps = offdiagonal(s)
    count = _top_count(qf, ps.size)
    p_top, p_bottom = top_inclusion(ps, count), top_inclusion(-ps, count)
    var_ordinal = (ps.size**2 - 1) / 12.0
    spearman_ceiling = float(np.sqrt(np.var(midranks(ps)) / var_ordinal)) if ps.size > 1 else float("nan")
    return {
        "pearson": 1.0,
        "spearman": spearman_ceiling,
        "topk_overlap": float(np.mean(np.sum(topk_inclusion(s, k) ** 2, axis=1)) / k),
        "strong_pair_precision": float(np.sum(p_top**2) / count),
        "weak_pair_precision": float(np.sum(p_bottom**2) / count),
        "strong_pair_pearson": 1.0,
    }


def metric_chance_levels(n: int, *, k: int, q: float) -> dict[str, float]:
    """Expected metrics under a uniformly random relabelling of the ``n`` tokens of one matrix, in closed form.

    A relabelling maps token ``i``'s neighbourhood to a uniformly random ``k``-subset of the other tokens,
    so the top-k overlap expects ``k / (n - 1)``; each of the ``c`` top pairs goes to a uniformly random pair,
    so the strong- and weak-pair precisions expect ``c / P``; Pearson and Spearman of the off-diagonal
    values expect 0 (the relabelled values are a uniformly random arrangement of the same multiset).
    """
    n = require_int_tokens(n)
    qf = _check_q(q)
    k = _check_k(k, n)
    pairs = n * (n - 1) // 2
    count = _top_count(qf, pairs)
    return {"pearson": 0.0, "spearman": 0.0, "topk_overlap": k / (n - 1), "strong_pair_precision": count / pairs,
            "weak_pair_precision": count / pairs, "strong_pair_pearson": 0.0}


def require_int_tokens(n: Any) -> int:
    ok = isinstance(n, (int, np.integer)) and not isinstance(n, bool) and int(n) >= 3
    require(ok, "n", f"must be an integer number of tokens >= 3, got {n!r}")
    return int(n)
