"""Run directories: atomic creation, provenance records and JSON output.

A run is written into a hidden sibling directory and renamed into place only
when it is complete, so ``runs/<name>`` either holds a whole run or does not exist.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from probsig_jax.validation import ConfigError, require

try:
    import fcntl
except ImportError:  # not POSIX: runs are not locked
    fcntl = None

TRACKED_PACKAGES = ("probsig-jax", "jax", "jaxlib", "flax", "optax", "diffrax", "numpy", "scipy", "sympy",
                    "matplotlib", "tqdm")


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages a result depends on (None if absent)."""
    out = {}
    for name in TRACKED_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_revision() -> dict[str, Any]:
    """``{"commit": sha or None, "dirty": bool or None}`` of the source tree of this package."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        if sha.returncode != 0:
            return {"commit": None, "dirty": None}
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                                capture_output=True, text=True, timeout=10)
        return {"commit": sha.stdout.strip(), "dirty": bool(status.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def provenance() -> dict[str, Any]:
    """Everything needed to reproduce a result besides its config and seed."""
    import jax

    return {
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": [Path(sys.argv[0]).name] + sys.argv[1:],
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "jax_backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "x64": bool(jax.config.read("jax_enable_x64")),
        "versions": package_versions(),
        "git": git_revision(),
    }


def to_jsonable(obj: Any) -> Any:
    """Dataclasses, numpy scalars/arrays, tuples and paths to plain JSON types (NaN -> null)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        value = float(obj)
        return value if np.isfinite(value) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "__str__") and not isinstance(obj, (str, int, bool, type(None))):
        return str(obj)
    return obj


def write_bytes(path: Path, data: Any) -> Path:
    """Write bytes (or any contiguous buffer) atomically: a uniquely named temporary file in the same folder,
    flushed to disk, then ``os.replace``. Concurrent writers of the same file never clobber each other's
    partial files, a failed write leaves nothing behind, and an existing file keeps its permissions (a new
    one gets the usual ``0o666 & ~umask``)."""
    path = Path(path)
    if path.exists():
        mode = path.stat().st_mode & 0o777
    else:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(memoryview(data).cast("B"))
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path: Path, payload: Any) -> Path:
    """Write JSON atomically (see :func:`write_bytes`)."""
    return write_bytes(path, (json.dumps(to_jsonable(payload), indent=2, allow_nan=False) + "\n").encode())


def write_text(path: Path, text: str) -> Path:
    """Write UTF-8 text atomically (see :func:`write_bytes`)."""
    return write_bytes(path, text.encode("utf-8"))


def default_run_dir(root: str | Path = "runs") -> Path:
    """``runs/<UTC timestamp>`` (with a numeric suffix if that exists)."""
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    base = Path(root) / stamp
    path, i = base, 1
    while path.exists():
        path, i = base.with_name(f"{stamp}-{i}"), i + 1
    return path


def ensure_directory(path: str | Path, field: str) -> Path:
    """``path`` as an existing directory (created with its parents), or a ConfigError naming ``field`` and
    what is wrong (a file in the way, no permission, a read-only or virtual file system)."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=path, prefix=".probsig-write-test-")
        probe.close()
    except FileExistsError:
        raise ConfigError(field, f"{path} exists and is not a directory") from None
    except OSError as err:
        raise ConfigError(field, f"cannot write to directory {path}: {err.strerror or err}") from None
    return path


@contextmanager
def run_lock(out: Path) -> Iterator[None]:
    """Hold an exclusive lock on the run directory ``out`` (a ``.<name>.lock`` file beside it), so two runs
    never write the same ``out`` (or its work directory); a second run gets a ConfigError on ``out``. The lock
    dies with its process (``flock``), so a killed run never blocks the next one."""
    lock_path = out.with_name(f".{out.name}.lock")
    handle = open(lock_path, "a+")
    try:
        if fcntl is not None:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ConfigError("out", f"another run is writing to {out} right now; wait for it to finish or "
                                         "choose another --out") from None
        try:
            yield
        finally:
            lock_path.unlink(missing_ok=True)        # still ours: remove it before releasing the lock
    finally:
        handle.close()


def _remove_partials(out: Path) -> None:
    """Remove the hidden partial directories of earlier runs into ``out`` (killed ones leave them; under the
    run lock no live run owns one)."""
    for stale in out.parent.glob(f".{out.name}.partial-*"):
        shutil.rmtree(stale, ignore_errors=True)


@contextmanager
def atomic_run_dir(out: str | Path, *, after_complete: Callable[[], None] | None = None) -> Iterator[Path]:
    """Yield a temporary directory that becomes ``out`` only if the block finishes without error.

    ``out`` is locked for the whole run (:func:`run_lock`); partial directories left by killed runs into it
    are removed first; ``after_complete`` runs once ``out`` is in place, still under the lock (e.g. removing
    the run's work directory)."""
    require(str(out).strip() not in ("", "."), "out", f"must name a new directory, got {str(out)!r}")
    out = Path(out)
    ensure_directory(out.parent, "out")
    with run_lock(out):
        if out.exists():
            raise ConfigError("out", f"{out} already exists; choose a new directory (results are never overwritten)")
        _remove_partials(out)
        tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
        tmp.mkdir()
        try:
            yield tmp
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        os.replace(tmp, out)
        if after_complete is not None:
            after_complete()
