"""Benchmark (d) of ``linear_theory.py``: one full-batch gradient-descent step of ``LinearEmbeddingModel``
(forward + backward + SGD update), jit-compiled (one dispatch per step, and scanned as ``train`` runs it)
vs eager JAX vs a hand-written numpy step (the matmul lower bound). Imported by ``linear_theory.py``, which
enables float64 before any array exists.
"""

from __future__ import annotations

import time
from typing import Any

from _common import strip_results, timeit

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from probsig_jax.models.linear import LinearEmbeddingModel  # noqa: E402
from probsig_jax.training.supervised import TrainConfig, make_train_step  # noqa: E402

TARGET_JIT_OVER_NUMPY = 2.0  # jitted GD step vs the numpy matmul lower bound


def step_functions(model: nnx.Module, dataset, lr: float):
    """The step ``train`` compiles (:func:`probsig_jax.training.supervised.make_train_step`, full-batch gradient
    descent), as a pure function of (state, opt_state)."""
    graphdef, state = nnx.split(model)
    dtype = jax.tree_util.tree_leaves(state)[0].dtype
    train_step = make_train_step(graphdef, dataset, TrainConfig(optimizer="gd", learning_rate=lr), dtype)
    key = jax.random.key(0)                       # unused by a full-batch step

    def step(state, opt_state):
        return train_step.step(state, opt_state, key)[:2]

    return step, train_step.loss, graphdef, state, train_step.optimizer.init(state)


def numpy_step_functions(E: np.ndarray, U: np.ndarray, dataset, lr: float):
    """numpy versions of one step: ``core`` = the matmuls + softmax (lower bound), ``full`` = the whole step."""
    ids = np.asarray(dataset.inputs)
    y = np.asarray(dataset.labels)
    w = dataset.sample_weights().astype(E.dtype)
    rows = np.arange(len(y))
    ET = np.ascontiguousarray(E.T)
    h0 = ET[ids].sum(axis=1)                                 # (N, d) summed embeddings

    def core(h=h0, U=U):
        z = h @ U.T                                          # (N, V) logits
        z -= z.max(axis=1, keepdims=True)
        np.exp(z, out=z)
        z /= z.sum(axis=1, keepdims=True)                    # softmax
        z[rows, y] -= 1.0
        z *= w[:, None]                                      # dLoss/dlogits
        gU = z.T @ h                                         # (V, d)
        gh = z @ U                                           # (N, d)
        return gU, gh

    def full(ET=ET, U=U):
        h = ET[ids].sum(axis=1)
        gU, gh = core(h, U)
        gET = np.zeros_like(ET)
        np.add.at(gET, ids.reshape(-1), np.repeat(gh, ids.shape[1], axis=0))
        return ET - lr * gET, U - lr * gU

    return core, full


def bench_step(vocab_size: int, dim: int, dataset, dtype, lr: float, args) -> dict[str, Any]:
    model = LinearEmbeddingModel(vocab_size, dim, init_scale=args.init_scale, dtype=dtype, rngs=nnx.Rngs(args.seed))
    step, loss_fn, graphdef, state, opt_state = step_functions(model, dataset, lr)
    rep, budget = args.repeats, args.budget_s
    out: dict[str, Any] = {"dtype": jnp.dtype(dtype).name}

    step_jit = jax.jit(step)
    tic = time.perf_counter()
    compiled = step_jit.lower(state, opt_state).compile()
    out["jit_compile_s"] = time.perf_counter() - tic
    out["jit_step"] = strip_results(timeit(lambda: compiled(state, opt_state), repeats=rep, budget_s=budget,
                                           warmup=2, min_runs=3))

    # Breakdown: forward + loss only, and forward + backward (no update).
    fwd = jax.jit(loss_fn)
    grad = jax.jit(jax.grad(loss_fn))
    out["jit_forward_loss"] = strip_results(timeit(lambda: fwd(state), repeats=rep, budget_s=budget, warmup=2,
                                                   min_runs=3))
    out["jit_grad"] = strip_results(timeit(lambda: grad(state), repeats=rep, budget_s=budget, warmup=2, min_runs=3))

    chunk = args.record_every

    @jax.jit
    def scan_chunk(state, opt_state):
        def body(carry, _):
            return step(*carry), None
        return jax.lax.scan(body, (state, opt_state), None, length=chunk)[0]

    t = timeit(lambda: scan_chunk(state, opt_state), repeats=rep, budget_s=budget, warmup=1, min_runs=1)
    out["jit_scan_per_step"] = {"median_s": t["median_s"] / chunk, "min_s": t["min_s"] / chunk,
                                "chunk_steps": chunk, "first_chunk_s": t["first_s"], "runs_s": t["runs_s"]}

    # Eager: the un-jitted step (every primitive dispatched on its own), and with jit disabled throughout.
    out["eager_step"] = strip_results(timeit(lambda: step(state, opt_state), repeats=rep, budget_s=budget,
                                             warmup=1, min_runs=1))
    with jax.disable_jit():
        out["eager_disable_jit_step"] = strip_results(timeit(lambda: step(state, opt_state), repeats=rep,
                                                             budget_s=budget, warmup=1, min_runs=1))

    E = np.array(model.embedding[...])
    U = np.array(model.unembedding[...])
    core, full = numpy_step_functions(E, U, dataset, lr)
    out["numpy_core"] = strip_results(timeit(core, repeats=rep, budget_s=budget, warmup=1, min_runs=3))
    out["numpy_full_step"] = strip_results(timeit(full, repeats=rep, budget_s=budget, warmup=1, min_runs=1))

    # Correctness: numpy step == jitted step.
    new_state, _ = compiled(state, opt_state)
    ET_np, U_np = full()
    new_model = nnx.merge(graphdef, new_state)
    tol = 1e-4 if out["dtype"] == "float32" else 1e-10
    err = max(float(np.max(np.abs(np.asarray(new_model.embedding[...]).T - ET_np))),
              float(np.max(np.abs(np.asarray(new_model.unembedding[...]) - U_np))))
    scale = float(np.max(np.abs(U))) + 1e-30
    out["numpy_vs_jit_max_abs_diff_over_max_abs_weight"] = err / scale
    if err / scale > tol:
        raise AssertionError(f"numpy step differs from the jitted step: {err / scale:.3g} > {tol}")

    jit_s, np_core_s = out["jit_step"]["median_s"], out["numpy_core"]["median_s"]
    out["ratio_jit_over_numpy_core"] = jit_s / np_core_s
    out["ratio_jit_over_numpy_core_min"] = out["jit_step"]["min_s"] / out["numpy_core"]["min_s"]
    out["ratio_jit_over_numpy_full"] = jit_s / out["numpy_full_step"]["median_s"]
    out["ratio_scan_over_numpy_core"] = out["jit_scan_per_step"]["median_s"] / np_core_s
    out["ratio_eager_over_jit"] = out["eager_step"]["median_s"] / jit_s
    N, L = dataset.inputs.shape
    out["flops_matmuls"] = 3 * 2 * N * vocab_size * dim
    out["gflops_jit"] = out["flops_matmuls"] / jit_s / 1e9
    out["gflops_numpy_core"] = out["flops_matmuls"] / np_core_s / 1e9
    out["target_jit_over_numpy_met"] = out["ratio_jit_over_numpy_core"] <= TARGET_JIT_OVER_NUMPY
    return out
