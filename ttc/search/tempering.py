"""Swap moves of parallel tempering across particle filters (Puri et al. 2025, "A Probabilistic
Inference Approach to Inference-Time Scaling of LLMs using Particle-Based Monte Carlo Methods",
after Geyer 1991 and Swendsen & Wang 1986).

Chain ``c`` of a problem is a particle filter whose weights are tempered by the inverse
temperature ``beta_c``: it targets ``pi_c(x) ∝ p(x) exp(beta_c E(x))``, ``E`` the particle's
log-potential (the logit of its step scores). After every step, particle ``j`` of chain ``c``
and particle ``j`` of chain ``c + 1`` exchange their states with the Metropolis probability

    min(1, pi_c(y) pi_{c+1}(x) / (pi_c(x) pi_{c+1}(y)))
        = min(1, exp((beta_c - beta_{c+1}) (E(y) - E(x))))

(``x`` in chain ``c``, ``y`` in chain ``c + 1``), which leaves the product of the chains'
targets invariant (detailed balance). Pairs alternate: chains ``(0, 1), (2, 3), ...`` on even
steps and ``(1, 2), (3, 4), ...`` on odd ones (deterministic even-odd swaps).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray


def swap_probability(e_low: Float[Array, "*S"], e_high: Float[Array, "*S"],
                     beta_low: Float[Array, "*S"], beta_high: Float[Array, "*S"]
                     ) -> Float[Array, "*S"]:
    """Metropolis acceptance of exchanging ``x`` (energy ``e_low``, in the chain at
    ``beta_low``) with ``y`` (``e_high``, at ``beta_high``)."""
    return jnp.minimum(1.0, jnp.exp((beta_low - beta_high) * (e_high - e_low)))


def swap_slots(key: PRNGKeyArray, energy: Float[Array, "P C n"], beta: Float[Array, " C"],
               parity: Int[Array, ""], active: Bool[Array, " P"]
               ) -> tuple[Int[Array, "P C n"], Bool[Array, "P C n"]]:
    """One round of swaps between neighbouring chains.

    Args:
        key: randomness of the accept decisions.
        energy: each particle's log-potential ``E``.
        beta: each chain's inverse temperature.
        parity: 0 swaps pairs ``(0, 1), (2, 3), ...``; 1 swaps ``(1, 2), (3, 4), ...``.
        active: problems whose chains may swap (a finished problem is left alone).

    Returns:
        ``(source, accepted)``: the chain each slot takes its new state from (same slot index:
        ``c``, ``c - 1`` or ``c + 1``) and, per slot, whether its pair swapped.
    """
    p, c, n = energy.shape
    chains = jnp.arange(c)
    low = (chains % 2 == parity) & (chains + 1 < c)  # first chain of each swapping pair
    e_up = jnp.roll(energy, -1, axis=1)  # the next chain's particle in the same slot
    b_up = jnp.roll(beta, -1)
    prob = swap_probability(energy, e_up, beta[None, :, None], b_up[None, :, None])
    u = jax.random.uniform(key, (p, c, n))
    acc_low = low[None, :, None] & (u < prob) & active[:, None, None]
    acc_high = jnp.roll(acc_low, 1, axis=1)  # chain c + 1 swaps when its lower partner does
    source = chains[None, :, None] + acc_low.astype(jnp.int32) - acc_high.astype(jnp.int32)
    return source, acc_low | acc_high
