#!/usr/bin/env python
"""Benchmark the three ways E1 produces a linear-model trajectory, and the cost of one GD step.

For each vocabulary size V (embedding width d):

(a) closed form  -- ``theory.linear.closed_form`` at every recorded time in one jitted call
                    (compile time reported separately; the SVD of M is timed on its own and added),
(b) exact flow   -- diffrax Tsit5 on the exact softmax flow: ``theory.linear.integrate_flow`` as E1
                    calls it (recompiles every call) and the same solve compiled once ahead of time,
(c) gradient descent -- ``train.train`` (full batch, lr ``--lr``), as E1 calls it,

all at the same recorded times ``t = k * record_every * lr`` (E1: every 20 steps over 6000 steps at
lr 0.05, i.e. t in [0, 300], 301 records), and

(d) one full-batch GD step of the linear model (forward + backward + SGD update), float32 and float64:
    jitted (one dispatch per step, and inside ``lax.scan`` as ``train`` runs it), eager (op-by-op, and
    under ``jax.disable_jit``), against numpy doing the same matmuls (the lower bound).

Data: the E1 default task (composite addition preset "simple": key then one anchor, anchors 1..4 add
1..4, exact distribution) with the key range widened to keys 20..V-5 so that the vocabulary is exactly
V (labels reach key_max + 4 = V - 1); N = 4 (V - 24) weighted rows of length 2.

If gradient descent over ``--steps`` would take longer than ``--gd-budget-s`` (estimated from the
measured step time), the number of steps is reduced (to a multiple of ``record_every``) for *all three*
methods, so they are compared at the same final t; the JSON says so (``steps_reduced``) and also
reports the closed form at the full horizon and an extrapolated GD time there.

Usage::

    python benchmarks/linear_theory.py                # full run, writes benchmarks/results/linear_theory_<platform>.json
    python benchmarks/linear_theory.py --quick        # CI smoke run (seconds), writes ..._<platform>_quick.json
"""

from __future__ import annotations

import argparse
import gc
import time
from pathlib import Path
from typing import Any

from _common import REPO_ROOT, format_table, load_average, provenance, strip_results, timeit, write_json_atomic

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)  # before any array exists: trajectories are float64

import diffrax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from probsig_jax.data import PRESETS, make_composite_addition  # noqa: E402
from probsig_jax.analysis.trajectories import joint_relative_error  # noqa: E402
from probsig_jax.models.linear import LinearEmbeddingModel  # noqa: E402
from probsig_jax.signatures import signature_matrix  # noqa: E402
from probsig_jax.theory import linear as theory  # noqa: E402
from probsig_jax.theory.compiled import compiled_linear_theory  # noqa: E402
from probsig_jax.training.supervised import TrainConfig, train  # noqa: E402

from _linear_step import TARGET_JIT_OVER_NUMPY, bench_step  # noqa: E402  (after float64 is on)

TARGET_SPEEDUP = 100.0      # closed form vs gradient descent


def log(msg: str) -> None:
    print(msg, flush=True)


# ----------------------------------------------------------------------------- data

def build_dataset(vocab_size: int):
    """The E1 default task with keys 20..V-5 (vocabulary exactly V); exact distribution."""
    if vocab_size < 28:
        raise SystemExit(f"--vocab-sizes: need V >= 28 (keys 20..V-5), got {vocab_size}")
    cfg = PRESETS["simple"].replace(key_max=vocab_size - 5)
    task = make_composite_addition(cfg)
    assert task.train.vocab_size == vocab_size, (task.train.vocab_size, vocab_size)
    return task.train, cfg


# ----------------------------------------------------------------------------- (b) the flow, compiled once

def make_flow_solver(dataset, dtype, rtol: float, atol: float, max_steps: int):
    """The solve of ``theory.linear.integrate_flow`` (same field, solver, controller) as one jitted function."""
    data = theory.FlowData.from_dataset(dataset, False, dtype=dtype)
    field = theory.flow_vector_field(data, "exact")

    @jax.jit
    def solve(E0, U0, ts):
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(field), diffrax.Tsit5(), t0=0.0, t1=ts[-1], dt0=None, y0=(E0, U0),
            saveat=diffrax.SaveAt(ts=ts), stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
            max_steps=max_steps)
        return sol.ys, sol.stats["num_steps"], sol.stats["num_accepted_steps"]

    return solve


# ----------------------------------------------------------------------------- one vocabulary size

def bench_vocab(V: int, args) -> dict[str, Any]:
    res: dict[str, Any] = {"vocab_size": V, "dim": args.dim, "load_average_at_start": load_average()}
    rep, budget = args.repeats, args.budget_s
    traj_dtype = jnp.dtype(args.trajectory_dtype)

    tic = time.perf_counter()
    dataset, data_cfg = build_dataset(V)
    res["data_s"] = time.perf_counter() - tic
    N, L = dataset.inputs.shape
    res["dataset"] = {"builder": "composite addition preset 'simple' with key_max = V - 5 (exact distribution)",
                      "key_min": data_cfg.key_min, "key_max": data_cfg.key_max, "num_rows": N, "seq_len": L,
                      "num_features": V}
    log(f"\n=== V={V}: N={N} rows, L={L}, d={args.dim}")

    # (d) one GD step, float32 and float64.
    res["step"] = {}
    for name in args.step_dtypes:
        log(f"  [d] GD step {name} ...")
        res["step"][name] = bench_step(V, args.dim, dataset, jnp.dtype(name), args.lr, args)
        s = res["step"][name]
        log(f"      jit {s['jit_step']['median_s'] * 1e3:.3f} ms | scan {s['jit_scan_per_step']['median_s'] * 1e3:.3f}"
            f" ms/step | eager {s['eager_step']['median_s'] * 1e3:.3f} ms | numpy core "
            f"{s['numpy_core']['median_s'] * 1e3:.3f} ms | jit/numpy {s['ratio_jit_over_numpy_core']:.2f}")
        gc.collect()

    # How many steps: the E1 horizon unless GD would exceed the budget.
    per_step_est = res["step"].get(traj_dtype.name, next(iter(res["step"].values())))["jit_scan_per_step"]["median_s"]
    re = args.record_every
    steps = args.steps
    if args.gd_budget_s > 0 and steps * per_step_est > args.gd_budget_s:
        steps = max(re, int(args.gd_budget_s / per_step_est) // re * re)
    res["steps_full"] = args.steps
    res["steps"] = steps
    res["steps_reduced"] = steps < args.steps
    res["gd_estimated_s_full"] = args.steps * per_step_est
    times = np.arange(0, steps + 1, re) * args.lr
    times_full = np.arange(0, args.steps + 1, re) * args.lr
    res["t_final"] = float(times[-1])
    res["num_records"] = len(times)
    log(f"  steps {steps} (t_final {times[-1]:g}, {len(times)} records)"
        + (f"  [reduced from {args.steps}: GD estimated {args.steps * per_step_est:.0f} s]" if steps < args.steps else ""))

    model = LinearEmbeddingModel(V, args.dim, init_scale=args.init_scale, dtype=traj_dtype, rngs=nnx.Rngs(args.seed))
    E0, U0 = model.weights()["E"], model.weights()["U"]

    # (a) closed form.
    log("  [a] closed form ...")
    tic = time.perf_counter()
    M_np = signature_matrix(dataset)
    res["signature_matrix_s"] = time.perf_counter() - tic
    log(f"      signature_matrix {res['signature_matrix_s']:.4g} s (host numpy, not counted below)")
    M = jnp.asarray(M_np, dtype=traj_dtype)
    svd = timeit(lambda: theory.signature_modes(M), repeats=rep, budget_s=budget, warmup=1, min_runs=1,
                 reuse_slow_first_s=budget / 4)
    modes = svd["result"]
    res["svd"] = strip_results(svd) | {"rank": int(modes.S.shape[0])}

    def cf(ts):
        E_t, U_t = theory.closed_form(M, E0, U0, ts, modes=modes)
        return np.asarray(E_t), np.asarray(U_t)        # E1 uses host arrays

    c = timeit(lambda: cf(times), repeats=rep, budget_s=budget, warmup=1, min_runs=3)
    E_cf, U_cf = c.pop("result")
    c["compile_s_est"] = c["first_s"] - c["median_s"]
    c["total_with_svd_s"] = c["median_s"] + res["svd"]["median_s"]
    res["closed_form"] = c
    log(f"      eval {c['median_s']:.4g} s (+SVD {res['svd']['median_s']:.4g} s, compile ~{c['compile_s_est']:.3g} s)")
    if res["steps_reduced"]:
        cfull = timeit(lambda: cf(times_full), repeats=rep, budget_s=budget, warmup=1, min_runs=1,
                       reuse_slow_first_s=budget)
        cfull.pop("result")
        cfull["total_with_svd_s"] = cfull["median_s"] + res["svd"]["median_s"]
        cfull["num_records"] = len(times_full)
        res["closed_form_full_horizon"] = cfull
        log(f"      full horizon ({len(times_full)} records): {cfull['median_s']:.4g} s")
        gc.collect()

    # (b) exact flow.
    log("  [b] integrated flow ...")
    solver = make_flow_solver(dataset, traj_dtype, args.ode_rtol, args.ode_atol, args.max_ode_steps)
    ts_j = jnp.asarray(times, dtype=traj_dtype)
    tic = time.perf_counter()
    solve = solver.lower(E0, U0, ts_j).compile()
    fl: dict[str, Any] = {"aot_compile_s": time.perf_counter() - tic, "rtol": args.ode_rtol, "atol": args.ode_atol}

    def run_solve():
        (E_t, U_t), n, n_acc = solve(E0, U0, ts_j)
        return np.asarray(E_t), np.asarray(U_t), int(n), int(n_acc)

    r = timeit(run_solve, repeats=rep, budget_s=budget, warmup=0, min_runs=1)
    E_fl, U_fl, fl["ode_steps"], fl["ode_accepted_steps"] = r.pop("result")
    fl["aot_run"] = r
    log(f"      compiled once: run {r['median_s']:.4g} s ({fl['ode_steps']} Tsit5 steps), compile {fl['aot_compile_s']:.3g} s")

    def public_flow():
        E_t, U_t = theory.integrate_flow(dataset, E0, U0, times, rtol=args.ode_rtol, atol=args.ode_atol,
                                         max_steps=args.max_ode_steps)
        return np.asarray(E_t), np.asarray(U_t)

    p = timeit(public_flow, repeats=1 if r["median_s"] > budget / 4 else rep, budget_s=budget, warmup=0, min_runs=1)
    E_pub, _ = p.pop("result")
    fl["integrate_flow_call"] = p
    fl["integrate_flow_vs_aot_max_abs_diff"] = float(np.max(np.abs(E_pub - E_fl)))
    res["flow"] = fl
    log(f"      integrate_flow() call (as E1): {p['median_s']:.4g} s")
    del E_pub

    # (c) gradient descent, as E1 calls it. Each train() call compiles its own step; a short call
    # (one chunk of record_every steps) and the full call give per-step time and fixed overhead.
    log("  [c] gradient descent ...")
    cfg_small = TrainConfig(optimizer="gd", learning_rate=args.lr, steps=re, record_every=re)
    cfg = TrainConfig(optimizer="gd", learning_rate=args.lr, steps=steps, record_every=re)
    train(model, dataset, cfg_small, quiet=True)                               # warm caches (sympy, nnx, data)
    small = timeit(lambda: train(model, dataset, cfg_small, quiet=True), repeats=1, warmup=0)
    big = timeit(lambda: train(model, dataset, cfg, quiet=True), repeats=rep, budget_s=budget, warmup=0, min_runs=1)
    gd_result = big.pop("result")
    small.pop("result")
    per_step = (big["median_s"] - small["median_s"]) / (steps - re) if steps > re else per_step_est
    overhead = small["median_s"] - re * per_step
    res["gd"] = big | {"per_step_s_fit": per_step, "fixed_overhead_s_fit": overhead, "short_call_s": small["median_s"],
                       "short_call_steps": re}
    if res["steps_reduced"]:
        res["gd"]["extrapolated_full_horizon_s"] = overhead + args.steps * per_step
    log(f"      train() {big['median_s']:.4g} s ({per_step * 1e3:.3f} ms/step, fixed overhead {overhead:.3g} s)")
    assert np.allclose(gd_result.times, times), "train() recorded other times than the benchmark"

    # Agreement of the three trajectories (sanity check that the same thing was computed).
    E_gd, U_gd = gd_result.weights["E"], gd_result.weights["U"]
    gd_fl = joint_relative_error(E_gd, U_gd, E_fl, U_fl)
    cf_fl = joint_relative_error(E_cf, U_cf, E_fl, U_fl)
    res["agreement"] = {
        "gd_vs_flow_max_rel_err": float(gd_fl.max()),
        "closed_form_vs_flow_rel_err_first_record": float(cf_fl[1]) if len(cf_fl) > 1 else 0.0,
        "closed_form_vs_flow_rel_err_final": float(cf_fl[-1]),
        "growth_final": float(np.linalg.norm(E_gd[-1]) / np.linalg.norm(np.asarray(E0))),
        "loss_initial": float(gd_result.loss[0]),
        "loss_final": float(gd_result.loss[-1]),
    }

    gd_s = res["gd"]["median_s"]
    res["speedup"] = {
        "closed_form_vs_gd": gd_s / c["total_with_svd_s"],
        "closed_form_excl_svd_vs_gd": gd_s / c["median_s"],
        "closed_form_vs_gd_steady": (steps * per_step) / c["total_with_svd_s"],
        "flow_compiled_vs_gd": gd_s / r["median_s"],
        "integrate_flow_call_vs_gd": gd_s / p["median_s"],
    }
    if res["steps_reduced"]:
        res["speedup"]["closed_form_vs_gd_full_horizon_extrapolated"] = (
            res["gd"]["extrapolated_full_horizon_s"] / res["closed_form_full_horizon"]["total_with_svd_s"])
    res["target_speedup_met"] = res["speedup"]["closed_form_vs_gd"] >= TARGET_SPEEDUP
    log(f"  speedup closed form vs GD: {res['speedup']['closed_form_vs_gd']:.1f}x "
        f"(excl. SVD {res['speedup']['closed_form_excl_svd_vs_gd']:.1f}x)")
    del E_cf, U_cf, E_fl, U_fl, gd_result
    gc.collect()
    return res


# ----------------------------------------------------------------------------- tables

def trajectory_table(results: list[dict[str, Any]]) -> str:
    rows = []
    for r in results:
        rows.append([r["vocab_size"], r["dataset"]["num_rows"], f"{r['steps']}{'*' if r['steps_reduced'] else ''}",
                     r["t_final"], r["num_records"], r["closed_form"]["median_s"], r["svd"]["median_s"],
                     r["closed_form"]["compile_s_est"], r["flow"]["aot_run"]["median_s"], r["flow"]["aot_compile_s"],
                     r["flow"]["integrate_flow_call"]["median_s"], r["gd"]["median_s"],
                     r["speedup"]["closed_form_vs_gd"], r["speedup"]["closed_form_excl_svd_vs_gd"],
                     r["agreement"]["growth_final"], r["agreement"]["gd_vs_flow_max_rel_err"]])
    return format_table(["V", "N", "steps", "t_final", "records", "closed form eval (s)", "SVD (s)",
                         "cf compile (s)", "flow run (s)", "flow compile (s)", "integrate_flow() (s)",
                         "GD train() (s)", "speedup cf+SVD vs GD", "speedup cf eval vs GD", "|E_T|/|E_0|",
                         "GD vs flow rel err"], rows)


def full_horizon_table(results: list[dict[str, Any]]) -> str | None:
    rows = [[r["vocab_size"], r["steps_full"], r["closed_form_full_horizon"]["num_records"],
             r["closed_form_full_horizon"]["median_s"], r["closed_form_full_horizon"]["total_with_svd_s"],
             r["gd"]["extrapolated_full_horizon_s"], r["speedup"]["closed_form_vs_gd_full_horizon_extrapolated"]]
            for r in results if r["steps_reduced"]]
    if not rows:
        return None
    return format_table(["V", "steps", "records", "closed form eval (s)", "cf + SVD (s)", "GD extrapolated (s)",
                         "speedup"], rows)


def step_table(results: list[dict[str, Any]]) -> str:
    rows = []
    for r in results:
        for name, s in r["step"].items():
            rows.append([r["vocab_size"], name, s["jit_step"]["median_s"] * 1e3,
                         s["jit_scan_per_step"]["median_s"] * 1e3, s["eager_step"]["median_s"] * 1e3,
                         s["eager_disable_jit_step"]["median_s"] * 1e3, s["numpy_core"]["median_s"] * 1e3,
                         s["numpy_full_step"]["median_s"] * 1e3, s["jit_forward_loss"]["median_s"] * 1e3,
                         s["jit_grad"]["median_s"] * 1e3, s["ratio_jit_over_numpy_core"],
                         s["ratio_jit_over_numpy_core_min"], s["ratio_scan_over_numpy_core"],
                         s["ratio_jit_over_numpy_full"]])
    return format_table(["V", "dtype", "jit step (ms)", "jit scan (ms/step)", "eager (ms)", "disable_jit (ms)",
                         "numpy core (ms)", "numpy full (ms)", "jit fwd+loss (ms)", "jit grad (ms)",
                         "jit/numpy core", "jit/numpy core (min/min)", "scan/numpy core", "jit/numpy full"], rows)


# ----------------------------------------------------------------------------- main

def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vocab-sizes", default=None, help="comma-separated V values (default 64,512,4096; quick 64,256)")
    p.add_argument("--dim", type=int, default=64, help="embedding width d (default 64)")
    p.add_argument("--steps", type=int, default=None, help="GD steps of the E1 trajectory (default 6000; quick 400)")
    p.add_argument("--lr", type=float, default=0.05, help="learning rate; flow time t = steps * lr (default 0.05)")
    p.add_argument("--record-every", type=int, default=20, help="record every this many steps (default 20, as E1)")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats per measurement (default 7; quick 2)")
    p.add_argument("--budget-s", type=float, default=None,
                   help="stop repeating a measurement once its runs took this long (default 20; quick 2)")
    p.add_argument("--gd-budget-s", type=float, default=None,
                   help="reduce the steps (for all methods) if GD would take longer; 0 = never (default 60; quick 5)")
    p.add_argument("--init-scale", type=float, default=1e-3, help="init std eps (default 1e-3, as E1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--trajectory-dtype", default="float64", choices=["float64", "float32"])
    p.add_argument("--step-dtypes", default="float32,float64", help="dtypes of the single-step benchmark")
    p.add_argument("--ode-rtol", type=float, default=1e-10, help="flow solver rtol (default 1e-10, as E1)")
    p.add_argument("--ode-atol", type=float, default=1e-12, help="flow solver atol (default 1e-12, as E1)")
    p.add_argument("--max-ode-steps", type=int, default=1_000_000)
    p.add_argument("--matmul-precision", default="highest", help="jax.default_matmul_precision (E1 uses highest)")
    p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/linear_theory_<platform>[_quick].json)")
    p.add_argument("--quick", action="store_true", help="CI-sized smoke run")
    a = p.parse_args(argv)
    q = a.quick
    a.vocab_sizes = [int(v) for v in (a.vocab_sizes or ("64,256" if q else "64,512,4096")).split(",")]
    a.steps = a.steps if a.steps is not None else (400 if q else 6000)
    a.repeats = a.repeats if a.repeats is not None else (2 if q else 7)
    a.budget_s = a.budget_s if a.budget_s is not None else (2.0 if q else 20.0)
    a.gd_budget_s = a.gd_budget_s if a.gd_budget_s is not None else (5.0 if q else 60.0)
    a.step_dtypes = [s.strip() for s in a.step_dtypes.split(",") if s.strip()]
    if a.steps % a.record_every:
        p.error(f"--steps ({a.steps}) must be a multiple of --record-every ({a.record_every})")
    return a


def main(argv=None) -> int:
    args = parse_args(argv)
    platform_name = jax.default_backend()
    out = Path(args.out) if args.out else (
        REPO_ROOT / "benchmarks" / "results" / f"linear_theory_{platform_name}{'_quick' if args.quick else ''}.json")
    config = {k: v for k, v in vars(args).items() if k != "out"} | {"out": str(out)}
    prov = provenance(config)
    log(f"platform {platform_name}, devices {prov['devices']}, nproc {prov['machine']['nproc']}, "
        f"load {prov['machine']['load_average_1_5_15']}")
    tic = time.perf_counter()
    compiled_linear_theory()                        # sympy derivation + lambdify, once per process
    one_off = {"sympy_lambdify_s": time.perf_counter() - tic}

    results: list[dict[str, Any]] = []
    payload: dict[str, Any] = {"benchmark": "linear_theory", "provenance": prov, "one_off": one_off,
                               "trajectory_dtype": args.trajectory_dtype, "results": results,
                               "targets": {"closed_form_vs_gd_speedup_min": TARGET_SPEEDUP,
                                           "jit_over_numpy_core_max": TARGET_JIT_OVER_NUMPY}}
    with jax.default_matmul_precision(args.matmul_precision):
        for V in args.vocab_sizes:
            results.append(bench_vocab(V, args))
            payload["load_average_after"] = load_average()
            write_json_atomic(out, payload)          # partial results survive an interrupted run
    payload["load_average_after"] = load_average()
    payload["wall_s"] = time.perf_counter() - tic
    payload["summary"] = {
        "closed_form_vs_gd_speedup": {r["vocab_size"]: r["speedup"]["closed_form_vs_gd"] for r in results},
        "target_speedup_met": {r["vocab_size"]: r["target_speedup_met"] for r in results},
        "jit_over_numpy_core": {f"{r['vocab_size']}/{k}": s["ratio_jit_over_numpy_core"]
                                for r in results for k, s in r["step"].items()},
        "target_jit_over_numpy_met": {f"{r['vocab_size']}/{k}": s["target_jit_over_numpy_met"]
                                      for r in results for k, s in r["step"].items()},
    }
    write_json_atomic(out, payload)

    log(f"\nTrajectories ({args.trajectory_dtype}, d={args.dim}, lr={args.lr}, record every {args.record_every}; "
        "* = steps reduced, all methods at the same t_final)")
    log(trajectory_table(results))
    fh = full_horizon_table(results)
    if fh:
        log(f"\nFull E1 horizon ({args.steps} steps) where reduced above: closed form measured, GD extrapolated")
        log(fh)
    log("\nOne full-batch GD step (forward + backward + SGD update), median")
    log(step_table(results))
    log(f"\nwrote {out}  ({payload['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
