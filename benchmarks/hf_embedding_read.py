#!/usr/bin/env python
"""Reading a checkpoint's embeddings: ``read_embeddings`` (two tensors) vs loading every tensor of the checkpoint.

A synthetic sharded safetensors checkpoint with Llama names is written into a temporary directory: the embedding
``model.embed_tokens.weight`` and ``lm_head.weight`` (``--vocab`` x ``--hidden``, untied) plus ``--layers``
decoder layers (q/k/v/o projections, a SwiGLU MLP of width ``--intermediate``, two norms), float32, in
``--shards`` shards with a ``model.safetensors.index.json`` (default: 32000 x 2048, 7 layers, 4 shards, about
2 GB). Then, each in a fresh subprocess so that its peak RSS (``VmHWM``) is its own:

- **reader**: :func:`probsig_jax.models.hf_embeddings.read_embeddings` (config.json, the index, the two tensors);
- **all tensors**: ``safetensors.numpy.load_file`` of every shard, every tensor kept (what loading the model
  costs before any conversion);
- **imports only**: the same imports and nothing read (the RSS both start from).

Each method runs ``--repeats`` times (interleaved), reported as min / median / max of the in-process read time,
of the subprocess wall time (with the interpreter and imports) and of the peak RSS. The files are read from the
page cache (they were just written; caches are not dropped, which needs root and disturbs other jobs), so the
times are memory bandwidth, not disk. The reader's embeddings are checked equal to the tensors the full load
gives (float64 sums).

Usage::

    python benchmarks/hf_embedding_read.py            # ~2 GB checkpoint; JSON in benchmarks/results/
    python benchmarks/hf_embedding_read.py --quick    # CI smoke run: a 512 x 64 model, one repeat
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO_ROOT, format_table, provenance, write_json_atomic

import numpy as np  # noqa: E402

METHODS = ("reader", "all_tensors", "imports_only")


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--hidden", type=int, default=2048)
    p.add_argument("--intermediate", type=int, default=5632)
    p.add_argument("--kv-hidden", type=int, default=256, help="k/v projection width (grouped-query attention)")
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--shards", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--tmp-dir", default=None, help="where the synthetic checkpoint is written (default: $TMPDIR)")
    p.add_argument("--quick", action="store_true", help="CI smoke run: 512 x 64, 2 layers, 1 repeat")
    p.add_argument("--out", default=None)
    p.add_argument("--child", choices=METHODS, default=None, help=argparse.SUPPRESS)
    p.add_argument("--dir", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.vocab, args.hidden, args.intermediate, args.kv_hidden, args.layers, args.repeats = 512, 64, 128, 16, 2, 1
    return args


def tensor_shapes(args) -> dict[str, tuple[int, ...]]:
    """The checkpoint's tensors in file order (HF order: embedding first, LM head last)."""
    V, H, F, K = args.vocab, args.hidden, args.intermediate, args.kv_hidden
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (V, H)}
    for i in range(args.layers):
        layer = f"model.layers.{i}"
        shapes.update({f"{layer}.input_layernorm.weight": (H,), f"{layer}.post_attention_layernorm.weight": (H,),
                       f"{layer}.self_attn.q_proj.weight": (H, H), f"{layer}.self_attn.k_proj.weight": (K, H),
                       f"{layer}.self_attn.v_proj.weight": (K, H), f"{layer}.self_attn.o_proj.weight": (H, H),
                       f"{layer}.mlp.gate_proj.weight": (F, H), f"{layer}.mlp.up_proj.weight": (F, H),
                       f"{layer}.mlp.down_proj.weight": (H, F)})
    shapes["model.norm.weight"] = (H,)
    shapes["lm_head.weight"] = (V, H)
    return shapes


def write_checkpoint(directory: Path, args) -> int:
    """Write config.json, the shards and the index (one shard in memory at a time); returns the bytes written."""
    from safetensors.numpy import save_file

    shapes = tensor_shapes(args)
    sizes = {name: 4 * int(np.prod(shape)) for name, shape in shapes.items()}
    per_shard = sum(sizes.values()) / args.shards
    groups: list[list[str]] = [[]]
    filled = 0.0
    for name in shapes:                          # greedy, in order, like save_pretrained's max_shard_size
        if groups[-1] and filled + sizes[name] > per_shard * 1.02 and len(groups) < args.shards:
            groups.append([])
            filled = 0.0
        groups[-1].append(name)
        filled += sizes[name]
    rng = np.random.default_rng(0)
    weight_map = {}
    for i, names in enumerate(groups, 1):
        shard = f"model-{i:05d}-of-{len(groups):05d}.safetensors"
        save_file({n: rng.standard_normal(shapes[n], dtype=np.float32) for n in names}, str(directory / shard),
                  metadata={"format": "pt"})
        weight_map.update({n: shard for n in names})
    total = sum(sizes.values())
    (directory / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    (directory / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": args.vocab,
        "hidden_size": args.hidden, "intermediate_size": args.intermediate, "num_hidden_layers": args.layers,
        "num_attention_heads": max(1, args.hidden // 64), "num_key_value_heads": max(1, args.kv_hidden // 64),
        "tie_word_embeddings": False}, indent=2))
    return total


def child(method: str, directory: Path) -> None:
    """One measurement in this (fresh) process: JSON with the read time, the sums and the peak RSS."""
    from safetensors.numpy import load_file

    from probsig_jax.models.hf_embeddings import read_embeddings

    tic = time.perf_counter()
    if method == "reader":
        e = read_embeddings(directory)
        sums = [float(e.embedding.sum(dtype=np.float64)), float(e.unembedding.sum(dtype=np.float64))]
    elif method == "all_tensors":
        index = json.loads((directory / "model.safetensors.index.json").read_text())["weight_map"]
        tensors = {}
        for shard in sorted(set(index.values())):
            tensors.update(load_file(str(directory / shard)))
        sums = [float(tensors[n].astype(np.float32).sum(dtype=np.float64))
                for n in ("model.embed_tokens.weight", "lm_head.weight")]
    else:
        sums = []
    seconds = time.perf_counter() - tic
    status = Path("/proc/self/status").read_text()
    hwm_kib = int(status.split("VmHWM:")[1].split()[0])
    print(json.dumps({"read_s": seconds, "peak_rss_mib": hwm_kib / 1024, "sums": sums}))


def measure(method: str, directory: Path) -> dict:
    tic = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--child", method, "--dir", str(directory)],
                          capture_output=True, text=True, check=False)
    wall = time.perf_counter() - tic
    if proc.returncode != 0:
        raise RuntimeError(f"{method} child failed: {proc.stderr[-2000:]}")
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "wall_s": wall}


def spread(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values), "runs": values}


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.child:
        child(args.child, Path(args.dir))
        return {}
    directory = Path(tempfile.mkdtemp(prefix="hf_embedding_read_", dir=args.tmp_dir))
    try:
        tic = time.perf_counter()
        total = write_checkpoint(directory, args)
        write_s = time.perf_counter() - tic
        print(f"checkpoint: {total / 1e9:.2f} GB in {args.shards} shards ({len(tensor_shapes(args))} tensors), "
              f"written in {write_s:.1f} s to {directory}", flush=True)
        runs = {m: [] for m in METHODS}
        for _ in range(args.repeats):
            for method in METHODS:
                runs[method].append(measure(method, directory))
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    timing = {m: {key: spread([r[key] for r in rs]) for key in ("read_s", "wall_s", "peak_rss_mib")}
              for m, rs in runs.items()}
    base = timing["imports_only"]["peak_rss_mib"]["median"]
    reader, full = timing["reader"], timing["all_tensors"]
    embedding_mib = 2 * 4 * args.vocab * args.hidden / 2**20
    summary = {
        "checkpoint_gb": total / 1e9, "shards": args.shards, "embedding_tensors_mib": embedding_mib,
        "reader_median_s": reader["read_s"]["median"], "all_tensors_median_s": full["read_s"]["median"],
        "read_speedup_median": full["read_s"]["median"] / reader["read_s"]["median"],
        "reader_peak_rss_mib": reader["peak_rss_mib"]["median"],
        "all_tensors_peak_rss_mib": full["peak_rss_mib"]["median"],
        "imports_only_peak_rss_mib": base,
        "reader_rss_above_imports_mib": reader["peak_rss_mib"]["median"] - base,
        "all_tensors_rss_above_imports_mib": full["peak_rss_mib"]["median"] - base,
        "embeddings_equal": all(r["sums"] == f["sums"] for r, f in zip(runs["reader"], runs["all_tensors"])),
    }
    result = {"benchmark": "hf_embedding_read", "summary": summary, "timing": timing, "write_s": write_s,
              "provenance": provenance({k: v for k, v in vars(args).items() if k not in ("child", "dir")})}
    out = Path(args.out) if args.out else REPO_ROOT / "benchmarks" / "results" / \
        f"hf_embedding_read_cpu{'_quick' if args.quick else ''}.json"
    write_json_atomic(out, result)
    print()
    print(format_table(["method", "read s (min / median / max)", "wall s (median)", "peak RSS MiB (median)"],
                       [[m, " / ".join(f"{t['read_s'][k]:.3f}" for k in ("min", "median", "max")),
                         t["wall_s"]["median"], t["peak_rss_mib"]["median"]] for m, t in timing.items()]))
    print(f"read time, all tensors / reader (medians): {summary['read_speedup_median']:.1f}x; peak RSS above the "
          f"imports: reader {summary['reader_rss_above_imports_mib']:.0f} MiB, all tensors "
          f"{summary['all_tensors_rss_above_imports_mib']:.0f} MiB (the two embeddings: {embedding_mib:.0f} MiB); "
          f"embeddings equal: {summary['embeddings_equal']}")
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
