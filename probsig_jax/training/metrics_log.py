"""Training metrics streamed as they are produced: JSON lines, and TensorBoard scalars.

:class:`MetricsLog` appends one JSON object per record to ``metrics.jsonl`` and flushes it to disk at once, so
another process can read the file while the run goes (``tail -f``; each line is complete when it appears).
With ``tensorboard_dir`` the same scalars go to TensorBoard event files through ``tensorboardX`` (the
maintained TensorFlow-free writer; install the ``tensorboard`` extra), read back by TensorBoard itself.

A record is ``{"kind": "train" | "eval" | ..., "step": int, "time": unix seconds, <name>: number, ...}``; only
finite numbers, ints and bools are kept as scalars (nested values are left to ``metrics.json``). On a resumed
run (``start_step`` > 0) the lines an interrupted run wrote past its last checkpoint are dropped first (train
records with ``step >= start_step``, eval records with ``step > start_step``), so the stream equals that of the
uninterrupted run, timestamps aside; the TensorBoard writer purges the same steps (``purge_step``).
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any, Mapping

from probsig_jax.validation import ConfigError

JSONL_NAME = "metrics.jsonl"


def _scalars(values: Mapping[str, Any]) -> dict[str, float | int | bool]:
    out: dict[str, float | int | bool] = {}
    for key, value in values.items():
        if isinstance(value, bool) or (isinstance(value, int) and not isinstance(value, bool)):
            out[key] = value
        elif isinstance(value, float) and math.isfinite(value):
            out[key] = value
        elif hasattr(value, "item") and getattr(value, "size", 2) == 1:     # numpy / jax scalars
            item = value.item()
            if isinstance(item, (bool, int)) or (isinstance(item, float) and math.isfinite(item)):
                out[key] = item
    return out


def _kept_on_resume(line: str, start_step: int) -> bool:
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return False                    # a line cut by the interruption
    step = record.get("step")
    if not isinstance(step, int):
        return False
    return step < start_step if record.get("kind") == "train" else step <= start_step


def read_metrics_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The complete records of a ``metrics.jsonl`` (a last line still being written is skipped)."""
    records = []
    for line in Path(path).read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


class MetricsLog:
    """Append-only stream of training metrics (see the module docstring).

    Args:
      jsonl_path: the ``metrics.jsonl`` to append to (its directory is created); None for no file.
      tensorboard_dir: a TensorBoard log directory; None for none.
      start_step: the step a resumed run continues from (0 for a fresh run: an existing file is replaced).
    """

    def __init__(self, jsonl_path: str | Path | None, tensorboard_dir: str | Path | None = None, *,
                 start_step: int = 0) -> None:
        self.jsonl_path = None if jsonl_path is None else Path(jsonl_path)
        self._file = None
        self._tb = None
        if self.jsonl_path is not None:
            self.jsonl_path.parent.mkdir(parents=True, exist_ok=True)
            kept = []
            if start_step > 0 and self.jsonl_path.is_file():
                kept = [ln for ln in self.jsonl_path.read_text().splitlines() if _kept_on_resume(ln, start_step)]
            tmp = self.jsonl_path.with_name(f".{self.jsonl_path.name}.tmp")
            tmp.write_text("".join(ln + "\n" for ln in kept))
            os.replace(tmp, self.jsonl_path)
            self._file = open(self.jsonl_path, "a", encoding="utf-8")
        if tensorboard_dir is not None:
            try:
                from tensorboardX import SummaryWriter
            except ImportError:
                raise ConfigError("tensorboard", "needs the tensorboardX package: pip install "
                                                 "'probsig-jax[tensorboard]'") from None
            Path(tensorboard_dir).mkdir(parents=True, exist_ok=True)
            self._tb = SummaryWriter(logdir=str(tensorboard_dir), purge_step=start_step if start_step > 0 else None,
                                     flush_secs=5)

    def write(self, kind: str, step: int, values: Mapping[str, Any]) -> None:
        """Append one record: ``kind`` (e.g. "train", "eval"), the step and the scalar entries of ``values``."""
        scalars = _scalars(values)
        if self._file is not None:
            record = {"kind": kind, "step": int(step), "time": time.time(), **scalars}
            self._file.write(json.dumps(record) + "\n")
            self._file.flush()          # visible to a reader at once (no fsync: durability is the checkpoints' job)
        if self._tb is not None:
            for name, value in scalars.items():
                if name != "step":
                    self._tb.add_scalar(f"{kind}/{name}", float(value), global_step=int(step))

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    def __enter__(self) -> "MetricsLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
