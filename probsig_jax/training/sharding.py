"""Device meshes and parameter shardings for the LM training step, with JAX's own sharding.

No home-made parallelism: parameters, optimiser state and batches get a
:class:`jax.sharding.NamedSharding` on a three-axis mesh ``("data", "fsdp", "tensor")``
and ``jax.jit`` (GSPMD) inserts the collectives.

* ``data``: pure data parallelism (parameters replicated along it);
* ``fsdp``: the batch is split along it too, and each parameter's largest ("model") dimension
  is sharded along it (ZeRO-3 / fully sharded data parallelism);
* ``tensor``: Megatron-style tensor parallelism over attention heads, MLP intermediate units and
  the vocabulary.

:data:`DEFAULT_RULES` (kernels stored (in, out) as ``nnx.Linear`` does):

=====================================  ===============================  ============================
parameter                              spec                              meaning
=====================================  ===============================  ============================
``{q,k,v}_proj/kernel`` (H, heads*D)   ``P("fsdp", "tensor")``           column parallel, FSDP on H
``{q,k,v}_proj/bias``                  ``P("tensor")``                   follows its kernel's columns
``o_proj/kernel`` (heads*D, H)         ``P("tensor", "fsdp")``           row parallel
``{gate,up}_proj/kernel`` (H, I)       ``P("fsdp", "tensor")``           column parallel
``down_proj/kernel`` (I, H)            ``P("tensor", "fsdp")``           row parallel
``embed_tokens/embedding`` (V, H)      ``P(("tensor", "fsdp"), None)``   vocabulary over both
``lm_head/kernel`` (H, V)              ``P("fsdp", "tensor")``           vocabulary parallel
norm scales, other biases, scalars     ``P()``                           replicated
=====================================  ===============================  ============================

Which parameter gets which :class:`~jax.sharding.PartitionSpec` is decided by *rules*: a
sequence of ``(regex, PartitionSpec)`` pairs matched (``re.search``, first match wins) against
the parameter's path string, e.g. ``"layers/0/self_attn/q_proj/kernel"``. Optimiser states
(optax) mirror the parameters with a prefix (``"0/mu/layers/0/self_attn/q_proj/kernel"``), so
the same rules, which are anchored at the *end* of the path, shard them the same way; scalars
such as step counts fall through to the replicate fallback. A sharded dimension whose size is
not divisible by its mesh axes is replicated instead (logged), never an error, so one rule set
serves every model size and mesh.
"""

from __future__ import annotations

import logging
import math
import re
from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from probsig_jax.validation import ConfigError, require

logger = logging.getLogger(__name__)

AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")

Rules = Sequence[tuple[str, P]]

# Kernels are stored (in, out) as nnx.Linear does; embeddings (V, H) as nnx.Embed does.
DEFAULT_RULES: tuple[tuple[str, P], ...] = (
    # attention: column-parallel q/k/v (heads over "tensor"), row-parallel o.
    (r"(^|/)(q_proj|k_proj|v_proj|qkv_proj)/kernel$", P("fsdp", "tensor")),
    (r"(^|/)(q_proj|k_proj|v_proj|qkv_proj)/bias$", P("tensor")),
    (r"(^|/)o_proj/kernel$", P("tensor", "fsdp")),
    # MLP: column-parallel gate/up (intermediate over "tensor"), row-parallel down.
    (r"(^|/)(gate_proj|up_proj|gate_up_proj)/kernel$", P("fsdp", "tensor")),
    (r"(^|/)down_proj/kernel$", P("tensor", "fsdp")),
    # embedding (V, H): the vocabulary over tensor x fsdp, H whole. (Sharding H over fsdp makes XLA
    # replicate the (N, T, H) activations to go from the H-sharded lookup to the batch-sharded layers:
    # "Involuntary full rematerialization" warnings on a data x fsdp x tensor mesh.)
    (r"(^|/)(embed_tokens|wte|tok_embeddings)/embedding$", P(("tensor", "fsdp"), None)),
    (r"(^|/)embedding(/embedding)?$", P(("tensor", "fsdp"), None)),
    # unembedding (H, V): vocabulary-parallel over tensor, H over fsdp.
    (r"(^|/)(lm_head|unembed|output)/kernel$", P("fsdp", "tensor")),
    # norm scales, remaining biases, step counts, anything else: replicated.
    (r".*", P()),
)


def path_string(keypath: Sequence[Any]) -> str:
    """``"layers/0/self_attn/q_proj/kernel"`` from a ``jax.tree_util`` key path.

    The ``.value`` attribute of an NNX ``Variable`` is dropped, so NNX states, optax states over
    them and plain nested dicts give the same path strings.
    """
    parts = []
    for key in keypath:
        if isinstance(key, jax.tree_util.DictKey):
            parts.append(str(key.key))
        elif isinstance(key, jax.tree_util.SequenceKey):
            parts.append(str(key.idx))
        elif isinstance(key, jax.tree_util.GetAttrKey):
            if key.name == "value":
                continue
            parts.append(key.name)
        elif isinstance(key, jax.tree_util.FlattenedIndexKey):
            parts.append(str(key.key))
        else:
            parts.append(str(key))
    return "/".join(parts)


def make_mesh(data: int = -1, fsdp: int = 1, tensor: int = 1, devices: Sequence[Any] | None = None) -> Mesh:
    """A ``("data", "fsdp", "tensor")`` mesh over ``devices`` (default: ``jax.devices()``, all hosts).

    One axis may be ``-1``: it takes all the devices the others leave. Without ``-1`` the product
    of the sizes must equal the number of devices. Bad sizes raise :class:`ConfigError` naming the axis.
    """
    devices = list(jax.devices() if devices is None else devices)
    require(len(devices) >= 1, "devices", "needs at least one device")
    sizes = {"data": data, "fsdp": fsdp, "tensor": tensor}
    for name, size in sizes.items():
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not (size == -1 or size >= 1):
            raise ConfigError(name, f"must be a positive integer or -1 (all remaining devices), got {size!r}")
    free = [name for name, size in sizes.items() if size == -1]
    if len(free) > 1:
        raise ConfigError(free[1], f"only one mesh axis may be -1, got -1 for {', '.join(free)}")
    n = len(devices)
    fixed = math.prod(int(size) for size in sizes.values() if size != -1)
    if free:
        name = free[0]
        if n % fixed:
            others = " x ".join(f"{k}={v}" for k, v in sizes.items() if k != name)
            raise ConfigError(name, f"cannot fill the mesh: {others} = {fixed} does not divide the {n} devices")
        sizes[name] = n // fixed
    elif fixed != n:
        # Name the axis to blame: the last one that is not 1 (or "data" if all are 1).
        name = next((k for k in reversed(AXES) if sizes[k] != 1), "data")
        raise ConfigError(name, f"mesh data={data} x fsdp={fsdp} x tensor={tensor} = {fixed} devices, "
                                f"but {n} are available (use -1 for one axis to take the rest)")
    shape = tuple(int(sizes[a]) for a in AXES)
    array = np.array(devices, dtype=object).reshape(shape)
    auto = (jax.sharding.AxisType.Auto,) * len(AXES)
    return Mesh(array, AXES, axis_types=auto)


def _axis_size(mesh: Mesh, entry: Any) -> int:
    names = entry if isinstance(entry, tuple) else (entry,)
    return math.prod(mesh.shape[a] for a in names)


def _check_rules(rules: Rules, mesh: Mesh) -> list[tuple[re.Pattern, P]]:
    compiled = []
    for i, rule in enumerate(rules):
        require(isinstance(rule, tuple) and len(rule) == 2 and isinstance(rule[1], P), f"rules[{i}]",
                f"must be a (regex, PartitionSpec) pair, got {rule!r}")
        pattern, spec = rule
        try:
            regex = re.compile(pattern)
        except (re.error, TypeError) as err:
            raise ConfigError(f"rules[{i}]", f"bad regex {pattern!r}: {err}") from None
        for entry in spec:
            for name in entry if isinstance(entry, tuple) else (entry,):
                require(name is None or name in mesh.axis_names, f"rules[{i}]",
                        f"mesh axis {name!r} is not one of {mesh.axis_names}")
        compiled.append((regex, spec))
    return compiled


def fit_spec(spec: P, shape: Sequence[int], mesh: Mesh, path: str = "") -> P:
    """``spec`` adapted to an array of ``shape``: padded with ``None`` to its rank; a dimension
    not divisible by its mesh axes (or beyond the rank) is replicated instead, with a log line."""
    entries = list(spec)
    if len(entries) > len(shape):
        if any(e is not None for e in entries[len(shape):]):
            logger.info("sharding: %s has rank %d < len(%s); replicating it", path, len(shape), spec)
            return P()
        entries = entries[: len(shape)]
    entries += [None] * (len(shape) - len(entries))
    for dim, entry in enumerate(entries):
        if entry is None:
            continue
        size = _axis_size(mesh, entry)
        if shape[dim] % size:
            logger.info("sharding: %s dim %d (size %d) is not divisible by mesh axes %s (size %d); "
                        "replicating that dim", path, dim, shape[dim], entry, size)
            entries[dim] = None
    while entries and entries[-1] is None:
        entries.pop()
    return P(*entries)


def partition_specs(tree: Any, mesh: Mesh, rules: Rules = DEFAULT_RULES) -> Any:
    """A pytree of :class:`PartitionSpec` with ``tree``'s structure (arrays or ShapeDtypeStructs)."""
    compiled = _check_rules(rules, mesh)

    def one(keypath, leaf):
        path = path_string(keypath)
        shape = tuple(getattr(leaf, "shape", ()))
        for regex, spec in compiled:
            if regex.search(path):
                return fit_spec(spec, shape, mesh, path)
        return P()  # no rule matched: replicate

    return jax.tree_util.tree_map_with_path(one, tree)


def parameter_shardings(state: Any, mesh: Mesh, rules: Rules = DEFAULT_RULES) -> Any:
    """A pytree of :class:`NamedSharding` with ``state``'s structure (an NNX state, optax state, dict...).

    ``state`` may hold arrays or ``jax.ShapeDtypeStruct`` (e.g. from ``jax.eval_shape``).
    """
    specs = partition_specs(state, mesh, rules)
    return jax.tree_util.tree_map(lambda s: NamedSharding(mesh, s), specs,
                                  is_leaf=lambda x: isinstance(x, P))


def opt_state_shardings(optimizer: Any, params: Any, mesh: Mesh, rules: Rules = DEFAULT_RULES) -> Any:
    """Shardings of ``optimizer.init(params)``, derived without allocating it (``jax.eval_shape``).

    Moment estimates mirror the parameters and get the parameters' specs from the same rules;
    counts and other scalars are replicated.
    """
    shapes = jax.eval_shape(optimizer.init, params)
    return parameter_shardings(shapes, mesh, rules)


def init_opt_state(optimizer: Any, params: Any, shardings: Any) -> Any:
    """``optimizer.init(params)`` created directly in ``shardings`` (never materialised on one device)."""
    return jax.jit(optimizer.init, out_shardings=shardings)(params)


def shard_state(state: Any, shardings: Any) -> Any:
    """``jax.device_put(state, shardings)``: place (or re-place) every leaf."""
    return jax.device_put(state, shardings)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Sharding of an (N, T) token batch: rows over ``("data", "fsdp")``, time replicated.

    N must be divisible by ``mesh.shape["data"] * mesh.shape["fsdp"]``.
    """
    return NamedSharding(mesh, P(BATCH_AXES, None))


def replicated(mesh: Mesh) -> NamedSharding:
    """A fully replicated sharding on ``mesh`` (metrics, scalars)."""
    return NamedSharding(mesh, P())


def describe(shardings: Any) -> dict[str, str]:
    """``{path: "PartitionSpec(...)"}`` for logging and tests."""
    flat = jax.tree_util.tree_flatten_with_path(shardings, is_leaf=lambda x: isinstance(x, NamedSharding))[0]
    return {path_string(kp): str(s.spec) for kp, s in flat}
