#!/usr/bin/env python
"""Corpus pipeline throughput: tokenization, signature counting and the truncated SVD, against baselines.

On the embedded corpus (the Python standard library sources and help topics; ``--max-bytes`` for less):

- **Tokenization** (Qwen2.5 BPE through tiktoken): MB/s of UTF-8 text for ``Tokenizer.encode_batch`` with 1
  and 2 threads (pure tokenization of documents already in memory), and for the whole
  ``tokenize_corpus`` pipeline (reading the files, tokenizing with 2 workers, writing uint32 shards and
  the manifest) into an empty cache. Target: >= 10 MB/s with 2 threads.
- **Counting** (``count_context_pairs``, windows 1 and 4) on the corpus's token stream (vocabulary
  compacted, as E4 uses it): tokens/s, single-threaded numpy/scipy, so the figure is per core. Baseline:
  ``count_context_pairs_counter`` (``collections.Counter`` over (context, next) pairs) on a slice, and a
  dense numpy ``bincount`` over the V_c x V_c table where it fits in memory. Both baselines must give the
  same counts (checked on the slice). Target: >= 20M tokens/s per core.
- **Truncated SVD** of the sparse signature operator M (V_c x V_c, sparse + rank one), k = 64, with ARPACK
  (``scipy.sparse.linalg.svds``) and a randomized range finder; baseline: a dense ``numpy.linalg.svd`` of M
  where it fits (``--dense-svd-max`` rows), else skipped.

Usage::

    python benchmarks/corpus_pipeline.py            # full embedded corpus; JSON in benchmarks/results/
    python benchmarks/corpus_pipeline.py --quick    # CI smoke run: 50 kB of it
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from _common import REPO_ROOT, format_table, provenance, write_json_atomic

import numpy as np  # noqa: E402

TOKENIZE_TARGET_MB_S = 10.0
COUNT_TARGET_TOK_S = 20e6


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--max-bytes", type=int, default=None, help="read at most this much of the corpus (UTF-8 bytes)")
    p.add_argument("--windows", default="1,4", help="comma list of signature windows to count")
    p.add_argument("--counter-tokens", type=int, default=300_000, help="slice length for the Counter baseline")
    p.add_argument("--rank", type=int, default=64, help="k of the truncated SVD")
    p.add_argument("--dense-svd-max", type=int, default=6000, help="largest V_c for the dense-SVD baseline")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="CI smoke run: 50 kB, rank 16, one repeat")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    if args.quick:
        args.max_bytes, args.rank, args.repeats, args.counter_tokens, args.dense_svd_max = 50_000, 16, 1, 50_000, 3000
    return args


def best_of(fn, repeats: int):
    """(min seconds, last result) over ``repeats`` calls."""
    times, result = [], None
    for _ in range(repeats):
        tic = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - tic)
    return min(times), result


def main(argv=None) -> dict:
    args = parse_args(argv)
    from probsig_jax.corpus import CorpusConfig, iter_documents, open_shards, tokenize_corpus
    from probsig_jax.signatures.corpus import count_context_pairs, count_context_pairs_counter
    from probsig_jax.theory.corpus import truncated_signature_modes
    from probsig_jax.corpus import VocabularyMap, qwen2_tokenizer

    config = CorpusConfig(max_bytes=args.max_bytes)
    tokenizer = qwen2_tokenizer()
    docs = list(iter_documents(config))
    n_bytes = sum(len(d.encode("utf-8")) for d in docs)
    print(f"corpus: {len(docs)} documents, {n_bytes / 1e6:.2f} MB", flush=True)

    tokenization = {}
    for threads in (1, 2):
        seconds, encoded = best_of(lambda: tokenizer.encode_batch(docs, num_threads=threads), args.repeats)
        tokenization[f"encode_batch_{threads}_threads"] = {"seconds": seconds, "mb_per_s": n_bytes / 1e6 / seconds,
                                                           "tokens": int(sum(len(e) for e in encoded))}
        print(f"encode_batch, {threads} thread(s): {n_bytes / 1e6 / seconds:.1f} MB/s", flush=True)
    with tempfile.TemporaryDirectory(prefix="corpus_bench_") as cache:
        tic = time.perf_counter()
        shards = tokenize_corpus(config, tokenizer, cache, num_workers=2, quiet=True)
        seconds = time.perf_counter() - tic
        stream = np.asarray(shards.tokens())
        # Re-use of the cache: every shard's size and sha256 are checked before it is trusted.
        reuse_s, _ = best_of(lambda: tokenize_corpus(config, tokenizer, cache, num_workers=2, quiet=True), args.repeats)
        open_s, _ = best_of(lambda: open_shards(shards.directory, verify=False), args.repeats)
        shard_bytes = sum(p.stat().st_size for p in shards.paths)
    tokenization["tokenize_corpus_2_workers"] = {"seconds": seconds, "mb_per_s": n_bytes / 1e6 / seconds,
                                                 "tokens": int(stream.size)}
    verify_s = max(reuse_s - open_s, 1e-9)
    tokenization["cache_reuse"] = {"seconds_verified": reuse_s, "seconds_sizes_only": open_s, "shard_bytes": shard_bytes,
                                   "verify_seconds_per_gb": verify_s / (shard_bytes / 1e9)}
    print(f"cache re-use with sha256 verification: {reuse_s * 1e3:.1f} ms for {shard_bytes / 1e6:.1f} MB of shards "
          f"({verify_s / (shard_bytes / 1e9):.2f} s per GB over checking sizes only)", flush=True)
    print(f"tokenize_corpus (read + tokenize + write shards), 2 workers: {n_bytes / 1e6 / seconds:.1f} MB/s", flush=True)

    vocab_map = VocabularyMap.from_tokens([stream], tokenizer.vocab_size, always_keep=[tokenizer.eos_id])
    ids = vocab_map.to_compact(stream).astype(np.uint32)
    V = vocab_map.size
    counting = []
    pcs = {}
    for window in (int(w) for w in args.windows.split(",")):
        seconds, pc = best_of(lambda: count_context_pairs(ids, V, window), args.repeats)
        pcs[window] = pc
        row = {"window": window, "tokens": int(ids.size), "seconds": seconds, "tokens_per_s": ids.size / seconds,
               "distinct_pairs": int(pc.num_pairs)}
        sl = ids[:args.counter_tokens]
        c_seconds, counter = best_of(lambda: count_context_pairs_counter(sl, V, window), 1)
        ours_slice = count_context_pairs(sl, V, window)
        row["counter_tokens"] = int(sl.size)
        row["counter_tokens_per_s"] = sl.size / c_seconds
        row["speedup_vs_counter"] = row["tokens_per_s"] / row["counter_tokens_per_s"]
        row["counter_equal"] = bool((counter.counts != ours_slice.counts).nnz == 0)
        if V * V <= 2e8:   # a dense int64 table of at most 1.6 GB
            def dense():
                # offset k pairs (t_j, t_{j+k}): the context token k positions before the label
                s = np.concatenate([ids[:ids.size - k] for k in range(1, window + 1)]).astype(np.int64)
                y = np.concatenate([ids[k:] for k in range(1, window + 1)]).astype(np.int64)
                return np.bincount(s * V + y, minlength=V * V)
            d_seconds, table = best_of(dense, 1)
            row["dense_tokens_per_s"] = ids.size / d_seconds
            row["dense_equal"] = bool(np.array_equal(table.reshape(V, V), pc.counts.toarray()))
        else:
            row["dense_skipped"] = f"V_c^2 = {V * V:.2e} cells does not fit"
        counting.append(row)
        print(f"count w={window}: {row['tokens_per_s'] / 1e6:.1f}M tok/s ({row['distinct_pairs']:,} pairs); "
              f"Counter {row['counter_tokens_per_s'] / 1e6:.2f}M tok/s -> {row['speedup_vs_counter']:.0f}x", flush=True)

    svd = []
    pc = pcs[min(pcs)]
    k = min(args.rank, V - 2)
    for method in ("arpack", "randomized"):
        seconds, modes = best_of(lambda: truncated_signature_modes(pc, k, method=method), 1)
        svd.append({"method": method, "k": k, "vocab": V, "nnz": int(pc.num_pairs), "seconds": seconds,
                    "top_singular_value": float(modes.S[0])})
        print(f"truncated SVD ({method}, k={k}, V_c={V}): {seconds:.2f} s", flush=True)
    if V <= args.dense_svd_max:
        from probsig_jax.signatures.corpus import signature_matrix_operator
        M = signature_matrix_operator(pc) @ np.eye(V)
        seconds, (_, S, _) = best_of(lambda: np.linalg.svd(M), 1)
        svd.append({"method": "dense numpy.linalg.svd", "k": V, "vocab": V, "seconds": seconds,
                    "top_singular_value": float(S[0])})
    else:
        svd.append({"method": "dense numpy.linalg.svd", "skipped": f"V_c = {V} > --dense-svd-max {args.dense_svd_max}"})

    two = tokenization["encode_batch_2_threads"]["mb_per_s"]
    w1 = next(r for r in counting if r["window"] == min(pcs))
    summary = {
        "corpus_mb": n_bytes / 1e6, "documents": len(docs), "tokens": int(stream.size), "compact_vocab": V,
        "tokenize_mb_per_s_2_threads": two,
        "tokenize_mb_per_s_1_thread": tokenization["encode_batch_1_threads"]["mb_per_s"],
        "tokenize_corpus_mb_per_s": tokenization["tokenize_corpus_2_workers"]["mb_per_s"],
        "cache_verify_seconds_per_gb": tokenization["cache_reuse"]["verify_seconds_per_gb"],
        "tokenize_target_mb_per_s": TOKENIZE_TARGET_MB_S, "tokenize_target_met": two >= TOKENIZE_TARGET_MB_S,
        "count_tokens_per_s_w1": w1["tokens_per_s"], "count_speedup_vs_counter_w1": w1["speedup_vs_counter"],
        "count_target_tokens_per_s": COUNT_TARGET_TOK_S, "count_target_met": w1["tokens_per_s"] >= COUNT_TARGET_TOK_S,
        "svd_seconds": {r["method"]: r.get("seconds") for r in svd},
    }
    result = {"benchmark": "corpus_pipeline", "summary": summary, "tokenization": tokenization,
              "counting": counting, "svd": svd, "provenance": provenance(vars(args))}
    out = Path(args.out) if args.out else REPO_ROOT / "benchmarks" / "results" / \
        f"corpus_pipeline_cpu{'_quick' if args.quick else ''}.json"
    write_json_atomic(out, result)
    print()
    print(format_table(["stage", "ours", "baseline", "ratio"], [
        ["tokenize, 2 threads (MB/s)", two, tokenization["encode_batch_1_threads"]["mb_per_s"],
         two / tokenization["encode_batch_1_threads"]["mb_per_s"]],
        *[[f"count w={r['window']} (M tok/s)", r["tokens_per_s"] / 1e6, r["counter_tokens_per_s"] / 1e6,
           r["speedup_vs_counter"]] for r in counting],
    ]))
    print(f"tokenization target (>= {TOKENIZE_TARGET_MB_S:g} MB/s, 2 threads): "
          f"{'met' if summary['tokenize_target_met'] else 'NOT met'}; counting target (>= 20M tok/s/core, w=1): "
          f"{'met' if summary['count_target_met'] else 'NOT met'}")
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
