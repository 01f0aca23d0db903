#!/usr/bin/env python
"""Benchmark: the FFN's truncated gradient flows (diffrax) against full-batch gradient-descent training.

For each task size (composite addition preset "simple" with the key range widened to a vocabulary V; Emb-MLP with
one GELU hidden layer, float64, every weight N(0, eps^2), no biases) and two horizons,

- ``plateau``: half the predicted escape time t* (the flow is on its plateau, weights still ~eps),
- ``escape``:  1.3 t* (the E3-theory run's horizon: past the escape),

it times, side by side in one process and at the same final ``t = steps x lr``:

(a) the leading-order flow (``theory.ffn.integrate(order="leading")``, data through M only),
(b) the leading + second-order flow (``order="second_order"``, data through the joint signature, evaluated
    as an expectation over the N rows),
(c) full-batch gradient descent (``training.supervised.train``, optimizer "gd", lr ``--lr``), as E3 theory runs it,

each with ``--repeats`` timed calls after one warm-up call (whose time, with compilation, is reported as
``first_s``), and reports min / median / max and the speed-up of the flows over GD (target: >= 10x on the plateau),
on the median and on the first call. ``integrate`` compiles once per order, shape and tolerances (its vector
field is a module-level function with the data as diffrax ``args``), so the median is what a sweep over
initialisations or horizons of one task pays per solve; the plateau and escape rows share one compilation.
All three record the same number of time points. The flows are stopped where their end-to-end map exceeds 10x the
escape threshold, as in E3 theory.

Usage::

    python benchmarks/ffn_theory.py              # writes benchmarks/results/ffn_theory_<platform>.json
    python benchmarks/ffn_theory.py --quick      # smoke run (a few seconds): small sizes, one repeat
"""

from __future__ import annotations

import argparse
import math
from typing import Any

from _common import format_table, provenance, strip_results, timeit, write_json_atomic, REPO_ROOT

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from probsig_jax.data import PRESETS, make_composite_addition  # noqa: E402
from probsig_jax.models.ffn import FeedForwardModel  # noqa: E402
from probsig_jax.numerics import numerics  # noqa: E402
from probsig_jax.theory import ffn as theory  # noqa: E402
from probsig_jax.training.supervised import TrainConfig, train  # noqa: E402

TARGET_SPEEDUP = 10.0
BLOW_UP_STOP = 10.0          # as experiments.ffn_theory: the flows end where the end-to-end map exceeds 10x


def build(vocab_size: int, dim: int, hidden: int, eps: float):
    cfg = PRESETS["simple"].replace(key_max=vocab_size - 5)
    data = make_composite_addition(cfg).train
    model = FeedForwardModel(data.vocab_size, dim, seq_len=data.seq_len, hidden=(hidden,), activation="gelu",
                             init_scale=eps, init_convention="absolute", bias=False, dtype=jnp.float64,
                             rngs=nnx.Rngs(0))
    th = theory.FFNTheory.from_dataset(data, activation="gelu", depth=1)
    return data, model, th


def bench_size(vocab_size: int, dim: int, hidden: int, *, eps: float, lr: float, records: int, repeats: int,
               threshold: float) -> list[dict[str, Any]]:
    data, model, th = build(vocab_size, dim, hidden, eps)
    params0 = model.weight_tree()
    t_star = theory.predicted_escape_time(th, params0, threshold)
    rows = []
    for horizon, factor in (("plateau", 0.5), ("escape", 1.3)):
        steps = records * max(1, math.ceil(factor * t_star / lr / records))
        t_end = steps * lr
        ts = np.linspace(0.0, t_end, records + 1)

        def run_gd():
            fresh = nnx.clone(model)
            cfg = TrainConfig(optimizer="gd", learning_rate=lr, steps=steps, record_every=steps // records)
            return train(fresh, data, cfg, record=lambda m: {"E": m.weight_tree()["E"]}, quiet=True).weights["E"]

        timings = {"gd": timeit(run_gd, repeats=repeats)}
        for order in ("leading", "second_order"):
            timings[order] = timeit(lambda o=order: theory.integrate(th, params0, ts, order=o,
                                                                   stop_above=BLOW_UP_STOP * threshold)["E"],
                                    repeats=repeats)
        reached = {o: float(ts[np.isfinite(np.asarray(timings[o]["result"])).all(axis=(1, 2))][-1])
                   for o in ("leading", "second_order")}
        for tm in timings.values():
            tm["max_s"] = max(tm["runs_s"])
        gd_med = timings["gd"]["median_s"]
        row = {"vocab_size": vocab_size, "num_rows": data.num_samples, "dim": dim, "hidden": hidden, "eps": eps,
               "lr": lr, "horizon": horizon, "t_end": t_end, "t_star_predicted": t_star, "gd_steps": steps,
               "flow_reached_t": reached,
               "timings": {k: strip_results(v) for k, v in timings.items()},
               "speedup_over_gd": {o: gd_med / timings[o]["median_s"] for o in timings if o != "gd"},
               "speedup_over_gd_first_call": {o: timings["gd"]["first_s"] / timings[o]["first_s"]
                                              for o in timings if o != "gd"}}
        row["meets_target"] = {o: v >= TARGET_SPEEDUP for o, v in row["speedup_over_gd"].items()}
        rows.append(row)
        print(f"V={vocab_size} N={data.num_samples} {horizon:8s} t_end={t_end:.4g} steps={steps}: "
              f"gd {gd_med:.3f}s, leading {timings['leading']['median_s']:.3f}s "
              f"({row['speedup_over_gd']['leading']:.1f}x), second {timings['second_order']['median_s']:.3f}s "
              f"({row['speedup_over_gd']['second_order']:.1f}x); first call (with compilation): leading "
              f"{row['speedup_over_gd_first_call']['leading']:.1f}x, second "
              f"{row['speedup_over_gd_first_call']['second_order']:.1f}x", flush=True)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="64:16:32,128:32:64",
                   help="V:dim:hidden,... (default %(default)s; 256:64:128 takes ~75 s per GD run on a 2-core CPU)")
    p.add_argument("--eps", type=float, default=1e-3)
    p.add_argument("--lr", type=float, default=1.0)
    p.add_argument("--records", type=int, default=100)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threshold", type=float, default=1.0)
    p.add_argument("--quick", action="store_true", help="V 32 and 48, eps 1e-2, one repeat (smoke test)")
    p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/ffn_theory_<platform>.json)")
    args = p.parse_args(argv)
    if args.quick:
        args.sizes, args.eps, args.repeats, args.records = "32:8:16,48:8:16", 1e-2, 1, 20
    sizes = []
    for item in args.sizes.split(","):
        try:
            V, d, h = (int(x) for x in item.split(":"))
        except ValueError:
            raise SystemExit(f"--sizes: expected V:dim:hidden, got {item!r}")
        if V < 28:
            raise SystemExit(f"--sizes: need V >= 28 (keys 20..V-5), got {V}")
        sizes.append((V, d, h))
    config = {k: v for k, v in vars(args).items() if k != "out"}
    rows = []
    with numerics("float64"):
        for V, d, h in sizes:
            rows += bench_size(V, d, h, eps=args.eps, lr=args.lr, records=args.records, repeats=args.repeats,
                               threshold=args.threshold)
    methods = ("gd", "leading", "second_order")
    spread = lambda tm: "/".join(f"{tm[k]:.3g}" for k in ("min_s", "median_s", "max_s"))  # noqa: E731
    print("seconds as min/median/max; speed-up = GD median / flow median (first call: with compilation)")
    print(format_table(["V", "N", "horizon", "t_end", *methods, *(f"{m} x" for m in methods[1:]),
                        *(f"{m} x first" for m in methods[1:])],
                       [[r["vocab_size"], r["num_rows"], r["horizon"], r["t_end"],
                         *(spread(r["timings"][m]) for m in methods),
                         *(r["speedup_over_gd"][m] for m in methods[1:]),
                         *(r["speedup_over_gd_first_call"][m] for m in methods[1:])] for r in rows]))
    platform = jax.default_backend()
    out = args.out or REPO_ROOT / "benchmarks" / "results" / f"ffn_theory_{platform}{'_quick' if args.quick else ''}.json"
    path = write_json_atomic(out, {"benchmark": "ffn_theory", "target_speedup": TARGET_SPEEDUP, "rows": rows,
                                   "provenance": provenance(config)})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
