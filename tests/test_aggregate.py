"""Aggregation primitives against slow obvious NumPy references."""

import jax
import jax.numpy as jnp
import numpy as np

from ttc.search import best_of_n, majority_vote


def ref_majority(ans, w=None):
    out = []
    for g in range(ans.shape[0]):
        tally, first = {}, {}
        for i, a in enumerate(ans[g]):
            if a == -1:
                continue
            tally[a] = tally.get(a, 0.0) + (1.0 if w is None else w[g, i])
            first.setdefault(a, i)
        if not tally:
            out.append(-1)
            continue
        best = max(tally.values())
        out.append(min((first[a], a) for a in tally if tally[a] == best)[1])
    return np.array(out)


def ref_best(scores, valid):
    out = []
    for g in range(scores.shape[0]):
        idx = [i for i in range(scores.shape[1]) if valid[g, i]]
        if not idx:
            out.append(0)
            continue
        s = [(-np.inf if np.isnan(scores[g, i]) else scores[g, i]) for i in idx]
        out.append(idx[int(np.argmax(s))])
    return np.array(out)


def test_majority_matches_reference():
    rng = np.random.default_rng(0)
    for n in (1, 2, 5, 16):
        ans = rng.integers(-1, 4, size=(200, n))
        np.testing.assert_array_equal(jax.jit(majority_vote)(jnp.asarray(ans)), ref_majority(ans))
        w = rng.random((200, n)).astype(np.float32)
        np.testing.assert_array_equal(majority_vote(jnp.asarray(ans), jnp.asarray(w)),
                                      ref_majority(ans, w))


def test_majority_ties_and_invalid():
    ans = jnp.array([[3, 1, 1, 3], [-1, -1, -1, -1], [-1, 2, -1, -1], [5, 6, 7, 8]])
    np.testing.assert_array_equal(majority_vote(ans), [3, -1, 2, 5])
    valid = jnp.array([[False, True, True, True]] * 4)
    np.testing.assert_array_equal(majority_vote(ans, valid=valid), [1, -1, 2, 6])
    # non-finite weights count as zero, never NaN
    w = jnp.array([[jnp.nan, 1.0, 0.5, jnp.inf]] * 4)
    np.testing.assert_array_equal(majority_vote(ans, w), [1, -1, 2, 6])


def test_majority_under_vmap():
    ans = jnp.asarray(np.random.default_rng(1).integers(0, 3, size=(4, 7, 9)))
    got = jax.vmap(majority_vote)(ans)
    np.testing.assert_array_equal(got, ref_majority(np.asarray(ans).reshape(-1, 9)).reshape(4, 7))


def test_best_of_n_matches_reference():
    rng = np.random.default_rng(2)
    scores = rng.normal(size=(300, 6)).astype(np.float32)
    scores[rng.random(scores.shape) < 0.1] = np.nan
    valid = rng.random(scores.shape) < 0.8
    np.testing.assert_array_equal(jax.jit(best_of_n)(jnp.asarray(scores), jnp.asarray(valid)),
                                  ref_best(scores, valid))
    # a valid sample with score -inf beats invalid ones
    assert int(best_of_n(jnp.array([[1.0, -jnp.inf]]), jnp.array([[False, True]]))[0]) == 1
