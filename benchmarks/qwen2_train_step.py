#!/usr/bin/env python
"""Tokens/s of one Qwen2 training step (forward + backward + clipped AdamW): ours vs PyTorch ``transformers``.

**Ours**: :func:`probsig_jax.training.sharded_step.make_sharded_train_step` with its default ``apply_fn``
(``apply_prefix``: the model on ``tokens[:, :-1]``, plain causal attention; ``--padding-mask`` uses
``apply_prefix_with_attention_mask`` and gives torch the mask too), :func:`~probsig_jax.training.losses.next_token_loss`,
``make_lm_optimizer`` (``clip_by_global_norm`` then AdamW with the warmup-cosine schedule, parameters and
optimiser state donated), compiled ahead of time (tracing and XLA compilation are timed on their own and
excluded from the step times), on a ``(data, fsdp, tensor)`` mesh (default: all devices on ``data``).
On a CPU the default is one XLA:CPU device per core (``--cpu-devices``,
:func:`probsig_jax.training.host_devices.use_host_cores_as_devices`), so the library step runs data-parallel over
the cores; with more than one, the row ``ours (..., 1 device)`` times the same step on one device in the same
process (XLA's intra-op threads only, the step before this option), ``--no-single-device-row`` drops it.
On a GPU the defaults are ``qwen2.5-0.5b``, 4 x 2048 per GPU, bfloat16 compute, our cuDNN and XLA attention
and torch sdpa, and the initial weights are built on the host (``--host-init``).

**Reference**: ``transformers.Qwen2ForCausalLM`` built from the same config (``Qwen2Config.to_hf_dict()``),
float32, with ``attn_implementation`` ``"eager"`` and ``"sdpa"``, loaded from *our* initial weights
(:func:`~probsig_jax.models.qwen2.save_pretrained`), the same token batch (and mask, with ``--padding-mask``), the loss from
``labels`` (HF shifts them; -100 where we mask), ``torch.nn.utils.clip_grad_norm_`` and ``torch.optim.AdamW``
with the same hyperparameters (betas, eps, weight decay on matrices only, the same per-step learning rate
from our schedule). ``torch.set_num_threads(os.cpu_count())``; XLA uses its default (one thread per core).
Every runner takes the same number of steps from the same weights on the same batch, so their first and
last losses must agree (a check that the same work was timed).

**Timing.** Warmup steps (``--warmup``) are excluded. Then ``--rounds`` rounds in which every runner takes
one untimed step (so a runner does not pay for the other framework's threads winding down) and
``--steps`` timed steps; the runners alternate round by round, so a load change on the machine hits all of
them. Reported: median (and min) step time, tokens/s = batch * seq / median, and the ratio ours / each
reference (> 1: ours is faster). ``--breakdown`` also times the forward pass alone (no gradients) and
forward + backward (no update) for every runner. ``--ours-attention blocked,reference`` and
``--ours-dense explicit_transpose,einsum`` time our implementations side by side (every pair; ``reference`` with
``einsum`` is the step before the CPU kernels of ``models/qwen2/blocked_attention.py`` and ``dense.py``);
``--full-logits`` adds the step that runs the model on all T positions and
slices the logits in the loss; ``--sliced-head`` adds rows for a proposed optimisation (the output projection
applied to positions 0..T-2 only, through ``make_sharded_train_step``'s ``apply_fn``/``loss_fn`` hooks).
The target and the ``ours_over_torch_*`` ratios always use the first, unmodified library step.

**FLOPs and MFU** (always computed; MFU only when a peak is known): per token
``6 * N_matmul + 12 * L * Q * D * T`` (PaLM appendix B), where ``N_matmul`` is the number of parameters that
take part in a matrix product, i.e. all parameters except the input embedding lookup (the output
projection counts, tied or not), L layers, Q * D the query width, T the sequence length (attention
counted over the full T x T, not halved for causality). The JSON also gives the count without the
output projection (``6 * N_nonembedding + ...``, Kaplan's convention). The peak defaults to the H100's
*dense* bf16 989 TFLOP/s per GPU for ``--dtype bfloat16`` on a GPU (not the 1979 "with sparsity"
figure; H200 has the same), none otherwise (``--peak-tflops``).

Usage::

    python benchmarks/qwen2_train_step.py                  # CPU: small preset, 8 x 256, ours vs torch eager/sdpa
    python benchmarks/qwen2_train_step.py --quick          # CI smoke run: tiny preset, 4 x 32, a few steps
    python benchmarks/qwen2_train_step.py --device gpu     # GPU (auto-detected too): qwen2.5-0.5b, 4/GPU x 2048, bf16, MFU
    python benchmarks/qwen2_train_step.py --preset small --batch 16 --seq 128 --ours-attention xla,reference
    python benchmarks/qwen2_train_step.py --ours-attention auto,reference --ours-dense auto,einsum  # CPU kernels on/off
    python benchmarks/qwen2_train_step.py --ours-attention xla,reference --sliced-head   # + proposed-optimisation rows
    XLA_FLAGS=--xla_force_host_platform_device_count=8 python benchmarks/qwen2_train_step.py --quick --fsdp 2 --tensor 2 --no-torch
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from _common import REPO_ROOT, format_table, load_average, provenance, write_json_atomic
from _train_step_runners import Runner, make_ours, make_torch, save_initial_weights

from probsig_jax.training.host_allocator import tune_host_allocator
from probsig_jax.training.host_devices import use_host_cores_as_devices

# As simulate does, before any computation starts XLA's (and torch's) threads; it applies to both frameworks in
# this process. PROBSIG_HOST_ALLOCATOR=default measures with glibc's defaults.
HOST_ALLOCATOR = "tuned" if tune_host_allocator() else "default"

import jax  # noqa: E402
import numpy as np  # noqa: E402

H100_DENSE_BF16_TFLOPS = 989.0   # per GPU, dense (no sparsity); H200: same compute
TARGET_RATIO = 1.0               # CPU target: ours >= 1.0x the PyTorch reference (every attention variant)

DEFAULTS = {  # per device: preset, batch, seq, dtype, warmup, rounds, steps per round
    "cpu": dict(preset="small", batch=8, seq=256, dtype="float32", warmup=3, rounds=4, steps=5,
                ours_attention=None, torch_attention="eager,sdpa"),
    # GPU: batch is per GPU (times jax.device_count() unless --batch is given)
    "gpu": dict(preset="qwen2.5-0.5b", batch=4, seq=2048, dtype="bfloat16", warmup=3, rounds=3, steps=10,
                ours_attention="cudnn,xla", torch_attention="sdpa"),
    "quick": dict(preset="tiny", batch=4, seq=32, dtype="float32", warmup=1, rounds=2, steps=2,
                  ours_attention=None, torch_attention="eager,sdpa"),
}


def log(msg: str) -> None:
    print(msg, flush=True)


def slug(name: str) -> str:
    """``"ours (xla, sliced head)"`` -> ``"ours_xla_sliced_head"`` (for JSON keys)."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


# ----------------------------------------------------------------------------- arguments and device

def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "gpu"),
                   help="auto: GPU if JAX sees one, else CPU; cpu forces JAX (and torch) onto the CPU")
    p.add_argument("--preset", default=None, help="Qwen2 preset (default: small on CPU, qwen2.5-0.5b on GPU)")
    p.add_argument("--batch", type=int, default=None, help="global batch N (divisible by data * fsdp)")
    p.add_argument("--seq", type=int, default=None, help="sequence length T")
    p.add_argument("--dtype", default=None, choices=("float32", "bfloat16"),
                   help="compute dtype (parameters and optimiser state stay float32; torch: autocast)")
    p.add_argument("--ours-attention", default=None,
                   help="comma list of our attention_impl values to time (auto, xla, cudnn, reference, blocked); "
                        "default: cudnn,xla on a GPU, the preset's (auto: blocked on a CPU) otherwise")
    p.add_argument("--ours-dense", default=None,
                   help="comma list of our dense_impl values to time (auto, einsum, explicit_transpose); default: the "
                        "preset's (auto: explicit_transpose on a CPU, einsum elsewhere). Every attention x dense "
                        "pair is a runner; the first pair is the library step the target is assessed on")
    p.add_argument("--sliced-head", action="store_true",
                   help="also time each of ours with the output projection applied to positions 0..T-2 only "
                        "(a custom apply_fn/loss_fn through training.sharded_step's public hooks; a proposed optimisation, "
                        "not the library default)")
    p.add_argument("--full-logits", action="store_true",
                   help="also time each of ours with the model run on all T positions (training.sharded_step.apply_without_mask / "
                        "apply_with_attention_mask; the loss slices the logits) instead of the library default, "
                        "the model run on tokens[:, :-1] (train_lm.apply_prefix: same loss and gradients, no "
                        "work for the last position and no slice of the (N, T, V) logits)")
    p.add_argument("--padding-mask", action=argparse.BooleanOptionalAction, default=False,
                   help="pass an (all-ones) attention mask to both frameworks, as a padded batch would (ours: "
                        "apply_prefix_with_attention_mask, an explicit (T, T) mask); default: packed sequences, plain "
                        "causal attention (ours: the library's default apply_without_mask; torch: no mask)")
    p.add_argument("--torch-attention", default=None, help="comma list of HF attn_implementation values (default: eager,sdpa on CPU, sdpa on GPU)")
    p.add_argument("--no-torch", action="store_true", help="time ours only")
    p.add_argument("--torch-adamw", default="default", choices=("default", "foreach", "fused"),
                   help="torch.optim.AdamW implementation (default: torch's choice, the for-loop one on CPU)")
    p.add_argument("--torch-threads", type=int, default=None, help="torch.set_num_threads (default os.cpu_count())")
    p.add_argument("--cpu-devices", type=int, default=None,
                   help="XLA:CPU devices (default: one per core): the library step runs data-parallel over them "
                        "(training.host_devices); 1 = one device, XLA's intra-op threads only")
    p.add_argument("--single-device-row", action=argparse.BooleanOptionalAction, default=True,
                   help="with several CPU devices, also time the library step on one of them (same process)")
    p.add_argument("--data", type=int, default=-1)
    p.add_argument("--fsdp", type=int, default=1)
    p.add_argument("--tensor", type=int, default=1)
    p.add_argument("--warmup", type=int, default=None, help="untimed steps per runner before the rounds")
    p.add_argument("--rounds", type=int, default=None, help="rounds; runners alternate between rounds")
    p.add_argument("--steps", type=int, default=None, help="timed steps per runner per round")
    p.add_argument("--breakdown", action=argparse.BooleanOptionalAction, default=None,
                   help="also time forward-only and forward+backward (default: on for the CPU run, off otherwise)")
    p.add_argument("--breakdown-repeats", type=int, default=5)
    p.add_argument("--peak-tflops", type=float, default=None,
                   help="per-device peak for MFU (default: 989 = H100 dense bf16, for bfloat16 on a GPU)")
    p.add_argument("--host-init", action=argparse.BooleanOptionalAction, default=None,
                   help="initialise our model eagerly on the host CPU and then place it (default: on for a GPU, "
                        "where compiling the jitted init of qwen2.5-0.5b took 2.4 min on an H200)")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="CI smoke run: tiny preset, N=4, T=32, few steps")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)

    # Before any backend is initialised: JAX must not preallocate 75% of the GPU that torch then also needs
    # (an explicit XLA_PYTHON_CLIENT_PREALLOCATE wins); irrelevant on CPU.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    if args.device == "cpu":
        jax.config.update("jax_platforms", "cpu")
    args.cpu_devices = use_host_cores_as_devices(args.cpu_devices)   # before the backends start
    platform = jax.default_backend()
    if args.device == "gpu" and platform != "gpu":
        raise SystemExit(f"--device gpu: JAX sees no GPU (backend {platform!r}; install jax[cuda12])")
    defaults = DEFAULTS["quick" if args.quick else ("gpu" if platform == "gpu" else "cpu")]
    if platform == "gpu" and not args.quick and args.batch is None:
        args.batch = defaults["batch"] * jax.device_count()  # 4 sequences per GPU
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.host_init is None:
        args.host_init = platform == "gpu"
    if args.breakdown is None:
        args.breakdown = platform == "cpu" and not args.quick
    for name in ("batch", "seq", "rounds", "steps"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.seq < 2:
        raise SystemExit("--seq must be >= 2 (next-token loss)")
    if args.warmup < 1:
        raise SystemExit("--warmup must be >= 1 (the first step allocates; it is never timed)")
    return args, platform


# ----------------------------------------------------------------------------- FLOPs

def flop_counts(config, n_params: int, seq: int) -> dict[str, Any]:
    """Training FLOPs per token (forward + backward), PaLM appendix B style; see the module docstring."""
    embed = config.vocab_size * config.hidden_size
    n_nonembedding = n_params - embed - (0 if config.tie_word_embeddings else embed)
    n_matmul = n_nonembedding + embed            # + the output projection (the lm_head, or the tied embedding)
    attention = 12 * config.num_hidden_layers * config.num_attention_heads * config.head_dim * seq
    return {
        "formula": "6 * N_matmul + 12 * L * Q * D * T per token; N_matmul = parameters in matmuls "
                   "(all but the input embedding lookup; the output projection counts)",
        "n_params": n_params, "n_nonembedding": n_nonembedding, "n_matmul": n_matmul,
        "attention_flops_per_token": attention,
        "flops_per_token": 6 * n_matmul + attention,
        "flops_per_token_nonembedding": 6 * n_nonembedding + attention,
    }


# ----------------------------------------------------------------------------- measurement

def measure(runners: list[Runner], args) -> None:
    for r in runners:
        for _ in range(args.warmup):
            r.warmup_s.append(r.timed_step())
        log(f"  warmup {r.name}: first step {r.warmup_s[0]:.3f} s, last {r.warmup_s[-1]:.3f} s")
    for k in range(args.rounds):
        for r in runners:
            r.timed_step()                                   # settle after the other framework ran
            r.times_s += [r.timed_step() for _ in range(args.steps)]
        log(f"  round {k + 1}/{args.rounds} (load {load_average()}): " + ", ".join(
            f"{r.name} {statistics.median(r.times_s[-args.steps:]) * 1e3:.1f} ms" for r in runners))
    if args.breakdown:
        for r in runners:
            for name, fn in (("forward_s", r.forward), ("forward_backward_s", r.forward_backward)):
                fn()                                         # compile / warm up
                times = []
                for _ in range(args.breakdown_repeats):
                    tic = time.perf_counter()
                    fn()
                    times.append(time.perf_counter() - tic)
                r.breakdown[name] = statistics.median(times)
                r.breakdown[name.replace("_s", "_runs_s")] = times


def summarise(r: Runner, n_tokens: int, flops: dict[str, Any], peak: float | None, n_devices: int) -> dict[str, Any]:
    median = statistics.median(r.times_s)
    achieved = flops["flops_per_token"] * n_tokens / median / 1e12
    row = {"name": r.name, "framework": r.framework, "attention": r.attention,
           "step_median_s": median, "step_min_s": min(r.times_s), "tokens_per_s": n_tokens / median,
           "model_tflops_per_s": achieved,
           "mfu": None if peak is None else achieved / (peak * n_devices),
           "mfu_nonembedding": None if peak is None else
           flops["flops_per_token_nonembedding"] * n_tokens / median / 1e12 / (peak * n_devices),
           "first_step_s": r.warmup_s[0], "warmup_steps_s": r.warmup_s, "steps_s": r.times_s,
           "loss_first": r.losses[0], "loss_last": r.losses[-1], "num_steps": len(r.losses), **r.setup}
    if r.breakdown:
        row["breakdown"] = dict(r.breakdown)
        row["breakdown"]["update_s_est"] = median - r.breakdown["forward_backward_s"]
        row["breakdown"]["backward_s_est"] = r.breakdown["forward_backward_s"] - r.breakdown["forward_s"]
    return row


# ----------------------------------------------------------------------------- main

def main(argv=None) -> dict:
    args, platform = parse_args(argv)

    from probsig_jax.models.qwen2 import PRESETS, num_parameters
    from probsig_jax.training.lm_optimizer import LMTrainConfig, make_lm_schedule
    from probsig_jax.training.sharding import make_mesh

    if args.preset not in PRESETS:
        raise SystemExit(f"--preset must be one of {sorted(PRESETS)}, got {args.preset!r}")
    base = PRESETS[args.preset].replace(dtype=args.dtype)
    ours_attention = args.ours_attention.split(",") if args.ours_attention else [base.attention_impl]
    ours_dense = args.ours_dense.split(",") if args.ours_dense else [base.dense_impl]
    torch_attention = [] if args.no_torch else [a for a in args.torch_attention.split(",") if a]
    if "cudnn" in ours_attention and (platform != "gpu" or args.dtype != "bfloat16"):
        raise SystemExit("--ours-attention cudnn needs a GPU and --dtype bfloat16")
    mesh = make_mesh(data=args.data, fsdp=args.fsdp, tensor=args.tensor)
    # Long enough that no timed step reaches the end of the schedule; warmup 10 as in a real run.
    total = args.warmup + args.rounds * (args.steps + 1) + 2 * args.breakdown_repeats + 20
    lm_cfg = LMTrainConfig(learning_rate=args.lr, warmup_steps=10, total_steps=max(total, 1000), seed=args.seed)
    schedule = make_lm_schedule(lm_cfg)
    lrs = np.asarray(jax.vmap(schedule)(np.arange(total)), dtype=np.float64)

    rng = np.random.default_rng(args.seed)
    tokens = rng.integers(0, base.vocab_size, (args.batch, args.seq)).astype(np.int32)
    mask = np.ones_like(tokens)
    n_tokens = args.batch * args.seq
    n_params = num_parameters(base)
    flops = flop_counts(base, n_params, args.seq)
    peak = args.peak_tflops
    if peak is None and platform == "gpu" and args.dtype == "bfloat16":
        peak = H100_DENSE_BF16_TFLOPS
        kinds = {d.device_kind for d in jax.devices()}
        if not any("H100" in k or "H200" in k for k in kinds):
            warnings.warn(f"MFU uses the H100's dense bf16 peak ({peak:g} TFLOP/s) but the devices are {kinds}; "
                          "pass --peak-tflops", stacklevel=1)
    log(f"{args.preset}: {n_params:,} parameters, batch {args.batch} x seq {args.seq} = {n_tokens} tokens/step, "
        f"{args.dtype}, {platform} ({jax.device_count()} device(s), mesh {dict(mesh.shape)}), "
        f"cpu_count {os.cpu_count()}, load {load_average()}")

    torch_info: dict[str, Any] = {"requested": torch_attention}
    torch_device = "cuda" if platform == "gpu" else "cpu"
    if torch_attention:
        try:
            import torch
            import transformers
        except ImportError as err:
            torch_info["skipped"] = f"torch/transformers not importable: {err}"
            torch_attention = []
        else:
            if torch_device == "cuda" and not torch.cuda.is_available():
                torch_info["skipped"] = "JAX runs on a GPU but this torch has no CUDA"
                torch_attention = []
            else:
                torch.set_num_threads(args.torch_threads or os.cpu_count())
                transformers.logging.disable_progress_bar()
                torch_info.update(version=torch.__version__, transformers=transformers.__version__,
                                  device=torch_device, num_threads=torch.get_num_threads(),
                                  num_interop_threads=torch.get_num_interop_threads(),
                                  mkldnn=torch.backends.mkldnn.is_available(),
                                  parallel_info=torch.__config__.parallel_info().strip().splitlines()[:6])
        if "skipped" in torch_info:
            log(f"torch reference skipped: {torch_info['skipped']}")

    runners: list[Runner] = []
    variants = ["library"] + (["full logits"] if args.full_logits else []) + (["sliced head"] if args.sliced_head else [])
    one_device = make_mesh(data=1, devices=jax.devices()[:1])
    single = platform == "cpu" and mesh.size > 1 and args.single_device_row
    for variant in variants + (["1 device"] if single else []):
        for attention in ours_attention:
            for dense in ours_dense:
                r = make_ours(base, attention, args, one_device if variant == "1 device" else mesh, tokens, mask,
                              lm_cfg, variant=variant, dense=dense)
                log(f"built {r.name}: trace {r.setup['trace_s']:.2f} s, XLA compile {r.setup['compile_s']:.2f} s")
                runners.append(r)
    with tempfile.TemporaryDirectory(prefix="qwen2_bench_") as tmp:
        checkpoint = None
        if torch_attention:
            try:
                checkpoint = save_initial_weights(base, args.seed, tmp)
            except Exception as err:  # noqa: BLE001 - a broken checkpoint writer must not stop the timing
                torch_info["checkpoint_error"] = repr(err)
                log(f"WARNING: could not write our weights for torch ({err!r}); torch starts from its own init")
        for attention in torch_attention:
            log(f"building torch {attention} ...")
            runners.append(make_torch(base, attention, args, tokens, mask, lm_cfg, checkpoint, lrs, torch_device))

    log(f"timing: {args.warmup} warmup steps, then {args.rounds} rounds x (1 settle + {args.steps} timed) steps "
        "per runner, runners alternating")
    measure(runners, args)

    rows = [summarise(r, n_tokens, flops, peak, jax.device_count()) for r in runners]
    ours_rows = [row for row in rows if row["framework"] == "jax"]
    torch_rows = [row for row in rows if row["framework"] == "torch"]
    head = ours_rows[0]               # the library's step, the preset's attention_impl (or the first listed)
    for row in rows:
        row["ratio_ours_over_this"] = head["tokens_per_s"] / row["tokens_per_s"]
    ratios = {f"ours_over_torch_{t['attention']}": head["tokens_per_s"] / t["tokens_per_s"] for t in torch_rows}
    best_ours = max(ours_rows, key=lambda row: row["tokens_per_s"])
    ratios_best = {f"best_ours_over_torch_{t['attention']}": best_ours["tokens_per_s"] / t["tokens_per_s"]
                   for t in torch_rows}
    loss_diff = {t["name"]: {"first": abs(t["loss_first"] - head["loss_first"]),
                             "last": abs(t["loss_last"] - head["loss_last"])} for t in rows if t is not head}
    summary = {
        "preset": args.preset, "platform": platform, "devices": jax.device_count(), "mesh": dict(mesh.shape),
        "batch": args.batch, "seq": args.seq, "tokens_per_step": n_tokens, "dtype": args.dtype,
        "n_params": n_params, "flops_per_token": flops["flops_per_token"], "peak_tflops_per_device": peak,
        "ours": head["name"], "ours_tokens_per_s": head["tokens_per_s"], "ours_compile_s": head["compile_s"],
        "ours_mfu": head["mfu"], **{f"{slug(t['name'])}_tokens_per_s": t["tokens_per_s"] for t in rows if t is not head},
        **ratios, **ratios_best, "best_ours": best_ours["name"],
        "threads": {"cpu_count": os.cpu_count(), "torch": torch_info.get("num_threads"),
                    "xla": "default (XLA CPU: one intra-op thread per core)",
                    "xla_cpu_devices": args.cpu_devices if platform == "cpu" else None},
        "loss_abs_diff_vs_ours": loss_diff,
    }
    if torch_rows and platform == "cpu":
        summary["target"] = f"ours >= {TARGET_RATIO:g}x every torch reference (tokens/s), CPU"
        summary["target_met"] = all(v >= TARGET_RATIO for v in ratios.values())
        summary["target_met_by_best_ours"] = all(v >= TARGET_RATIO for v in ratios_best.values())
    result = {"benchmark": "qwen2_train_step", "summary": summary, "flops": flops, "runners": rows,
              "torch": torch_info,
              "train_config": {k: getattr(lm_cfg, k) for k in ("learning_rate", "warmup_steps", "total_steps",
                                                               "min_lr_ratio", "weight_decay", "b1", "b2", "eps",
                                                               "grad_clip_norm")},
              "model_config": dataclasses.asdict(base),
              "provenance": provenance(vars(args) | {"platform": platform, "host_allocator": HOST_ALLOCATOR})}
    out = Path(args.out) if args.out else (REPO_ROOT / "benchmarks" / "results" /
                                           f"qwen2_train_step_{platform}{'_quick' if args.quick else ''}.json")
    write_json_atomic(out, result)

    headers = ["runner", "tokens/s", "step median (ms)", "step min (ms)", "compile (s)", "ours / this",
               "TFLOP/s", "MFU", "loss first", "loss last"]
    table = [[r["name"], r["tokens_per_s"], r["step_median_s"] * 1e3, r["step_min_s"] * 1e3, r.get("compile_s"),
              r["ratio_ours_over_this"], r["model_tflops_per_s"], r["mfu"], r["loss_first"], r["loss_last"]]
             for r in rows]
    log("")
    log(format_table(headers, table))
    if any("breakdown" in r for r in rows):
        log("")
        log(format_table(["runner", "forward (ms)", "forward+backward (ms)", "backward (ms, est)",
                          "update (ms, est)"],
                         [[r["name"], r["breakdown"]["forward_s"] * 1e3, r["breakdown"]["forward_backward_s"] * 1e3,
                           r["breakdown"]["backward_s_est"] * 1e3, r["breakdown"]["update_s_est"] * 1e3]
                          for r in rows if "breakdown" in r]))
    log("")
    log(f"batch x seq = {args.batch} x {args.seq}; threads: cpu_count {os.cpu_count()}, torch "
        f"{torch_info.get('num_threads', '-')}, XLA default, {args.cpu_devices} XLA:CPU device(s)")
    for key, value in {**ratios, **ratios_best}.items():
        log(f"{key}: {value:.3f}x")
    if "target_met" in summary:
        log(f"target ({summary['target']}): {'met' if summary['target_met'] else 'NOT met'}")
    log(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
