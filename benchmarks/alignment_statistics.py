#!/usr/bin/env python
"""Alignment statistics: Mantel permutation test and token bootstrap, against straightforward loops.

On two related random similarity matrices of ``--tokens`` tokens (cosines of 8-dimensional Gaussian vectors
and of noisy copies of them): the Mantel test (``probsig_jax.analysis.significance.mantel_test``) with
``--permutations`` relabellings and the token bootstrap (``bootstrap_correlations``) with ``--resamples``
resamples, Pearson. Baselines in the same run: a loop that relabels the matrix with ``np.ix_`` and calls
``scipy.stats.pearsonr`` on the upper triangles, and a loop that builds each resampled matrix and drops the
pairs of a token with its own copy. The baselines run ``--baseline-iterations`` iterations and are scaled
to the full count (stated in the output). Both must agree: the loop's correlations are compared with ours
on the same permutations / resamples. Target: Mantel + bootstrap on 1000 tokens under 10 s.

Usage::

    python benchmarks/alignment_statistics.py           # 1000 tokens; JSON in benchmarks/results/
    python benchmarks/alignment_statistics.py --quick   # CI smoke run: 120 tokens
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from _common import REPO_ROOT, format_table, provenance, write_json_atomic

import numpy as np  # noqa: E402
import scipy.stats  # noqa: E402

from probsig_jax.analysis import significance  # noqa: E402
from probsig_jax.analysis.metrics import cosine_similarity_matrix  # noqa: E402

TARGET_S = 10.0


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, default=1000)
    p.add_argument("--permutations", type=int, default=999)
    p.add_argument("--resamples", type=int, default=1000)
    p.add_argument("--baseline-iterations", type=int, default=100, help="loop iterations timed, then scaled")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="CI smoke run: 120 tokens, 99 permutations, 1 repeat")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    if args.quick:
        args.tokens, args.permutations, args.resamples, args.baseline_iterations, args.repeats = 120, 99, 100, 20, 1
    return args


def loop_mantel(A, B, perms):
    rows, cols = np.triu_indices(A.shape[0], k=1)
    b = B[rows, cols]
    return np.array([scipy.stats.pearsonr(A[np.ix_(p, p)][rows, cols], b)[0] for p in perms])


def loop_bootstrap(A, B, draws):
    out = []
    for idx in draws:
        rows, cols = np.triu_indices(len(idx), k=1)
        keep = idx[rows] != idx[cols]
        r, c = idx[rows][keep], idx[cols][keep]
        out.append(scipy.stats.pearsonr(A[r, c], B[r, c])[0])
    return np.array(out)


def timed(fn, repeats):
    times, result = [], None
    for _ in range(repeats):
        tic = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - tic)
    return {"min_s": min(times), "median_s": statistics.median(times), "max_s": max(times), "runs_s": times}, result


def main(argv=None):
    args = parse_args(argv)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(args.tokens, 8))
    A = cosine_similarity_matrix(X)
    B = cosine_similarity_matrix(X + rng.normal(size=X.shape))

    mantel_t, mantel = timed(lambda: significance.mantel_test(A, B, permutations=args.permutations, seed=1),
                             args.repeats)
    boot_t, boot = timed(lambda: significance.bootstrap_correlations([A, B], resamples=args.resamples, seed=2),
                         args.repeats)

    # The baselines on the very permutations / resamples ours used, first iterations only.
    perms = significance._permutations(args.tokens, args.permutations, 1)[: args.baseline_iterations]
    tic = time.perf_counter()
    loop_null = loop_mantel(A, B, perms)
    loop_mantel_s = (time.perf_counter() - tic) * args.permutations / len(perms)
    ours_null = significance._permuted_inner_products(significance._standardised(A, "pearson"),
                                                      [significance._standardised(B, "pearson")], perms)[:, 0]
    draws_rng = np.random.default_rng(2)
    draws = [draws_rng.integers(0, args.tokens, args.tokens) for _ in range(args.resamples)][: args.baseline_iterations]
    tic = time.perf_counter()
    loop_boot = loop_bootstrap(A, B, draws)
    loop_boot_s = (time.perf_counter() - tic) * args.resamples / len(draws)

    ours_s = mantel_t["median_s"] + boot_t["median_s"]
    loop_s = loop_mantel_s + loop_boot_s
    summary = {
        "tokens": args.tokens, "pairs": args.tokens * (args.tokens - 1) // 2, "permutations": args.permutations,
        "resamples": args.resamples, "observed_pearson": mantel["r"], "mantel_p": mantel["p"],
        "bootstrap_ci95": list(significance.bootstrap_interval(boot[:, 0, 1])),
        "ours_mantel_s": mantel_t, "ours_bootstrap_s": boot_t,
        "loop_mantel_s_scaled": loop_mantel_s, "loop_bootstrap_s_scaled": loop_boot_s,
        "baseline_iterations": args.baseline_iterations,
        "ours_total_median_s": ours_s, "loop_total_s_scaled": loop_s, "speedup": loop_s / ours_s,
        "max_abs_diff_mantel_null_vs_loop": float(np.max(np.abs(ours_null - loop_null))),
        "max_abs_diff_bootstrap_vs_loop": float(np.max(np.abs(boot[: len(draws), 0, 1] - loop_boot))),
        "target_s": TARGET_S, "target_met": ours_s < TARGET_S,
    }
    result = {"benchmark": "alignment_statistics", "summary": summary, "provenance": provenance(vars(args))}
    out = Path(args.out) if args.out else REPO_ROOT / "benchmarks" / "results" / \
        f"alignment_statistics_cpu{'_quick' if args.quick else ''}.json"
    write_json_atomic(out, result)
    print(format_table(["stage", "ours median (min-max) s", f"loop s (from {args.baseline_iterations} iterations)",
                        "ratio"], [
        [f"Mantel, {args.permutations} permutations", f"{mantel_t['median_s']:.3g} ({mantel_t['min_s']:.3g}-"
         f"{mantel_t['max_s']:.3g})", loop_mantel_s, loop_mantel_s / mantel_t["median_s"]],
        [f"bootstrap, {args.resamples} resamples", f"{boot_t['median_s']:.3g} ({boot_t['min_s']:.3g}-"
         f"{boot_t['max_s']:.3g})", loop_boot_s, loop_boot_s / boot_t["median_s"]],
        ["total", f"{ours_s:.3g}", loop_s, loop_s / ours_s]]))
    print(f"{args.tokens} tokens: target (< {TARGET_S:g} s for both) {'met' if summary['target_met'] else 'NOT met'};"
          f" ours vs loop: null max |diff| {summary['max_abs_diff_mantel_null_vs_loop']:.2e}, bootstrap max |diff| "
          f"{summary['max_abs_diff_bootstrap_vs_loop']:.2e}")
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
