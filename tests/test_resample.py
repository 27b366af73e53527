"""Resampling schemes are unbiased; ESS is stable; bad weights never crash."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ttc.search.resampling import SCHEMES, ess, normalize, resample


@pytest.mark.parametrize("scheme", SCHEMES)
def test_expected_offspring_equals_n_times_weight(scheme):
    w = np.array([0.42, 0.25, 0.13, 0.1, 0.06, 0.03, 0.01, 0.0])
    n, draws = len(w), 20000
    lw = jnp.log(jnp.asarray(w))
    keys = jax.random.split(jax.random.key(0), draws)
    idx = np.asarray(jax.jit(jax.vmap(lambda k: resample(k, lw, scheme)))(keys))
    counts = np.stack([np.bincount(r, minlength=n) for r in idx])
    mean = counts.mean(0)
    # standard error of each mean count is at most sqrt(N w (1-w) / draws) (multinomial)
    se = np.sqrt(n * w * (1 - w) / draws) + 1e-9
    assert np.all(np.abs(mean - n * w) <= 5 * se + 1e-12), (scheme, mean, n * w)
    assert np.all(counts[:, -1] == 0)  # zero weight: never chosen
    assert np.all(counts.sum(1) == n)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_batched_groups_and_bad_weights(scheme):
    lw = jnp.array([[0.0, -jnp.inf, 2.0, 1.0],
                    [jnp.nan, jnp.nan, jnp.nan, jnp.nan],
                    [-jnp.inf, -jnp.inf, -jnp.inf, -jnp.inf],
                    [1e30, -1e30, 0.0, 0.0]])
    idx = np.asarray(resample(jax.random.key(1), lw, scheme))
    assert idx.shape == (4, 4) and idx.min() >= 0 and idx.max() < 4
    assert 1 not in idx[0]
    assert set(idx[3].tolist()) == {0}


def test_ess_matches_reference_and_is_stable():
    rng = np.random.default_rng(0)
    lw = rng.normal(size=(5, 16)) * 3
    w = np.exp(lw - lw.max(1, keepdims=True))
    ref = w.sum(1) ** 2 / (w**2).sum(1)
    np.testing.assert_allclose(ess(jnp.asarray(lw)), ref, rtol=1e-5)
    extreme = jnp.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4], [jnp.nan] * 3])
    e = np.asarray(ess(extreme))
    np.testing.assert_allclose(e, [1.0, 3.0, 3.0], rtol=1e-5)
    assert np.all(np.isfinite(normalize(extreme)))
    with pytest.raises(ValueError):
        resample(jax.random.key(0), jnp.zeros(3), "nope")
