"""Tests of the feed-forward model (probsig_jax.models.ffn) against numpy references.

Covers shapes, the forward pass (independent numpy implementation, 1e-12 in float64),
gradients of the weighted cross-entropy (central finite differences in float64),
initialisation statistics, learning a tiny composite addition task with Adam, the
held-out combination behaviour of ``combine="sum"`` vs ``"concat"``, and input validation.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from probsig_jax.data import CompositeAdditionConfig, make_composite_addition
from probsig_jax.data.composite_addition import Combo
from probsig_jax.models.ffn import FeedForwardModel
from probsig_jax.training.supervised import TrainConfig, train, weighted_cross_entropy
from probsig_jax.validation import ConfigError

ACTS = ("relu", "gelu", "tanh")
COMBINES = ("sum", "concat")


# ---------------------------------------------------------------- numpy reference

def np_act(name, x):
    if name == "relu":
        return np.maximum(x, 0.0)
    if name == "tanh":
        return np.tanh(x)
    # jax.nn.gelu's default (approximate=True) is the tanh approximation of GELU.
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x ** 3)))


def np_embed(E, inputs, combine):
    """h_0 by explicit loops: sum_l E[:, x_l], or [E[:, x_0]; E[:, x_1]; ...] (position-major)."""
    d = E.shape[0]
    n, L = inputs.shape
    if combine == "sum":
        h = np.zeros((n, d))
        for i in range(n):
            for l in range(L):
                h[i] += E[:, inputs[i, l]]
        return h
    h = np.zeros((n, L * d))
    for i in range(n):
        for l in range(L):
            h[i, l * d:(l + 1) * d] = E[:, inputs[i, l]]
    return h


def np_forward(params, inputs, combine, activation):
    """Returns (h_0, [pre-activations], last hidden features, logits)."""
    h = np_embed(params["E"], inputs, combine)
    h0, pres = h, []
    for W, b in zip(params["Ws"], params["bs"]):
        pre = h @ W + b
        pres.append(pre)
        h = np_act(activation, pre)
    return h0, pres, h, h @ params["U"].T


def np_params(model):
    return {"E": np.asarray(model.embedding[...]), "U": np.asarray(model.unembedding[...]),
            "Ws": [np.asarray(W[...]) for W in model.hidden_weights],
            "bs": [np.asarray(b[...]) for b in model.hidden_biases]}


def make_model(V=9, d=4, L=3, hidden=(6, 5), activation="gelu", combine="sum", init_scale=1.0,
               dtype=jnp.float64, seed=0, bias_scale=0.0):
    """A model; with bias_scale > 0 the (zero-initialised) biases are replaced by random ones."""
    m = FeedForwardModel(V, d, seq_len=L, hidden=hidden, activation=activation, combine=combine,
                         init_scale=init_scale, dtype=dtype, rngs=nnx.Rngs(seed))
    if bias_scale:
        rng = np.random.default_rng(seed + 100)
        for b in m.hidden_biases:
            b[...] = jnp.asarray(bias_scale * rng.standard_normal(b[...].shape), dtype)
    return m


def random_inputs(n, L, V, seed=0):
    x = np.random.default_rng(seed).integers(0, V, (n, L))
    x[0] = 2                                          # repeated token: counts (sum) / positions (concat) matter
    return x


# ---------------------------------------------------------------- shapes

@pytest.mark.parametrize("combine", COMBINES)
@pytest.mark.parametrize("hidden", [(8,), (8, 6), (5, 7, 3)])
def test_shapes(combine, hidden):
    """Shapes and dtypes by abstract evaluation (no compilation; the values are tested below)."""
    V, d, L, n = 11, 4, 3, 5
    x = jax.ShapeDtypeStruct((n, L), jnp.int32)
    widths = ((d if combine == "sum" else L * d),) + hidden
    for activation in ACTS:
        for dtype in (jnp.float32, jnp.float64):
            m = nnx.eval_shape(lambda: make_model(V, d, L, hidden, activation, combine, dtype=dtype))
            assert m.vocab_size == V and m.seq_len == L and m.combine == combine and m.activation == activation
            graphdef, state = nnx.split(m)
            out = lambda method: jax.eval_shape(lambda s, x: method(nnx.merge(graphdef, s), x), state, x)
            logits = out(lambda mod, x: mod(x))
            assert logits.shape == (n, V) and logits.dtype == dtype
            assert out(lambda mod, x: mod.embed(x)).shape == ((n, d) if combine == "sum" else (n, L * d))
            assert out(lambda mod, x: mod.hidden_features(x)).shape == (n, hidden[-1])
            W = out(lambda mod, x: mod.weights())
            assert set(W) == {"E", "U"}
            assert W["E"].shape == (d, V) and W["U"].shape == (V, hidden[-1])
            assert W["E"].dtype == dtype and W["U"].dtype == dtype
            assert [w.get_value().shape for w in m.hidden_weights] == list(zip(widths[:-1], widths[1:]))
            assert [b.get_value().shape for b in m.hidden_biases] == [(h,) for h in hidden]


# ---------------------------------------------------------------- forward vs numpy

@pytest.mark.parametrize("combine", COMBINES)
@pytest.mark.parametrize("activation", ACTS)
@pytest.mark.parametrize("hidden", [(6,), (6, 5)])
def test_forward_equals_numpy_reference(combine, activation, hidden):
    V, d, L, n = 9, 4, 3, 25
    m = make_model(V, d, L, hidden, activation, combine, init_scale=1.5, bias_scale=0.5)
    p = np_params(m)
    x = random_inputs(n, L, V, seed=1)
    h0, pres, feats, logits = np_forward(p, x, combine, activation)
    # the pre-activations straddle 0 well beyond the linear range, so every activation's shape matters
    assert min(pre.min() for pre in pres) < -1.0 and max(pre.max() for pre in pres) > 1.0
    xj = jnp.asarray(x)
    np.testing.assert_allclose(np.asarray(m.embed(xj)), h0, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.asarray(m.hidden_features(xj)), feats, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.asarray(m(xj)), logits, rtol=1e-12, atol=1e-12)
    # bag of tokens vs positions: reversing the sequence leaves "sum" unchanged and changes "concat"
    rev = np.asarray(m(jnp.asarray(x[:, ::-1])))
    if combine == "sum":
        np.testing.assert_allclose(rev, logits, rtol=1e-12, atol=1e-12)
    else:
        assert np.abs(rev - logits)[1:].max() > 1e-3


def test_gelu_is_tanh_approximation():
    """The numpy reference's GELU is jax.nn.gelu's default; it differs from the exact erf form."""
    z = np.linspace(-4, 4, 81)
    np.testing.assert_allclose(np_act("gelu", z), np.asarray(jax.nn.gelu(jnp.asarray(z))), rtol=1e-14, atol=1e-15)
    exact = np.asarray(jax.nn.gelu(jnp.asarray(z), approximate=False))
    assert np.abs(np_act("gelu", z) - exact).max() > 1e-5


@pytest.mark.parametrize("combine", COMBINES)
def test_float32_forward(combine):
    V, d, L = 9, 4, 3
    m = make_model(V, d, L, (6, 5), "gelu", combine, init_scale=1.0, dtype=jnp.float32)
    x = random_inputs(20, L, V, seed=2)
    out = m(jnp.asarray(x))
    assert out.dtype == jnp.float32
    p = np_params(m)
    p64 = {"E": p["E"].astype(np.float64), "U": p["U"].astype(np.float64),
           "Ws": [W.astype(np.float64) for W in p["Ws"]], "bs": [b.astype(np.float64) for b in p["bs"]]}
    _, _, _, ref = np_forward(p64, x, combine, "gelu")
    np.testing.assert_allclose(np.asarray(out), ref, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- gradients vs finite differences

def _split_leaves(model):
    graphdef, state = nnx.split(model)
    with_path, treedef = jax.tree_util.tree_flatten_with_path(state)
    names = [jax.tree_util.keystr(path) for path, _ in with_path]
    return graphdef, treedef, names, [leaf for _, leaf in with_path]


@pytest.mark.parametrize("combine, activation", [("sum", "gelu"), ("concat", "tanh"), ("sum", "relu"),
                                                  ("concat", "relu")])
def test_gradient_matches_finite_differences(combine, activation):
    V, d, L, n = 7, 5, 3, 12
    m = make_model(V, d, L, (6, 4), activation, combine, init_scale=1.0, bias_scale=0.3, seed=3)
    x = random_inputs(n, L, V, seed=4)
    rng = np.random.default_rng(5)
    y = rng.integers(0, V, n)
    w = rng.uniform(0.2, 1.0, n)
    if activation == "relu":
        # finite differences are only valid away from the kinks: every pre-activation must stay on
        # its side of 0 under a perturbation of size eps (which moves it by << 1e-4), and both sides occur
        _, pres, _, _ = np_forward(np_params(m), x, combine, activation)
        allpre = np.concatenate([p.ravel() for p in pres])
        assert np.abs(allpre).min() > 1e-3, np.abs(allpre).min()
        assert (allpre < 0).mean() > 0.1 and (allpre > 0).mean() > 0.1

    graphdef, treedef, names, leaves = _split_leaves(m)
    assert len(leaves) == 1 + 2 * 2 + 1                      # E, (W, b) per hidden layer, U

    @jax.jit
    def loss(leaves):
        model = nnx.merge(graphdef, jax.tree_util.tree_unflatten(treedef, leaves))
        return weighted_cross_entropy(model(jnp.asarray(x)), jnp.asarray(y), jnp.asarray(w))

    grads = [np.asarray(g) for g in jax.grad(loss)(leaves)]
    eps = 1e-6
    np_leaves = [np.asarray(l) for l in leaves]
    worst_abs, worst_rel = 0.0, 0.0
    for k, (name, leaf, g) in enumerate(zip(names, np_leaves, grads)):
        assert g.shape == leaf.shape and g.dtype == np.float64
        assert np.abs(g).max() > 1e-4, f"{name}: gradient vanishes, the check would be vacuous"
        flat_idx = rng.choice(leaf.size, size=min(leaf.size, 8), replace=False)
        for j in flat_idx:
            idx = np.unravel_index(j, leaf.shape)
            plus, minus = [l.copy() for l in np_leaves], [l.copy() for l in np_leaves]
            plus[k][idx] += eps
            minus[k][idx] -= eps
            fd = (float(loss([jnp.asarray(a) for a in plus])) - float(loss([jnp.asarray(a) for a in minus]))) / (2 * eps)
            err = abs(fd - g[idx])
            worst_abs = max(worst_abs, err)
            worst_rel = max(worst_rel, err / max(abs(g[idx]), 1e-3))
            # central differences in float64: truncation ~eps^2, round-off ~1e-16 / eps ~ 1e-10
            assert err <= 1e-6 * abs(g[idx]) + 1e-8, (name, idx, g[idx], fd)
    print(f"\nFD check {combine}/{activation}: max |grad - fd| = {worst_abs:.2e}, max rel = {worst_rel:.2e}")


# ---------------------------------------------------------------- initialisation

@pytest.mark.parametrize("combine", COMBINES)
def test_init_statistics(combine):
    V, d, L, hidden, scale = 50, 64, 3, (128, 96), 0.5
    m = make_model(V, d, L, hidden, "gelu", combine, init_scale=scale)
    first_in = d if combine == "sum" else L * d
    expected = [("embedding", m.embedding[...], scale)]
    expected += [(f"W{k}", W[...], scale / np.sqrt(n_in))
                 for k, (W, n_in) in enumerate(zip(m.hidden_weights, (first_in,) + hidden[:-1]))]
    expected.append(("unembedding", m.unembedding[...], scale / np.sqrt(hidden[-1])))
    for name, W, std in expected:
        W = np.asarray(W)
        n = W.size
        # sample std of n i.i.d. normals has relative standard error 1/sqrt(2n): allow 4 of them
        assert W.std() == pytest.approx(std, rel=4 / np.sqrt(2 * n)), name
        assert abs(W.mean()) < 4 * std / np.sqrt(n), name
        # Gaussian, not e.g. uniform (0.577) or truncated: P(|w| < std) = 0.6827 +- 4 standard errors
        inside = np.mean(np.abs(W) < std)
        assert abs(inside - 0.6827) < 4 * np.sqrt(0.6827 * 0.3173 / n), (name, inside)
    for b in m.hidden_biases:
        np.testing.assert_array_equal(np.asarray(b[...]), 0.0)


def test_init_scale_is_a_multiplier():
    """Same seed, different init_scale: every weight matrix is the same draw times the scale ratio."""
    a = make_model(init_scale=1.0, seed=7)
    b = make_model(init_scale=0.01, seed=7)
    for pa, pb in zip(jax.tree_util.tree_leaves(nnx.state(a)), jax.tree_util.tree_leaves(nnx.state(b))):
        np.testing.assert_allclose(np.asarray(pb), 0.01 * np.asarray(pa), rtol=1e-12, atol=0)


def test_seeds_and_dtypes():
    leaves = lambda m: [np.asarray(l) for l in jax.tree_util.tree_leaves(nnx.state(m))]
    a, same, other = make_model(seed=0), make_model(seed=0), make_model(seed=1)
    for la, ls, lo in zip(leaves(a), leaves(same), leaves(other)):
        np.testing.assert_array_equal(la, ls)
        if np.any(la != 0):                                   # weight matrices (biases are 0 for both)
            assert not np.allclose(la, lo)
    # the matrices are independent draws, not one stream reused
    E, W0 = np.asarray(a.embedding[...]), np.asarray(a.hidden_weights[0][...])
    assert not np.allclose(E.ravel()[:W0.size] / E.std(), W0.ravel()[:E.size] / W0.std())
    for dtype in (jnp.float32, jnp.float64):
        m = make_model(dtype=dtype)
        assert all(l.dtype == dtype for l in leaves(m))
        assert m(jnp.zeros((2, 3), jnp.int32)).dtype == dtype
        assert all(v.dtype == dtype for v in m.weights().values())


# ---------------------------------------------------------------- learning

def _trained(model, dataset, steps=300, lr=1e-2):
    cfg = TrainConfig(optimizer="adam", learning_rate=lr, steps=steps, record_every=100)
    result = train(model, dataset, cfg, quiet=True)
    return nnx.merge(nnx.graphdef(model), result.final_state), result


def _accuracy(model, dataset):
    pred = np.argmax(np.asarray(model(jnp.asarray(dataset.inputs))), axis=1)
    return float(np.mean(pred == dataset.labels))


@pytest.mark.parametrize("combine, activation", [("sum", "relu"), ("concat", "tanh")])
def test_learns_tiny_composite_addition(combine, activation):
    task = make_composite_addition(CompositeAdditionConfig(
        key_min=10, key_max=19, anchor_tokens=(1, 2), anchor_shifts=(1, 2)))
    data = task.train
    assert data.num_samples == 20 and task.test is None
    m = make_model(data.vocab_size, 16, data.seq_len, (64,), activation, combine, init_scale=1.0, seed=0)
    before = [np.asarray(l) for l in jax.tree_util.tree_leaves(nnx.state(m))]
    trained, result = _trained(m, data)
    # train() leaves the model untouched; merge(graphdef, final_state) is the trained model
    for l0, l in zip(before, jax.tree_util.tree_leaves(nnx.state(m))):
        np.testing.assert_array_equal(l0, np.asarray(l))
    w = jnp.asarray(data.sample_weights())
    final = float(weighted_cross_entropy(trained(jnp.asarray(data.inputs)), jnp.asarray(data.labels), w))
    assert final == pytest.approx(result.loss[-1], rel=1e-10)
    assert result.loss[0] > 2.0 and final < 0.05                    # from ~log V to nearly 0
    assert _accuracy(m, data) < 0.5                                  # untrained: not already solved
    assert _accuracy(trained, data) == 1.0


def test_held_out_combination_sum_vs_concat():
    task = make_composite_addition(CompositeAdditionConfig(
        key_min=10, key_max=19, anchor_tokens=(1, 2), anchor_shifts=(1, 2), anchors_per_input=2, seq_len=3,
        held_out=(Combo((2, 1)),)))
    train_data, test = task.train, task.test
    # the test split is exactly the held-out combination for every key: rows (z, 2, 1) labelled z + 3
    keys = np.arange(10, 20)
    np.testing.assert_array_equal(test.inputs, np.stack([keys, np.full(10, 2), np.full(10, 1)], axis=1))
    np.testing.assert_array_equal(test.labels, keys + 3)
    assert task.test_unseen_keys is None and task.test_held_out.num_samples == 10
    assert not np.any((train_data.inputs[:, 1] == 2) & (train_data.inputs[:, 2] == 1))
    swapped = np.isin(np.arange(train_data.num_samples), np.flatnonzero(
        (train_data.inputs[:, 1] == 1) & (train_data.inputs[:, 2] == 2)))
    assert swapped.sum() == 10                                      # the trained (z, 1, 2) rows, also z + 3

    acc = {}
    for combine in COMBINES:
        m = make_model(train_data.vocab_size, 16, 3, (64,), "gelu", combine, init_scale=1.0, seed=0)
        trained, _ = _trained(m, train_data)
        assert _accuracy(trained, train_data) == 1.0
        acc[combine] = _accuracy(trained, test)
        same_bag = np.asarray(trained(jnp.asarray(test.inputs)))
        trained_rows = np.asarray(trained(jnp.asarray(train_data.inputs[swapped])))
        order = np.argsort(train_data.inputs[swapped][:, 0])
        if combine == "sum":
            # (z, 2, 1) and (z, 1, 2) are the same bag of tokens and share the label z + 3, so "sum"
            # gives them identical logits: held-out accuracy = train accuracy on (1, 2) = 100%
            np.testing.assert_allclose(same_bag, trained_rows[order], rtol=1e-10, atol=1e-10)
        else:
            assert np.abs(same_bag - trained_rows[order]).max() > 1e-3
    print(f"\nheld-out (2,1) test accuracy: sum = {acc['sum']:.2f}, concat = {acc['concat']:.2f}")
    assert acc["sum"] == 1.0
    assert 0.0 <= acc["concat"] <= 1.0                              # no generalisation guarantee for concat


# ---------------------------------------------------------------- validation

@pytest.mark.parametrize("args, kwargs, field", [
    ((1, 4), {}, "vocab_size"),
    ((-2, 4), {}, "vocab_size"),
    ((5, 0), {}, "dim"),
    ((5, 4), dict(seq_len=0), "seq_len"),
    ((5, 4), dict(hidden=()), "hidden"),
    ((5, 4), dict(hidden=(8, 0)), "hidden"),
    ((5, 4), dict(hidden=(8.5,)), "hidden"),
    ((5, 4), dict(hidden=8), "hidden"),
    ((5, 4), dict(activation="swish"), "activation"),
    ((5, 4), dict(combine="mean"), "combine"),
    ((5, 4), dict(init_scale=0.0), "init_scale"),
    ((5, 4), dict(init_scale=-1.0), "init_scale"),
    ((5, 4), dict(init_scale=float("nan")), "init_scale"),
    ((5, 4), dict(dtype=jnp.int32), "dtype"),
    ((5, 4), dict(dtype="not-a-dtype"), "dtype"),
])
def test_constructor_validation(args, kwargs, field):
    kwargs = dict(dict(seq_len=2), **kwargs)
    with pytest.raises(ConfigError) as e:
        FeedForwardModel(*args, rngs=nnx.Rngs(0), **kwargs)
    assert e.value.field == field
    assert str(e.value).startswith(field)
