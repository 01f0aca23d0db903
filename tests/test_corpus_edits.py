"""Corpus edits change exactly the counts they should (and no others), move phi_next as expected, and are
deterministic by seed."""

from __future__ import annotations

import numpy as np
import pytest

from probsig_jax.corpus.edits import CorpusEdit, apply_corpus_edit
from probsig_jax.validation import ConfigError

V = 60


def stream(n=60_000, seed=0):
    """A Markov chain with token-specific successor distributions (so phi_next differ between tokens)."""
    rng = np.random.default_rng(seed)
    P = rng.dirichlet(np.full(V, 0.3), size=V)
    out = np.empty(n, np.int64)
    out[0] = 0
    u = rng.random(n)
    cum = np.cumsum(P, axis=1)
    for i in range(1, n):
        out[i] = min(int(np.searchsorted(cum[out[i - 1]], u[i])), V - 1)
    return out.astype(np.uint32)


def counts(s):
    N = np.zeros((V, V))
    np.add.at(N, (s[:-1].astype(np.int64), s[1:].astype(np.int64)), 1)
    return N


@pytest.fixture(scope="module")
def base():
    return stream()


def _phi(N, t):
    return N[t] / N[t].sum()


@pytest.mark.parametrize("f", [0.3, 1.0])
def test_transplant_moves_phi_next_of_a_toward_b_and_touches_only_what_it_must(base, f):
    A, B = 3, 7
    res = apply_corpus_edit(base, CorpusEdit("transplant", (A, B), fraction=f, seed=1))
    N0, N1 = counts(base), counts(res.tokens)
    edited = res.details["per_token"][A]
    share = edited["edited"] / N0[A].sum()
    expected = (1 - share) * _phi(N0, A) + share * _phi(N0, B)
    tv = 0.5 * np.abs(_phi(N1, A) - expected).sum()
    assert tv < 3 * np.sqrt(V / N0[A].sum()), tv                 # multinomial noise of the draws
    assert 0.5 * np.abs(_phi(N1, A) - _phi(N0, B)).sum() < 0.5 * np.abs(_phi(N0, A) - _phi(N0, B)).sum()
    # only A's row and the rows of the replaced / new successors (as contexts of the next position) change
    touched = {A} | set(base[res.positions].tolist()) | set(res.tokens[res.positions].tolist())
    untouched = [t for t in range(V) if t not in touched]
    np.testing.assert_array_equal(N1[untouched], N0[untouched])
    assert np.array_equal(res.tokens != base, np.isin(np.arange(base.size), res.positions) & (res.tokens != base))
    assert res.tokens.dtype == base.dtype and res.affected.tolist() == [A]
    assert round(f * edited["occurrences"]) == edited["edited"] == res.positions.size


def test_planted_cluster_shares_one_successor_distribution(base):
    cluster = (5, 11, 19, 23)
    res = apply_corpus_edit(base, CorpusEdit("cluster", cluster, fraction=1.0, targets=6, seed=2))
    targets = res.details["cluster_targets"]
    assert len(targets) == 6 and not set(targets) & set(cluster)
    N1 = counts(res.tokens)
    for t in cluster:
        per = res.details["per_token"][t]
        on_targets = N1[t, targets].sum() / N1[t].sum()
        # every edited successor is a target; only the skipped positions (successor an edited context, or the end)
        # keep their old successor, and those may also hit a target by chance
        assert on_targets >= per["edited"] / N1[t].sum() - 1e-12
        assert on_targets > 0.8
    cos = lambda a, b: a @ b / np.linalg.norm(a) / np.linalg.norm(b)  # noqa: E731
    before, after = counts(base), N1
    assert min(cos(after[a], after[b]) for a in cluster for b in cluster if a < b) > 0.9 > \
        max(cos(before[a], before[b]) for a in cluster for b in cluster if a < b)


def test_cluster_targets_come_from_the_given_frequency_ranks(base):
    cluster = (5, 11, 19, 23)
    ids, counts = np.unique(base, return_counts=True)
    keep = ~np.isin(ids, cluster)
    ranked = ids[keep][np.lexsort((ids[keep], -counts[keep]))]
    res = apply_corpus_edit(base, CorpusEdit("cluster", cluster, targets=5, target_ranks=(3, 12), seed=1))
    assert set(res.details["cluster_targets"]) <= set(ranked[3:12].tolist())
    assert res.record()["edit"]["target_ranks"] == [3, 12]
    with pytest.raises(ConfigError, match="targets"):
        apply_corpus_edit(base, CorpusEdit("cluster", cluster, targets=5, target_ranks=(3, 6)))


def test_swap_exchanges_identities_in_the_last_part_only(base):
    A, B = 2, 9
    res = apply_corpus_edit(base, CorpusEdit("swap", (A, B), fraction=0.5))
    start = res.details["swap_start"]
    np.testing.assert_array_equal(res.tokens[:start], base[:start])
    tail, orig = res.tokens[start:], base[start:]
    np.testing.assert_array_equal(tail[orig == A], B)
    np.testing.assert_array_equal(tail[orig == B], A)
    other = (orig != A) & (orig != B)
    np.testing.assert_array_equal(tail[other], orig[other])


def test_edits_are_deterministic_by_seed_and_fraction_zero_is_identity(base):
    e = CorpusEdit("transplant", (3, 7), fraction=0.5, seed=4)
    np.testing.assert_array_equal(apply_corpus_edit(base, e).tokens, apply_corpus_edit(base, e).tokens)
    assert not np.array_equal(apply_corpus_edit(base, e).tokens, apply_corpus_edit(base, e.replace(seed=5)).tokens)
    np.testing.assert_array_equal(apply_corpus_edit(base, e.replace(fraction=0.0)).tokens, base)
    record = apply_corpus_edit(base, e).record()
    assert record["description"].startswith("transplant") and record["affected_tokens"] == [3]


@pytest.mark.parametrize("edit, field", [
    (CorpusEdit("transplant", (3,)), "tokens"), (CorpusEdit("swap", (3, 3)), "tokens"),
    (CorpusEdit("cluster", (4,)), "tokens"), (CorpusEdit("cluster", (4, 5), target_ranks=(3,)), "target_ranks"), (CorpusEdit("transplant", (3, 7), fraction=1.5), "fraction"),
    (CorpusEdit("rename", (3, 7)), "kind"), (CorpusEdit("transplant", (3, 999)), "tokens"),
])
def test_bad_edits_name_the_field(base, edit, field):
    with pytest.raises(ConfigError) as err:
        apply_corpus_edit(base, edit)
    assert err.value.field == field


def test_the_predicted_similarity_change_of_a_planted_cluster_is_on_its_pairs():
    """Before any training: the theory's predicted Delta S_E (edited counts minus baseline counts, each at growth
    3 of its leading mode) is large and positive on the cluster's own pairs and much smaller on the pairs the edit
    does not touch (the null). A sign error or a swapped baseline would flip or erase it."""
    from probsig_jax.signatures.corpus import count_context_pairs
    from probsig_jax.theory.corpus import predicted_similarity_change

    base_stream = stream()
    cluster = (5, 11, 19, 23)
    edited = apply_corpus_edit(base_stream, CorpusEdit("cluster", cluster, fraction=1.0, targets=6, seed=2))
    pcs = [count_context_pairs(s, V) for s in (base_stream, edited.tokens)]
    tokens = np.arange(V)
    delta = predicted_similarity_change(*pcs, tokens, rank=20, growth=3.0)
    assert delta.shape == (V, V) and np.allclose(np.diag(delta), 0.0)
    inside = np.asarray([delta[a, b] for a in cluster for b in cluster if a < b])
    touched = set(cluster) | set(edited.details["cluster_targets"]) | set(base_stream[edited.positions].tolist())
    rest = [t for t in range(V) if t not in touched]
    untouched = np.abs(delta[np.ix_(rest, rest)][np.triu_indices(len(rest), 1)])
    # Measured: 0.67 to 1.13 on the 6 cluster pairs; mean |change| 0.058 on untouched pairs (the truncated modes
    # and the growth time shift a little for every token when a new strong mode appears).
    assert inside.min() > 0.3, inside
    assert inside.min() > 5 * untouched.mean(), (inside, untouched.mean())
    from probsig_jax.validation import ConfigError
    with pytest.raises(ConfigError, match="^pc_edited: "):
        predicted_similarity_change(pcs[0], count_context_pairs(base_stream, V + 1), tokens, rank=5, growth=3.0)


@pytest.mark.parametrize("window,V", [(1, 60), (3, 60), (2, 50_000)])   # V = 50000: int64 pair codes
def test_incremental_count_update_equals_a_recount(window, V):
    from probsig_jax.signatures.corpus import count_context_pairs, update_context_pairs

    rng = np.random.default_rng(window)
    old = rng.integers(0, V, 5000)
    new = old.copy()
    positions = np.concatenate([[0, 1, old.size - 1], rng.choice(old.size, 300, replace=False)])
    new[positions] = rng.integers(0, V, positions.size)
    pc = count_context_pairs(old, V, window)
    updated = update_context_pairs(pc, old, new, np.concatenate([positions, [17]]))   # 17: unchanged, cancels
    fresh = count_context_pairs(new, V, window)
    assert (updated.counts != fresh.counts).nnz == 0 and updated.counts.nnz == fresh.counts.nnz
    # the same canonical CSR (sorted indices, no stored zeros), not just equal values
    np.testing.assert_array_equal(updated.counts.indptr, fresh.counts.indptr)
    np.testing.assert_array_equal(updated.counts.indices, fresh.counts.indices)
    np.testing.assert_array_equal(updated.label_counts, fresh.label_counts)
    assert updated.first_token == fresh.first_token and updated.num_positions == fresh.num_positions
    # a changed position left out of the list is refused, not silently miscounted
    with pytest.raises(ConfigError, match="positions"):
        update_context_pairs(pc, old, new, positions[1:])
    if V > 1000:   # nearly every pair is distinct: counts of another stream would go negative
        with pytest.raises(ConfigError, match="^old_stream: "):
            update_context_pairs(fresh, old, new, positions)
