"""REBASE's child allocation (:mod:`ttc.search.rebase`) against its definition."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ttc.search.rebase import ancestors, balanced_counts


def _softmax(z):
    e = np.exp(z - z.max())
    return e / e.sum()


@pytest.mark.parametrize("seed", range(5))
def test_counts_sum_to_the_width_and_follow_the_softmax(seed):
    """Every problem's counts sum to its width, are 0 off the expandable nodes, and are the
    softmax quota rounded up or down (largest remainder: the floors plus one for the nodes
    with the largest fractional parts)."""
    rng = np.random.default_rng(seed)
    p, n = 64, 16
    scores = rng.uniform(0, 1, (p, n)).astype(np.float32)
    expand = rng.uniform(size=(p, n)) < 0.7
    expand[0] = False  # nothing to expand: all zero
    expand[1] = [True] + [False] * (n - 1)  # one node takes the whole width
    width = rng.integers(0, n + 1, p)
    t = np.float32(rng.choice([0.05, 0.2, 1.0]))
    counts = np.asarray(balanced_counts(jnp.asarray(scores), jnp.asarray(expand),
                                        jnp.asarray(width, jnp.int32), jnp.asarray(t)))
    assert counts.dtype == np.int32 and (counts >= 0).all()
    assert (counts[~expand] == 0).all() and (counts[0] == 0).all()
    assert counts[1, 0] == width[1]
    for i in range(2, p):
        e = np.flatnonzero(expand[i])
        if not len(e):
            assert (counts[i] == 0).all()
            continue
        assert counts[i].sum() == width[i]
        quota = width[i] * _softmax(scores[i, e].astype(np.float64) / t)
        assert np.all(np.abs(counts[i, e] - quota) < 1 + 1e-5)
        extra = counts[i, e] - np.floor(quota + 1e-6)
        frac = quota - np.floor(quota)
        if 0 < extra.sum() < len(e):  # those rounded up have the largest remainders
            assert frac[extra == 1].min() >= frac[extra == 0].max() - 1e-5


def test_higher_reward_gets_more_children_and_lower_temperature_concentrates():
    scores = jnp.asarray([[0.9, 0.5, 0.1, 0.5]])
    expand = jnp.ones((1, 4), bool)
    width = jnp.asarray([16], jnp.int32)
    warm = np.asarray(balanced_counts(scores, expand, width, jnp.float32(1.0)))[0]
    cold = np.asarray(balanced_counts(scores, expand, width, jnp.float32(0.05)))[0]
    assert warm[0] > warm[1] == warm[3] > warm[2] and warm.sum() == cold.sum() == 16
    assert cold[0] > warm[0] and cold[2] == 0


def test_ancestors_repeat_each_node_its_count():
    counts = jnp.asarray([[2, 0, 1, 1], [0, 0, 0, 4]], jnp.int32)
    np.testing.assert_array_equal(np.asarray(ancestors(counts)),
                                  [[0, 0, 2, 3], [3, 3, 3, 3]])
    rng = np.random.default_rng(0)
    c = rng.multinomial(8, np.ones(8) / 8, size=32).astype(np.int32)
    got = np.asarray(jax.jit(ancestors)(jnp.asarray(c)))
    for row, want in zip(got, c, strict=True):
        np.testing.assert_array_equal(np.bincount(row, minlength=8), want)
        assert (np.diff(row) >= 0).all()
