"""REBASE's reward-balanced expansion (Wu et al. 2024, "Inference Scaling Laws: An Empirical
Analysis of Compute-Optimal Inference for Problem-Solving with Language Models", §3.2).

At every depth the tree keeps a fixed total width ``N``. Finished leaves keep their slot (a
completed solution is not expanded again and still uses the budget), and the remaining width
``W = N - finished`` is shared by the unfinished nodes in proportion to
``softmax(reward / T_b)``: node ``j`` gets ``W * softmax(r / T_b)_j`` children, rounded by the
largest-remainder rule so that the counts are integers that sum to exactly ``W`` (ties go to the
lower index).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int


def balanced_counts(scores: Float[Array, "P N"], expand: Bool[Array, "P N"],
                    width: Int[Array, " P"], temperature: Float[Array, ""]) -> Int[Array, "P N"]:
    """Children per node: ``width * softmax(scores / temperature)`` over the ``expand`` nodes,
    rounded to integers summing to ``width`` (largest remainder); 0 for the other nodes (and
    for every node of a problem with none to expand)."""
    z = jnp.where(expand, scores / temperature, -jnp.inf)
    share = jnp.where(expand, jax.nn.softmax(z, axis=-1), 0.0)
    share = jnp.where(jnp.any(expand, axis=-1, keepdims=True), share, 0.0)
    quota = width[:, None].astype(jnp.float32) * share
    floor = jnp.floor(quota).astype(jnp.int32)
    left = jnp.where(jnp.any(expand, axis=-1), width - floor.sum(-1), 0)
    frac = jnp.where(expand, quota - floor, -1.0)
    order = jnp.argsort(-frac, axis=-1, stable=True)
    rank = jnp.argsort(order, axis=-1)  # position of each node in the remainder ranking
    return floor + (expand & (rank < left[:, None])).astype(jnp.int32)


def ancestors(counts: Int[Array, "P N"]) -> Int[Array, "P N"]:
    """Slot ``k`` of each problem copies node ``ancestors[k]``: node ``j`` repeated
    ``counts[j]`` times, in node order (``counts`` sums to ``N`` per problem)."""
    n = counts.shape[-1]
    return jax.vmap(lambda c: jnp.repeat(jnp.arange(n), c, total_repeat_length=n))(counts)
