"""E6, modular addition: the weight-decay regimes (MODADD section 5 item 3).

The two-input MLP (GELU, init std ``D^(-gamma)``) is trained full batch with Adam, linear warmup and cosine decay
and coupled L2 weight decay ``lambda`` on the ``train_fraction`` split with ``noise_ratio`` uniform label noise,
once per ``lambda`` from the same initialisation. Accuracy is recorded along training on each subset:

- ``clean``: clean training pairs; ``noisy``: noisy training pairs scored against their *corrupted* labels
  (memorisation); ``noisy_true``: the same pairs against their clean labels; ``test``: held-out pairs.

and so is each hidden unit's **norm budget** (MODADD section 4: neuron norm drive vs decay). With
``theta_d = (U_d, V_d, W^d)`` and the training loss split as ``L = L_clean + L_noisy`` (each the subset's summed
cross-entropy over the training-set size), ``d |theta_d|^2 / dt = 2 drive_clean + 2 drive_noisy - 2 lambda
|theta_d|^2`` under gradient flow, with ``drive_S = -<theta_d, grad_theta_d L_S>``. The record keeps both drives and
the decay ``lambda |theta_d|^2`` of every unit: forgetting the noisy labels is the noisy drive turning negative
(or falling below the decay) while the clean drive holds the unit up.

The paper (P = 113, D = 2000, alpha 0.1, gamma 0.5): lambda 0 fits clean and noisy training pairs, test ~0;
1e-4 fits everything including test; 5e-4 generalises and forgets the noisy labels (accuracy against the corrupted
labels falls towards 1/P); 1e-3 does not converge. The defaults are smaller (P = 59, D = 512, 3000 steps) to
finish on a 2-core CPU; ``--modulus 113 --width 2000`` is the paper's setting.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from probsig_jax.analysis import plots
from probsig_jax.config_base import Config
from probsig_jax.data.modular import ModularTaskConfig, make_modular_task
from probsig_jax.experiments import Experiment
from probsig_jax.models.two_input_mlp import TwoInputMLP, init_std_for_gamma, two_input_logits
from probsig_jax.numerics import numerics
from probsig_jax.progress import progress_bar
from probsig_jax.training.supervised import TrainConfig, train
from probsig_jax.validation import require, require_float, require_int, require_seed

SUBSETS = ("clean", "noisy", "noisy_true", "test")


@dataclass(frozen=True)
class ModularRegimesConfig(Config):
    """E6 weight-decay regimes (defaults: P = 59, D = 512, alpha 0.1, Adam 1e-3, 3000 steps)."""

    task: ModularTaskConfig = field(default_factory=lambda: ModularTaskConfig(modulus=59, noise_ratio=0.1))
    width: int = 512
    activation: Literal["gelu", "square", "tanh", "identity", "relu"] = "gelu"
    gamma: float = 0.5
    weight_decays: tuple[float, ...] = (0.0, 1e-4, 5e-4, 1e-3)
    """The lambda grid (coupled L2, as torch.optim.Adam's weight_decay)."""
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        optimizer="adam", learning_rate=1e-3, steps=3000, record_every=50, schedule="warmup_cosine",
        warmup_steps=100, final_learning_rate=1e-5))
    """Full-batch training (MODADD section 2); its ``weight_decay`` is replaced by each value of the grid."""
    dtype: Literal["float32", "float64"] = "float32"
    seed: int = 0
    """Seed of the initialisation (shared by every lambda)."""

    option_skip = ("task.mul_moduli", "task.full_table", "train.weight_decay", "train.batch_size", "train.seed")

    def _check(self) -> None:
        require(not self.task.full_table and self.task.train_fraction < 1.0, "train_fraction",
                "needs a held-out test split (train_fraction < 1, no full_table)")
        require_int(self.width, "width", minimum=1, maximum=20_000)
        require_float(self.gamma, "gamma", minimum=0.0, maximum=4.0)
        require(len(self.weight_decays) >= 1, "weight_decays", "give at least one value")
        for lam in self.weight_decays:
            require_float(lam, "weight_decays", minimum=0.0, maximum=1.0)
        require(self.train.batch_size == 0, "batch_size", "MODADD trains full batch: use 0")
        require(self.dtype in ("float32", "float64"), "dtype", f"must be float32 or float64, got {self.dtype!r}")
        require_seed(self.seed)


@dataclass
class ModularRegimesResult:
    config: ModularRegimesConfig
    steps: np.ndarray                              # (T,)
    accuracy: dict[str, dict[str, np.ndarray]]     # "lambda=..." -> subset -> (T,)
    metrics: dict[str, Any]
    budget: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # "lambda=..." -> drive_/decay -> (T, D)


def _subset_arrays(task) -> dict[str, tuple[jnp.ndarray, jnp.ndarray]]:
    inputs = np.stack([task.a, task.b], axis=1)
    rows = {"clean": (task.clean_train, task.labels), "noisy": (task.noisy, task.labels),
            "noisy_true": (task.noisy, task.clean_labels), "test": (task.test, task.clean_labels)}
    return {name: (jnp.asarray(inputs[mask]), jnp.asarray(labels[mask])) for name, (mask, labels) in rows.items()
            if mask.any()}


def unit_norm_budget(params, activation: str, split: dict[str, tuple[jax.Array, jax.Array]], n_train: int
                     ) -> dict[str, jax.Array]:
    """Per hidden unit (D,): ``drive_<S> = -<theta_d, grad_theta_d L_S>`` for each training subset ``S`` (``L_S``
    the subset's summed cross-entropy / ``n_train``) and ``norm_sq = |theta_d|^2`` (jit-able)."""
    def unit_inner(a, b):
        return jnp.sum(a["U"] * b["U"], 1) + jnp.sum(a["V"] * b["V"], 1) + jnp.sum(a["W"] * b["W"], 0)

    out = {"norm_sq": unit_inner(params, params)}
    for name, (x, y) in split.items():
        def loss(p, x=x, y=y):
            logits = two_input_logits(p, x[:, 0], x[:, 1], activation)
            return jnp.sum(optax.softmax_cross_entropy_with_integer_labels(logits, y)) / n_train
        out[f"drive_{name}"] = -unit_inner(params, jax.grad(loss)(params))
    return out


def run_modadd_regimes(config: ModularRegimesConfig, *, quiet: bool = False) -> ModularRegimesResult:
    config = config.validate()
    task = make_modular_task(config.task)
    ds = task.dataset("train")
    subsets = _subset_arrays(task)
    split = {k: subsets[k] for k in ("clean", "noisy") if k in subsets}

    def record(model):
        out = {name: jnp.mean(jnp.argmax(model(x), axis=1) == y) for name, (x, y) in subsets.items()}
        budget = unit_norm_budget(model.params(), config.activation, split, ds.num_samples)
        return out | {f"budget_{k}": v for k, v in budget.items()}

    accuracy, budget, steps = {}, {}, None
    with numerics(config.dtype) as dtype:
        with progress_bar(total=len(config.weight_decays), desc="weight decays", quiet=quiet, unit="run") as bar:
            for lam in config.weight_decays:
                model = TwoInputMLP(task.num_inputs, task.num_classes, config.width, activation=config.activation,
                                    init_std=init_std_for_gamma(config.width, config.gamma), dtype=dtype,
                                    rngs=nnx.Rngs(config.seed))
                run = train(model, ds, config.train.replace(weight_decay=lam), record=record, quiet=True, description=f"lambda {lam:g}")
                key = f"lambda={lam:g}"
                accuracy[key] = {k: np.asarray(v) for k, v in run.weights.items() if not k.startswith("budget_")}
                budget[key] = {k[len("budget_"):]: np.asarray(v, np.float64) for k, v in run.weights.items()
                               if k.startswith("budget_")}
                budget[key]["decay"] = lam * budget[key]["norm_sq"]
                steps = run.steps
                bar.update(1)
    final = {key: {k: float(v[-1]) for k, v in acc.items()} for key, acc in accuracy.items()}
    metrics = {"experiment": "modadd-regimes", "modulus": task.num_inputs, "width": config.width,
               "chance": 1.0 / task.num_classes, "final_accuracy": final,
               "subset_sizes": {k: int(len(y)) for k, (_, y) in subsets.items()},
               "norm_budget": {key: _budget_summary(b) for key, b in budget.items()}}
    return ModularRegimesResult(config, np.asarray(steps), accuracy, metrics, budget)


def _budget_summary(b: dict[str, np.ndarray]) -> dict[str, Any]:
    """Sums over units at the end of training, and the share of units whose noisy drive is negative there."""
    out = {f"final_total_{k}": float(v[-1].sum()) for k, v in b.items() if k != "norm_sq"}
    if "drive_noisy" in b:
        out["final_share_of_units_with_negative_noisy_drive"] = float(np.mean(b["drive_noisy"][-1] < 0))
        out["final_share_of_units_with_noisy_drive_above_decay"] = float(np.mean(b["drive_noisy"][-1] > b["decay"][-1]))
    return out


def plot_accuracy_grid(result: ModularRegimesResult):
    """One panel per lambda: accuracy on each subset over training."""
    import matplotlib.pyplot as plt

    keys = list(result.accuracy)
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.8), squeeze=False)
    for ax, key in zip(axes[0], keys):
        plots.plot_curves({name: (result.steps, acc) for name, acc in result.accuracy[key].items()}, ax=ax,
                          xlabel="Adam step", ylabel="accuracy", logy=False, ylim=(-0.02, 1.02), title=key,
                          hlines={"chance 1/P": result.metrics["chance"]})
    fig.tight_layout()
    return fig


def plot_norm_budget(result: ModularRegimesResult):
    """One panel per lambda: the units' summed clean drive, noisy drive and decay over training."""
    import matplotlib.pyplot as plt

    keys = list(result.budget)
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.8), squeeze=False)
    for ax, key in zip(axes[0], keys):
        b = result.budget[key]
        curves = {name.replace("_", " "): (result.steps, v.sum(axis=1)) for name, v in b.items() if name != "norm_sq"}
        plots.plot_curves(curves, ax=ax, xlabel="Adam step", ylabel="sum over units", logy=False, title=key,
                          hlines={"0": 0.0})
    fig.tight_layout()
    return fig


def write_outputs(result: ModularRegimesResult, out_dir: Path) -> list[Path]:
    figs = [plots.save(plot_accuracy_grid(result), out_dir / "accuracy_by_weight_decay.png"),
            plots.save(plot_norm_budget(result), out_dir / "norm_drive_vs_decay.png")]
    np.savez_compressed(out_dir / "arrays.npz", steps=result.steps,
                        **{f"acc_{k}_{s}": v for k, acc in result.accuracy.items() for s, v in acc.items()},
                        **{f"budget_{k}_{s}": v for k, b in result.budget.items() for s, v in b.items()})
    return figs


def summary_lines(m: dict[str, Any]) -> list[str]:
    lines = [f"{key}: " + ", ".join(f"{s} {100 * v:.1f} %" for s, v in acc.items()) + " (final accuracy)"
             for key, acc in m["final_accuracy"].items()] + [f"chance 1/P = {100 * m['chance']:.1f} %"]
    for key, b in m.get("norm_budget", {}).items():
        if "final_total_drive_noisy" in b:
            lines.append(f"{key} at the end: summed drive clean {b['final_total_drive_clean']:.3g}, noisy "
                         f"{b['final_total_drive_noisy']:.3g}, decay {b['final_total_decay']:.3g}; "
                         f"{100 * b['final_share_of_units_with_negative_noisy_drive']:.0f} % of units with a negative "
                         "noisy drive")
    return lines


def notes(m: dict[str, Any]) -> list[str]:
    return ["'noisy' scores the noisy training pairs against their corrupted labels (memorisation), 'noisy_true' the "
            "same pairs against their clean labels; about 1/P of the corrupted labels equal the clean ones by chance.",
            "Weight decay is coupled L2 added to the loss (torch.optim.Adam(weight_decay=...)), not AdamW's decoupled "
            "decay; MODADD notes AdamW needs about 1000x larger values."]


EXPERIMENT = Experiment(
    name="modadd-regimes", title="E6: weight-decay regimes of modular addition with label noise",
    config_class=ModularRegimesConfig, run=lambda config, ctx: run_modadd_regimes(config, quiet=ctx.quiet),
    write_outputs=write_outputs, summary=summary_lines, notes=notes)
