"""Training checkpoints with orbax: parameters, optimiser state and a JSON record, restored exactly.

One checkpoint per saved step under ``directory/<step>/`` (orbax's ``CheckpointManager``, saved
synchronously so a checkpoint is complete when :meth:`TrainCheckpointer.save` returns; orbax writes each
step to a temporary directory and renames it, so an interrupted save never leaves a readable half
checkpoint). The JSON record holds what a resumed run needs besides arrays: the step, the loss history
and a fingerprint of the configuration, checked on restore so a run never resumes from another run's
checkpoints.
"""

from __future__ import annotations

import logging
import shutil
import signal
import threading
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import jax
import orbax.checkpoint as ocp

from probsig_jax.validation import ConfigError, require_int

logging.getLogger("absl").setLevel(logging.WARNING)  # orbax logs every save at INFO through absl


class TrainCheckpointer:
    """Save and restore ``{"params", "opt_state"}`` pytrees plus a JSON ``record`` per step.

    Args:
      directory: where the step folders go (created if missing).
      max_to_keep: how many of the most recent checkpoints to keep (>= 1).
    """

    def __init__(self, directory: str | Path, max_to_keep: int = 2):
        require_int(max_to_keep, "keep_checkpoints", minimum=1)
        self.directory = Path(directory).absolute()
        self.directory.mkdir(parents=True, exist_ok=True)
        self._options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, enable_async_checkpointing=False,
                                                     create=True)
        self._manager = ocp.CheckpointManager(self.directory, options=self._options)

    def latest_step(self) -> int | None:
        """The newest complete checkpoint's step, or ``None``."""
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def save(self, step: int, params: Any, opt_state: Any, record: dict[str, Any]) -> None:
        """Write the checkpoint of ``step`` (blocks until it is on disk). Ctrl-C / SIGTERM arriving meanwhile
        take effect once the write is complete, so an interruption never lands inside orbax's asynchronous
        save (which then prints tracebacks from its closed event loop)."""
        state = {"params": params, "opt_state": opt_state}
        with interrupts_deferred():
            self._manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                            record=ocp.args.JsonSave(record)), force=True)
            self._manager.wait_until_finished()

    def restore(self, step: int, params_like: Any, opt_state_like: Any,
                shardings: tuple[Any, Any] | None = None) -> tuple[Any, Any, dict[str, Any]]:
        """``(params, opt_state, record)`` of ``step``, with the tree structure of ``params_like`` /
        ``opt_state_like`` (arrays or ``ShapeDtypeStruct``s) and, if given, the ``(param, opt_state)``
        shardings."""
        if step not in self._manager.all_steps():
            raise ConfigError("checkpoint", f"no checkpoint of step {step} in {self.directory} "
                                            f"(have {self.all_steps()})")
        like = {"params": params_like, "opt_state": opt_state_like}
        if shardings is None:
            abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, like)
        else:
            target = {"params": shardings[0], "opt_state": shardings[1]}
            abstract = jax.tree_util.tree_map(
                lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), like, target)
        restored = self._manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract),
                                                                      record=ocp.args.JsonRestore()))
        return restored["state"]["params"], restored["state"]["opt_state"], dict(restored["record"])

    def restore_newest_intact(self, params_like: Any, opt_state_like: Any,
                              shardings: tuple[Any, Any] | None = None) -> tuple[int, Any, Any, dict[str, Any]] | None:
        """``(step, params, opt_state, record)`` of the newest checkpoint that restores, or ``None`` when there
        is none. A damaged newer checkpoint (unreadable arrays or metadata) is removed, with a one-line
        warning naming it, so the run continues from the previous one; ConfigError when every checkpoint is
        damaged."""
        steps = self.all_steps()
        for step in reversed(steps):
            try:
                params, opt_state, record = self.restore(step, params_like, opt_state_like, shardings)
                if not isinstance(record, dict) or "step" not in record:
                    raise ValueError("its record has no step")
                return step, params, opt_state, record
            except Exception as err:   # orbax / tensorstore / JSON errors of a damaged checkpoint
                reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
                warnings.warn(f"checkpoint {step} in {self.directory} is damaged ({reason}); removing it and "
                              "falling back to the previous one", RuntimeWarning, stacklevel=2)
                self._remove(step)
        if steps:
            raise ConfigError("checkpoint_dir", f"every checkpoint in {self.directory} is damaged; remove the "
                                                "directory to start the run afresh")
        return None

    def _remove(self, step: int) -> None:
        self._manager.close()
        shutil.rmtree(self.directory / str(step), ignore_errors=True)
        self._manager = ocp.CheckpointManager(self.directory, options=self._options)

    def close(self) -> None:
        self._manager.close()


@contextmanager
def interrupts_deferred(signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)) -> Iterator[None]:
    """Hold ``signals`` back while the block runs; one that arrived is re-raised (to its previous handler) at
    the end. Outside the main thread (where handlers cannot be set) the block just runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: pending.append(signum)) for sig in signals}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if pending:
            signal.raise_signal(pending[0])
