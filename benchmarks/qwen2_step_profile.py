#!/usr/bin/env python
"""Where the Qwen2 training step spends its time: the library step (the one ``qwen2_train_step.py`` times) under
JAX's profiler, every executed XLA operation attributed to the part of the model, the pass and the kind of work.

Each operation XLA:CPU runs (a "thunk": a matrix product, a fused elementwise loop, a copy) appears in the trace
with its start and duration. Several can run at once on the intra-op threads, so wall time is shared: at every
instant the running operations split it equally (a sweep over start and end times), and the shares add up to
the step's wall time. Each operation is traced back, through the compiled HLO's source metadata, to the Python
function that created it: the model part (attention core, q/k/v projections, rotary, o projection, MLP,
RMSNorm, embedding and output head, loss, optimizer), the pass (forward; backward, i.e. JAX's transpose of the
forward; update) and the kind (matrix product; transpose or copy; other elementwise / reduction).

The profiler adds overhead (the step runs slower under it than in ``qwen2_train_step.py``), so the shares, not the
absolute milliseconds, are the finding; the unprofiled median step time is printed beside them.

Usage::

    python benchmarks/qwen2_step_profile.py                                   # small preset, 8 x 256, float32
    python benchmarks/qwen2_step_profile.py --attention reference --dense einsum   # the step before the CPU kernels
    python benchmarks/qwen2_step_profile.py --batch 4 --seq 512 --top 40
    python benchmarks/qwen2_step_profile.py --quick                           # smoke run: tiny preset, 4 x 32
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import re
import statistics
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from _common import REPO_ROOT, format_table, provenance, write_json_atomic
from _train_step_runners import make_ours

import jax
import numpy as np

from probsig_jax.training.host_allocator import tune_host_allocator
from probsig_jax.training.host_devices import use_host_cores_as_devices

# (substring of a Python function name in the op's call stack, model part); the innermost match wins
PARTS = (
    ("blocked_causal_attention", "attention core"), ("_blocked_attention", "attention core"),
    ("reference_attention", "attention core"), ("dot_product_attention", "attention core"),
    ("apply_rotary", "rotary"), ("rotary_cos_sin", "rotary"), ("_project", "q/k/v projections"),
    ("Attention.attend", "o projection"), ("MLP.", "MLP"), ("RMSNorm", "RMSNorm"),
    ("next_token_loss", "loss"), ("softmax_cross_entropy", "loss"),
    ("clip_by_global_norm", "optimizer"), ("scale_by_adam", "optimizer"), ("apply_updates", "optimizer"),
    ("add_decayed_weights", "optimizer"), ("schedule", "optimizer"), ("safe_increment", "optimizer"),
    ("_global_norm", "metrics"), ("Embed.", "embedding / output head"), ("Qwen2LM.", "embedding / output head"),
)
MATMUL_PREFIXES = ("ynn_fusion", "xnn_fusion", "dot", "onednn", "custom-call", "custom_call")
CONTAINER_EVENTS = ("ThunkExecutor", "SlinkyThreadPool", "PjitFunction", "PjRt", "ParseArguments", "Handle ",
                    "AllocateOutputBuffers", "Wait for", "PythonRefManager", "ThreadpoolListener")


def log(msg: str) -> None:
    print(msg, flush=True)


# ----------------------------------------------------------------------------- HLO metadata

def _section(text: str, start: str, end: str) -> str:
    i = text.find("\n" + start + "\n")
    if i < 0:
        return ""
    j = text.find("\n" + end + "\n", i)
    return text[i + len(start) + 2: j if j > 0 else None]


def hlo_op_sources(hlo_text: str) -> dict[str, dict[str, Any]]:
    """For every instruction of the ENTRY computation: ``{"stack": [innermost function, ...], "op_name",
    "shape", "body"}`` from the compiled HLO text (its FileNames / FunctionNames / FileLocations / StackFrames
    tables and each instruction's ``stack_frame_id``)."""
    funcs = dict(re.findall(r'^(\d+) "(.*)"$', _section(hlo_text, "FunctionNames", "FileLocations"), re.M))
    locations = {i: fu for i, fu in re.findall(r"^(\d+) \{file_name_id=\d+ function_name_id=(\d+)",
                                               _section(hlo_text, "FileLocations", "StackFrames"), re.M)}
    frames_text = hlo_text[hlo_text.find("\nStackFrames\n"):]
    frames = {int(i): (loc, int(parent) if parent else 0) for i, loc, parent in
              re.findall(r"^(\d+) \{file_location_id=(\d+)(?: parent_frame_id=(\d+))?\}", frames_text, re.M)}
    # XLA prints parent ids one higher than the frame ids (a root's parent prints as 1, itself); detect that
    offset = 1 if any(fid == parent for fid, (_, parent) in frames.items()) else 0

    def stack(fid: int) -> list[str]:
        out, seen = [], set()
        while fid and fid in frames and fid not in seen:
            seen.add(fid)
            loc, parent = frames[fid]
            out.append(funcs.get(locations.get(loc, ""), "?"))
            fid = parent - offset
        return out

    bodies = {}
    for match in re.finditer(r"^%?([\w.\-]+) \(.*?\) -> .*? \{\n(.*?)\n\}", hlo_text, re.M | re.S):
        bodies[match.group(1)] = match.group(2)
    entry = hlo_text[hlo_text.find("\nENTRY"):]
    ops = {}
    for line in entry.splitlines():
        m = re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = (\S+) ", line)
        if not m:
            continue
        frame = re.search(r"stack_frame_id=(\d+)", line)
        op_name = re.search(r'op_name="([^"]*)"', line)
        calls = re.search(r"calls=%?([\w.\-]+)", line)
        ops[m.group(1)] = {"stack": stack(int(frame.group(1))) if frame else [],
                           "op_name": op_name.group(1) if op_name else "", "shape": m.group(2).split("{")[0],
                           "body": bodies.get(calls.group(1), "") if calls else ""}
    return ops


def classify(name: str, op: dict[str, Any] | None) -> tuple[str, str, str]:
    """(model part, pass, kind) of one executed operation."""
    if op is None:
        return "runtime", "-", "other"
    part = "other"
    for function in op["stack"]:                     # innermost first
        hit = next((p for key, p in PARTS if key in function), None)
        if hit is not None:
            part = hit
            break
    if part in ("optimizer", "metrics"):
        phase = "update"
    else:
        phase = "backward" if "transpose(" in op["op_name"] else "forward"
    if name.startswith(MATMUL_PREFIXES):
        kind = "matmul"
    elif "transpose(" in op["body"] or name.startswith(("copy", "transpose")):
        kind = "transpose/copy"
    else:
        kind = "elementwise"
    return part, phase, kind


# ----------------------------------------------------------------------------- trace

def thunk_intervals(trace_dir: str) -> list[tuple[float, float, str]]:
    """``(start_us, end_us, name)`` of every operation event in the perfetto trace JSON under ``trace_dir``."""
    files = glob.glob(f"{trace_dir}/**/*.trace.json.gz", recursive=True)
    if not files:
        raise SystemExit(f"no perfetto trace under {trace_dir} (jax.profiler wrote none)")
    events = json.load(gzip.open(files[0]))
    events = events["traceEvents"] if isinstance(events, dict) else events
    out = []
    for e in events:
        if e.get("ph") != "X" or "dur" not in e:
            continue
        name = e["name"]
        # "$..." are Python frames; "end: op" marks an asynchronous operation's completion (microseconds)
        if name.startswith(("$", "end: ")) or name.startswith(CONTAINER_EVENTS):
            continue
        out.append((float(e["ts"]), float(e["ts"]) + float(e["dur"]), name))
    return out


def wall_time_shares(intervals: list[tuple[float, float, str]]) -> tuple[dict[str, float], float, float]:
    """Wall time (us) per operation name, shared equally among the operations running at each instant; also the
    covered time and the span from the first start to the last end."""
    points = sorted([(a, 1, i) for i, (a, _, _) in enumerate(intervals)] +
                    [(b, -1, i) for i, (_, b, _) in enumerate(intervals)])
    active: set[int] = set()
    share: dict[str, float] = collections.defaultdict(float)
    covered, last = 0.0, None
    for t, kind, i in points:
        if last is not None and active:
            dt = t - last
            for j in active:
                share[intervals[j][2]] += dt / len(active)
            covered += dt
        if kind == 1:
            active.add(i)
        else:
            active.discard(i)
        last = t
    span = (max(b for _, b, _ in intervals) - min(a for a, _, _ in intervals)) if intervals else 0.0
    return share, covered, span


# ----------------------------------------------------------------------------- main

def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="small")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    p.add_argument("--attention", default="auto", help="the model's attention_impl (default: auto)")
    p.add_argument("--dense", default="auto", help="the model's dense_impl (default: auto)")
    p.add_argument("--cpu-devices", type=int, default=1,
                   help="XLA:CPU devices, the step data-parallel over them (default 1: one program, easiest to read)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=5, help="profiled steps (and 2x as many timed without profiler)")
    p.add_argument("--top", type=int, default=25, help="operations listed individually")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="smoke run: tiny preset, 4 x 32, 1 warmup and 2 steps")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    if args.quick:
        args.preset, args.batch, args.seq, args.warmup, args.steps = "tiny", 4, 32, 1, 2
    for name in ("batch", "seq", "warmup", "steps", "top"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.seq < 2:
        raise SystemExit("--seq must be >= 2 (next-token loss)")
    tune_host_allocator()                    # as simulate and qwen2_train_step.py do, before XLA's threads start
    use_host_cores_as_devices(args.cpu_devices)

    from probsig_jax.models.qwen2 import PRESETS
    from probsig_jax.training.lm_optimizer import LMTrainConfig
    from probsig_jax.training.sharding import make_mesh

    if args.preset not in PRESETS:
        raise SystemExit(f"--preset must be one of {sorted(PRESETS)}, got {args.preset!r}")
    config = PRESETS[args.preset].replace(dtype=args.dtype)
    mesh = make_mesh(data=-1)
    lm_cfg = LMTrainConfig(learning_rate=1e-4, warmup_steps=10, total_steps=1000, seed=args.seed)
    tokens = np.random.default_rng(args.seed).integers(0, config.vocab_size, (args.batch, args.seq)).astype(np.int32)
    runner_args = SimpleNamespace(seed=args.seed, host_init=False, padding_mask=False)
    runner = make_ours(config, args.attention, runner_args, mesh, tokens, np.ones_like(tokens), lm_cfg,
                       dense=args.dense)
    log(f"{runner.name}: {args.preset}, {args.batch} x {args.seq}, {args.dtype}, {jax.device_count()} device(s)")
    for _ in range(args.warmup):
        runner.timed_step()
    unprofiled = [runner.timed_step() for _ in range(2 * args.steps)]
    with tempfile.TemporaryDirectory(prefix="qwen2_profile_") as trace_dir:
        with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
            profiled = [runner.timed_step() for _ in range(args.steps)]
        intervals = thunk_intervals(trace_dir)
    ops = hlo_op_sources(runner.compiled.as_text())
    share, covered, span = wall_time_shares(intervals)
    steps = args.steps
    per_op = {name: us / steps / 1e3 for name, us in share.items()}            # ms per step

    groups: dict[tuple[str, str, str], float] = collections.defaultdict(float)
    parts: dict[str, float] = collections.defaultdict(float)
    for name, ms in per_op.items():
        part, phase, kind = classify(name, ops.get(name))
        groups[(part, phase, kind)] += ms
        parts[part] += ms
    total = sum(per_op.values())
    log(f"step median {statistics.median(unprofiled) * 1e3:.1f} ms unprofiled; profiled: median "
        f"{statistics.median(profiled) * 1e3:.1f} ms, mean {statistics.fmean(profiled) * 1e3:.1f} ms, operations "
        f"running {covered / steps / 1e3:.1f} of {span / steps / 1e3:.1f} ms per step (first start to last end)")
    log("")
    log(format_table(["model part", "ms / step", "share"],
                     [[k, v, v / total] for k, v in sorted(parts.items(), key=lambda kv: -kv[1])]))
    log("")
    log(format_table(["model part", "pass", "kind", "ms / step", "share"],
                     [[*k, v, v / total] for k, v in sorted(groups.items(), key=lambda kv: -kv[1])]))
    top = sorted(per_op.items(), key=lambda kv: -kv[1])[:args.top]
    log("")
    log(format_table(["operation", "output", "model part", "pass", "kind", "ms / step"],
                     [[name, ops.get(name, {}).get("shape", "-"), *classify(name, ops.get(name)), ms]
                      for name, ms in top]))

    result = {
        "benchmark": "qwen2_step_profile", "runner": runner.name, "setup": runner.setup,
        "preset": args.preset, "batch": args.batch, "seq": args.seq, "dtype": args.dtype,
        "step_unprofiled_s": {"median": statistics.median(unprofiled), "min": min(unprofiled), "runs": unprofiled},
        "step_profiled_s": {"median": statistics.median(profiled), "runs": profiled},
        "attributed_ms_per_step": total, "covered_ms_per_step": covered / steps / 1e3,
        "span_ms_per_step": span / steps / 1e3,
        "by_part_ms": dict(sorted(parts.items(), key=lambda kv: -kv[1])),
        "by_part_pass_kind_ms": [{"part": k[0], "pass": k[1], "kind": k[2], "ms": v}
                                 for k, v in sorted(groups.items(), key=lambda kv: -kv[1])],
        "top_operations": [{"name": name, "ms": ms, "shape": ops.get(name, {}).get("shape"),
                            "classified": classify(name, ops.get(name))} for name, ms in top],
        "provenance": provenance(vars(args)),
    }
    suffix = f"{args.batch}x{args.seq}_{runner.setup['attention_impl']}_{runner.setup['dense_impl']}"
    suffix += "_quick" if args.quick else ""
    out = Path(args.out) if args.out else REPO_ROOT / "benchmarks" / "results" / f"qwen2_step_profile_{suffix}.json"
    write_json_atomic(out, result)
    log(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
