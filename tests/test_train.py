"""Tests of probsig_jax.train: recording, exactness of gradient descent, optimisers, determinism, validation.

Gradient descent is checked against a hand-written numpy loop (the gradient
-U^T G, -G E^T of the weighted softmax cross-entropy, no optax, no autodiff)
to 1e-10 relative in float64 (tests/conftest.py enables x64).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from probsig_jax.data import CompositeAdditionConfig, Dataset, make_composite_addition
from probsig_jax.models.linear import LinearEmbeddingModel
from probsig_jax.training.supervised import TrainConfig, data_loss, train
from probsig_jax.validation import ConfigError


def rel(x, ref) -> float:
    x, ref = np.asarray(x, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    return float(np.linalg.norm(x - ref) / np.linalg.norm(ref))


def np_features(inputs, vocab, positional):
    n, L = inputs.shape
    C = np.zeros((n, vocab * L if positional else vocab))
    for i in range(n):
        for l in range(L):
            C[i, (l * vocab if positional else 0) + inputs[i, l]] += 1.0
    return C


def np_gd(E, U, ds: Dataset, lr: float, steps: int, positional: bool):
    """Plain numpy full-batch gradient descent on sum_i w_i CE_i / sum_i w_i; returns every iterate."""
    C = np_features(ds.inputs, ds.vocab_size, positional)
    w = ds.sample_weights()
    Y = np.eye(ds.vocab_size)[ds.labels]
    Es, Us = [E.copy()], [U.copy()]
    for _ in range(steps):
        z = C @ E.T @ U.T
        p = np.exp(z - z.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        G = ((Y - p) * w[:, None]).T @ C
        E, U = E + lr * U.T @ G, U + lr * G @ E.T     # simultaneous update: grad_E = -U^T G, grad_U = -G E^T
        Es.append(E.copy())
        Us.append(U.copy())
    return np.stack(Es), np.stack(Us)


def random_dataset(seed=0, n=24, seq_len=3, vocab=6, weighted=True) -> Dataset:
    rng = np.random.default_rng(seed)
    return Dataset(rng.integers(0, vocab, (n, seq_len)), rng.integers(0, vocab, n), vocab,
                   rng.uniform(0.2, 2.0, n) if weighted else None)


@pytest.fixture(scope="module")
def small_task() -> Dataset:
    """A small learnable composite addition task: keys 5..12, anchors 1, 2 adding 1, 2 (V = 15, 16 rows)."""
    cfg = CompositeAdditionConfig(key_min=5, key_max=12, anchor_tokens=(1, 2), anchor_shifts=(1, 2))
    return make_composite_addition(cfg).train


def _model(ds: Dataset, dim=4, scale=0.3, seed=0, dtype=jnp.float64, positional=False):
    return LinearEmbeddingModel(ds.vocab_size, dim, seq_len=ds.seq_len, positional=positional, init_scale=scale,
                                dtype=dtype, rngs=nnx.Rngs(seed))


# ----------------------------------------------------------------------------- recording

@pytest.mark.parametrize("steps, every, expected", [
    (100, 25, [0, 25, 50, 75, 100]),
    (47, 10, [0, 10, 20, 30, 40, 47]),      # a final partial chunk is recorded at `steps`
    (5, 5, [0, 5]),
])
def test_recorded_steps_times_and_shapes(steps, every, expected):
    ds = random_dataset(1)
    model = _model(ds, dim=3)
    lr = 0.2
    run = train(model, ds, TrainConfig(optimizer="gd", learning_rate=lr, steps=steps, record_every=every), quiet=True)
    np.testing.assert_array_equal(run.steps, expected)
    np.testing.assert_allclose(run.times, np.asarray(expected) * lr, rtol=1e-15)
    T = len(expected)
    assert run.loss.shape == (T,)
    assert run.weights["E"].shape == (T, 3, ds.vocab_size) and run.weights["U"].shape == (T, ds.vocab_size, 3)
    # the recorded loss is the full-data loss of the recorded weights
    for k in (0, T - 1):
        m = LinearEmbeddingModel.from_weights(jnp.asarray(run.weights["E"][k]), jnp.asarray(run.weights["U"][k]))
        assert abs(data_loss(m, ds) - run.loss[k]) < 1e-12
    # the partial chunk really ran all the steps: compare with the numpy loop
    E_np, U_np = np_gd(np.asarray(model.weights()["E"]), np.asarray(model.weights()["U"]), ds, lr, steps, False)
    assert rel(run.weights["E"][-1], E_np[-1]) < 1e-10


def test_custom_record_and_model_not_modified():
    ds = random_dataset(2)
    model = _model(ds)
    E0 = np.asarray(model.weights()["E"]).copy()
    run = train(model, ds, TrainConfig(steps=20, record_every=10, learning_rate=0.5), quiet=True,
                record=lambda m: {"norm_E": jnp.linalg.norm(m.embedding[...])})
    assert set(run.weights) == {"norm_E"} and run.weights["norm_E"].shape == (3,)
    np.testing.assert_array_equal(np.asarray(model.weights()["E"]), E0)      # the input model is untouched
    assert run.weights["norm_E"][0] == pytest.approx(np.linalg.norm(E0), rel=1e-14)
    trained = nnx.merge(nnx.graphdef(model), run.final_state)
    assert float(jnp.linalg.norm(trained.embedding[...])) == pytest.approx(run.weights["norm_E"][-1], rel=1e-14)


# ----------------------------------------------------------------------------- exactness of gradient descent

@pytest.mark.parametrize("positional", [False, True])
def test_gd_matches_manual_numpy_gradient_descent(positional):
    """optax sgd on autodiff gradients == numpy loop on the closed-form gradient, every step; 1e-10 relative."""
    ds = random_dataset(3)
    model = _model(ds, dim=4, scale=0.5, positional=positional)
    lr, steps = 0.3, 8
    run = train(model, ds, TrainConfig(optimizer="gd", learning_rate=lr, steps=steps, record_every=1), quiet=True)
    E_np, U_np = np_gd(np.asarray(model.weights()["E"]), np.asarray(model.weights()["U"]), ds, lr, steps, positional)
    for k in range(steps + 1):
        assert rel(run.weights["E"][k], E_np[k]) < 1e-10
        assert rel(run.weights["U"][k], U_np[k]) < 1e-10
    assert rel(run.weights["E"][-1], run.weights["E"][0]) > 1e-2     # the weights actually moved


def test_sample_weights_equal_duplicated_rows():
    """Full-batch GD on a row with weight 2 equals GD on that row duplicated (weights are probabilities)."""
    base = random_dataset(4, n=10, weighted=False)
    w = np.ones(10)
    w[:3] = 2.0
    weighted = Dataset(base.inputs, base.labels, base.vocab_size, w)
    dup = Dataset(np.concatenate([base.inputs, base.inputs[:3]]), np.concatenate([base.labels, base.labels[:3]]),
                  base.vocab_size)
    cfg = TrainConfig(optimizer="gd", learning_rate=0.4, steps=30, record_every=10)
    a = train(_model(base), weighted, cfg, quiet=True)
    b = train(_model(base), dup, cfg, quiet=True)
    np.testing.assert_allclose(a.loss, b.loss, rtol=1e-12)
    assert rel(a.weights["E"][-1], b.weights["E"][-1]) < 1e-12


# ----------------------------------------------------------------------------- dtypes and optimisers

def test_float32_run_tracks_float64_run(small_task):
    ds = small_task
    m64 = _model(ds, dim=8, scale=0.1)
    W = m64.weights()
    m32 = LinearEmbeddingModel.from_weights(W["E"].astype(jnp.float32), W["U"].astype(jnp.float32))
    cfg = TrainConfig(optimizer="gd", learning_rate=0.5, steps=300, record_every=100)
    r64, r32 = train(m64, ds, cfg, quiet=True), train(m32, ds, cfg, quiet=True)
    assert r32.weights["E"].dtype == np.float32 and r64.weights["E"].dtype == np.float64
    assert r64.loss[-1] < 0.5 * r64.loss[0]
    # float32 roundoff (~1e-7 per op) accumulated over 300 steps: 1e-4 relative is generous but discriminating
    assert rel(r32.weights["E"][-1], r64.weights["E"][-1]) < 1e-4
    np.testing.assert_allclose(r32.loss, r64.loss, rtol=1e-5)


@pytest.mark.parametrize("optimizer, lr, batch_size", [("adam", 0.05, 0), ("adam", 0.05, 8), ("sgd", 0.5, 8)])
def test_optimizers_reduce_loss(small_task, optimizer, lr, batch_size):
    ds = small_task
    run = train(_model(ds, dim=8, scale=0.1), ds,
                TrainConfig(optimizer=optimizer, learning_rate=lr, steps=300, batch_size=batch_size, record_every=100),
                quiet=True)
    assert np.all(np.isfinite(run.loss))
    assert run.loss[-1] < 0.6 * run.loss[0], run.loss


def test_seeds_determine_the_run(small_task):
    ds = small_task
    cfg = TrainConfig(optimizer="sgd", learning_rate=0.5, steps=40, batch_size=4, record_every=20, seed=3)
    a = train(_model(ds, seed=1), ds, cfg, quiet=True)
    b = train(_model(ds, seed=1), ds, cfg, quiet=True)
    np.testing.assert_array_equal(a.weights["E"], b.weights["E"])
    np.testing.assert_array_equal(a.loss, b.loss)
    c = train(_model(ds, seed=1), ds, TrainConfig(**{**cfg.__dict__, "seed": 4}), quiet=True)   # other batches
    assert rel(c.weights["E"][-1], a.weights["E"][-1]) > 1e-3
    np.testing.assert_array_equal(c.weights["E"][0], a.weights["E"][0])
    other_init = np.asarray(_model(ds, seed=2).weights()["E"])                               # other init
    assert rel(other_init, a.weights["E"][0]) > 0.1


# ----------------------------------------------------------------------------- validation

@pytest.mark.parametrize("kwargs, field", [
    (dict(learning_rate=0.0), "learning_rate"),
    (dict(learning_rate=-0.1), "learning_rate"),
    (dict(learning_rate=float("nan")), "learning_rate"),
    (dict(learning_rate="fast"), "learning_rate"),
    (dict(steps=-1), "steps"),
    (dict(steps=0), "steps"),
    (dict(steps=2.5), "steps"),
    (dict(optimizer="sgd", batch_size=-1), "batch_size"),
    (dict(optimizer="sgd", batch_size=1.5), "batch_size"),
    (dict(optimizer="gd", batch_size=4), "batch_size"),
    (dict(optimizer="rmsprop"), "optimizer"),
    (dict(record_every=0), "record_every"),
    (dict(steps=10, record_every=11), "record_every"),
    (dict(seed=-1), "seed"),
    (dict(weight_decay=-1e-4), "weight_decay"),
    (dict(schedule="linear"), "schedule"),
    (dict(warmup_steps=3), "warmup_steps"),                                   # only with warmup_cosine
    (dict(schedule="warmup_cosine", warmup_steps=10), "warmup_steps"),        # must be < steps
    (dict(final_learning_rate=1.0), "final_learning_rate"),                   # above learning_rate
    (dict(schedule_steps=20), "schedule_steps"),                              # only with warmup_cosine
    (dict(schedule="warmup_cosine", schedule_steps=9), "schedule_steps"),     # shorter than steps
    (dict(schedule="warmup_cosine", schedule_steps=40, warmup_steps=40), "warmup_steps"),  # < the horizon
])
def test_train_config_validation(kwargs, field):
    cfg = TrainConfig(**{"steps": 10, "record_every": 5, **kwargs})
    with pytest.raises(ConfigError) as e:
        cfg.validate()
    assert e.value.field == field
    assert str(e.value).startswith(f"{field}:")
    ds = random_dataset(5)
    with pytest.raises(ConfigError) as e:       # train validates before touching JAX
        train(_model(ds), ds, cfg, quiet=True)
    assert e.value.field == field


def test_train_rejects_dataset_larger_than_model_vocab():
    ds = random_dataset(6, vocab=6)
    small = LinearEmbeddingModel(4, 3, rngs=nnx.Rngs(0))
    with pytest.raises(ConfigError) as e:
        train(small, ds, TrainConfig(steps=2, record_every=1), quiet=True)
    assert e.value.field == "vocab_size"


def test_coupled_weight_decay_is_the_gradient_of_the_l2_penalty():
    """GD with weight_decay lambda takes the step of loss + (lambda / 2) |theta|^2 (checked against jax.grad of that
    objective); the warmup-cosine schedule starts at 0, so its first step changes nothing."""
    import jax

    ds = random_dataset(6)
    model = _model(ds)
    lam, lr = 0.3, 0.1
    run = train(model, ds, TrainConfig(optimizer="gd", learning_rate=lr, steps=1, record_every=1, weight_decay=lam),
                quiet=True)
    E0, U0 = model.embedding[...], model.unembedding[...]

    def objective(E, U):
        logits = (U @ E[:, ds.inputs].sum(axis=2)).T
        logp = jax.nn.log_softmax(logits, axis=1)
        w = jnp.asarray(ds.sample_weights(), logits.dtype)
        return -jnp.sum(w * logp[jnp.arange(ds.num_samples), ds.labels]) + lam / 2 * (jnp.sum(E**2) + jnp.sum(U**2))

    gE, gU = jax.grad(objective, argnums=(0, 1))(E0, U0)
    np.testing.assert_allclose(run.weights["E"][-1], E0 - lr * gE, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(run.weights["U"][-1], U0 - lr * gU, rtol=1e-5, atol=1e-7)
    warm = train(model, ds, TrainConfig(optimizer="adam", learning_rate=lr, steps=4, record_every=1,
                                        schedule="warmup_cosine", warmup_steps=2), quiet=True)
    np.testing.assert_array_equal(warm.weights["E"][1], warm.weights["E"][0])
    assert not np.allclose(warm.weights["E"][2], warm.weights["E"][1])


def test_schedule_steps_trains_the_first_steps_of_a_longer_schedule():
    """With ``schedule_steps`` the rates are those of the longer schedule (optax's, at the same step), so the
    early steps of a long run can be trained alone."""
    import optax

    from probsig_jax.training.supervised import make_schedule

    cfg = TrainConfig(optimizer="adam", learning_rate=1e-2, steps=10, record_every=5, schedule="warmup_cosine",
                      warmup_steps=4, final_learning_rate=1e-5, schedule_steps=1000).validate()
    long = optax.warmup_cosine_decay_schedule(0.0, 1e-2, 4, 1000, 1e-5)
    short = optax.warmup_cosine_decay_schedule(0.0, 1e-2, 4, 10, 1e-5)
    rate = make_schedule(cfg)
    steps = np.arange(10)
    np.testing.assert_allclose([rate(k) for k in steps], [long(k) for k in steps], rtol=1e-6)
    assert not np.allclose([rate(k) for k in steps[5:]], [short(k) for k in steps[5:]])
    assert cfg.horizon == 1000 and cfg.replace(schedule_steps=0).horizon == 10
