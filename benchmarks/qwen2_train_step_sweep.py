#!/usr/bin/env python
"""Repeated CPU train-step comparison over shapes: ``qwen2_train_step.py`` run ``--repeats`` times per shape, each
in a fresh process, and the min / median / max of every ``ours_over_torch_*`` ratio across those runs.

One run of ``qwen2_train_step.py`` alternates the runners round by round, so a load change hits all of them; a
fresh process per repeat also varies what one process cannot (memory placement, thread start-up, XLA's and
torch's caches). The shapes default to the three of the CPU target (8 x 256, 4 x 512, 32 x 64, ``small`` preset,
float32); ``--no-breakdown`` is passed, since only the step times enter the ratios. Every run's JSON is kept under
``<out stem>_runs/`` and the summary (with the machine and the command line) goes to ``--out``.

Usage::

    python benchmarks/qwen2_train_step_sweep.py                       # 3 shapes x 3 runs (about 12 min, 2 cores)
    python benchmarks/qwen2_train_step_sweep.py --shapes 8x256 --repeats 5
    python benchmarks/qwen2_train_step_sweep.py --quick               # smoke: tiny preset, 1 run of 4 x 32
    python benchmarks/qwen2_train_step_sweep.py -- --ours-attention xla   # extra options go to every run
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _common import REPO_ROOT, format_table, load_average, provenance, write_json_atomic

SCRIPT = Path(__file__).with_name("qwen2_train_step.py")
TARGET_SHAPES = ("8x256", "4x512", "32x64")
TARGET_RATIO = 1.0


def parse_shape(text: str) -> tuple[int, int]:
    try:
        batch, seq = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise SystemExit(f"--shapes: each shape is BATCHxSEQ (e.g. 8x256), got {text!r}") from None
    if batch < 1 or seq < 2:
        raise SystemExit(f"--shapes: batch must be >= 1 and seq >= 2, got {text!r}")
    return batch, seq


def spread(values: list[float]) -> dict[str, Any]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values), "runs": values}


def main(argv=None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1:]
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shapes", default=",".join(TARGET_SHAPES), help="comma list of BATCHxSEQ (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=3, help="fresh-process runs per shape (default: %(default)s)")
    p.add_argument("--quick", action="store_true", help="smoke run: qwen2_train_step --quick, one run of 4 x 32")
    p.add_argument("--out", default=None, help="summary JSON (default: benchmarks/results/qwen2_train_step_cpu_sweep.json)")
    args = p.parse_args(argv)
    if args.repeats < 1:
        raise SystemExit(f"--repeats must be >= 1, got {args.repeats}")
    shapes = [(4, 32)] if args.quick else [parse_shape(s) for s in args.shapes.split(",") if s]
    repeats = 1 if args.quick else args.repeats
    out = Path(args.out) if args.out else (REPO_ROOT / "benchmarks" / "results" /
                                           f"qwen2_train_step_cpu_sweep{'_quick' if args.quick else ''}.json")
    runs_dir = out.with_name(out.stem + "_runs")

    per_shape: dict[str, Any] = {}
    for batch, seq in shapes:
        key = f"{batch}x{seq}"
        summaries = []
        for k in range(repeats):
            run_out = runs_dir / f"{key}_run{k + 1}.json"
            cmd = [sys.executable, str(SCRIPT), "--device", "cpu", "--out", str(run_out)]
            cmd += ["--quick"] if args.quick else ["--batch", str(batch), "--seq", str(seq), "--no-breakdown"]
            cmd += extra
            print(f"[{key} run {k + 1}/{repeats}] load {load_average()}: {' '.join(cmd[1:])}", flush=True)
            tic = time.perf_counter()
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            summary = json.loads(run_out.read_text())["summary"]
            summaries.append(summary)
            ratios = {k2: round(v, 3) for k2, v in summary.items() if k2.startswith("ours_over_torch_")}
            print(f"  {time.perf_counter() - tic:.0f} s: {ratios}", flush=True)
        ratio_keys = sorted({k2 for s in summaries for k2 in s if k2.startswith("ours_over_torch_")})
        per_shape[key] = {
            "batch": batch, "seq": seq,
            "ours_tokens_per_s": spread([s["ours_tokens_per_s"] for s in summaries]),
            **{k2: spread([s[k2] for s in summaries]) for k2 in ratio_keys},
            # every other runner's tokens/s (torch, and ours with other kernels or on one device)
            **{k2: spread([s[k2] for s in summaries]) for k2 in sorted(summaries[0])
               if k2.endswith("_tokens_per_s") and k2 != "ours_tokens_per_s"},
            "run_files": [f"{runs_dir.name}/{key}_run{k + 1}.json" for k in range(repeats)],
        }
    ratio_min = {key: min(v["min"] for k2, v in row.items() if k2.startswith("ours_over_torch_"))
                 for key, row in per_shape.items()}
    result = {"benchmark": "qwen2_train_step_sweep", "repeats": repeats, "extra_args": extra,
              "target": f"ours >= {TARGET_RATIO:g}x every torch reference at every shape, in every run",
              # the smoke run's tiny shape is not the target's
              "target_met": None if args.quick else all(v >= TARGET_RATIO for v in ratio_min.values()),
              "shapes": per_shape,
              "provenance": provenance(vars(args) | {"extra_args": extra})}
    write_json_atomic(out, result)

    headers = ["batch x seq", "ours tokens/s (median)", "ours / eager min", "median", "max",
               "ours / sdpa min", "median", "max"]
    rows = []
    for key, row in per_shape.items():
        eager, sdpa = row.get("ours_over_torch_eager"), row.get("ours_over_torch_sdpa")
        cells = [key, row["ours_tokens_per_s"]["median"]]
        for ratio in (eager, sdpa):
            cells += [ratio["min"], ratio["median"], ratio["max"]] if ratio else ["-"] * 3
        rows.append(cells)
    print(format_table(headers, rows))
    verdict = {None: "not assessed (--quick)", True: "met", False: "NOT met"}[result["target_met"]]
    print(f"target ({result['target']}): {verdict}")
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
