"""Parallel tempering's swap moves (:mod:`ttc.search.tempering`) against their closed form."""

import jax
import jax.numpy as jnp
import numpy as np

from ttc.search.tempering import swap_probability, swap_slots

BETA = np.array([1.0, 0.5], np.float32)  # two temperatures: T = 1 and T = 2


def _closed_form(e_low, e_high, b_low, b_high):
    return np.minimum(1.0, np.exp((b_low - b_high) * (e_high - e_low)))


def _acceptance(e_low, e_high, reps, seed=0):
    """Measured swap frequency of each ``(e_low, e_high)`` pair between chains 0 and 1."""
    pairs = len(e_low)
    energy = np.zeros((1, 2, pairs * reps), np.float32)
    energy[0, 0] = np.repeat(e_low, reps)
    energy[0, 1] = np.repeat(e_high, reps)
    source, acc = jax.jit(swap_slots)(jax.random.key(seed), jnp.asarray(energy),
                                      jnp.asarray(BETA), jnp.int32(0), jnp.ones((1,), bool))
    source, acc = np.asarray(source), np.asarray(acc)
    assert (acc[0, 0] == acc[0, 1]).all()  # both sides of a pair swap together
    np.testing.assert_array_equal(source[0, 0], np.where(acc[0, 0], 1, 0))
    np.testing.assert_array_equal(source[0, 1], np.where(acc[0, 1], 0, 1))
    return acc[0, 0].reshape(pairs, reps).mean(axis=1)


def test_swap_acceptance_rates_match_the_metropolis_closed_form():
    """Two temperatures, 16 energy pairs, 20,000 proposals each: every acceptance rate within 4
    binomial standard errors of min(1, exp((beta_0 - beta_1) (E_y - E_x)))."""
    rng = np.random.default_rng(0)
    e_low = rng.uniform(-4, 4, 16).astype(np.float32)
    e_high = rng.uniform(-4, 4, 16).astype(np.float32)
    reps = 20_000
    got = _acceptance(e_low, e_high, reps)
    want = _closed_form(e_low, e_high, *BETA)
    np.testing.assert_allclose(
        np.asarray(swap_probability(jnp.asarray(e_low), jnp.asarray(e_high),
                                    jnp.float32(BETA[0]), jnp.float32(BETA[1]))),
        want, rtol=1e-5, atol=1e-6)
    se = np.sqrt(np.maximum(want * (1 - want), 1e-4) / reps)
    assert np.all(np.abs(got - want) <= 4 * se), np.c_[got, want]
    assert (want < 1).any() and (want == 1).any()  # both regimes are exercised


def test_swaps_satisfy_detailed_balance_on_a_two_state_toy():
    """States a, b (energies 0 and 1.5) under pi_c(s) ∝ exp(beta_c E(s)): the joint target
    pi_0(x) pi_1(y) times the measured rate of (x, y) -> (y, x) equals the reverse flow, and the
    rates are the closed form."""
    energies = {"a": 0.0, "b": 1.5}

    def pi(s, beta):
        z = sum(np.exp(beta * e) for e in energies.values())
        return np.exp(beta * energies[s]) / z

    reps = 40_000
    rate = dict(zip(["ab", "ba"], _acceptance(np.array([0.0, 1.5], np.float32),
                                               np.array([1.5, 0.0], np.float32), reps, seed=1),
                    strict=True))
    flow_ab = pi("a", BETA[0]) * pi("b", BETA[1]) * rate["ab"]
    flow_ba = pi("b", BETA[0]) * pi("a", BETA[1]) * rate["ba"]
    # the hot chain holding the higher-energy state: always swapped; the reverse: sometimes
    want_ba = _closed_form(1.5, 0.0, *BETA)
    assert rate["ab"] == 1.0 and 0 < want_ba < 1
    se_ba = np.sqrt(want_ba * (1 - want_ba) / reps)
    assert abs(rate["ba"] - want_ba) < 4 * se_ba
    se = pi("b", BETA[0]) * pi("a", BETA[1]) * se_ba
    assert abs(flow_ab - flow_ba) < 4 * se, (flow_ab, flow_ba)


def test_pairs_alternate_and_settled_problems_never_swap():
    """Four chains: parity 0 pairs (0, 1) and (2, 3), parity 1 pairs (1, 2); a settled problem
    keeps every particle in place."""
    energy = jnp.zeros((2, 4, 3))  # equal energies: every proposed swap is accepted
    beta = jnp.asarray([1.0, 0.5, 0.25, 0.125])
    active = jnp.asarray([True, False])
    even, _ = swap_slots(jax.random.key(0), energy, beta, jnp.int32(0), active)
    odd, _ = swap_slots(jax.random.key(0), energy, beta, jnp.int32(1), active)
    np.testing.assert_array_equal(np.asarray(even)[0, :, 0], [1, 0, 3, 2])
    np.testing.assert_array_equal(np.asarray(odd)[0, :, 0], [0, 2, 1, 3])
    for src in (even, odd):
        np.testing.assert_array_equal(np.asarray(src)[1], np.arange(4)[:, None] + 0 * src[1])
