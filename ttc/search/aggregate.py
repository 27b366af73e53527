"""Final aggregation over a group of N samples: best-of-N and (weighted) majority vote.

All functions take ``[..., N]`` arrays (a leading batch of groups) and work under ``jit`` and
``vmap``. Invalid samples (unparseable answer, or a ``valid=False`` mask) never win: a group
whose samples are all invalid returns index 0 / :data:`INVALID_ANSWER`, which is scored wrong.

* Best-of-N: Cobbe et al. 2021 ("Training Verifiers to Solve Math Word Problems"); with a PRM,
  Lightman et al. 2023 ("Let's Verify Step by Step").
* Majority vote / self-consistency: Wang et al. 2023 ("Self-Consistency Improves Chain of
  Thought Reasoning"); weighted majority (reward-weighted voting): Li et al. 2023 / Uesato et al.
  2022, as used by Snell et al. 2024 for the final pick of search methods.

Tie-breaking (documented contract): among answers with equal (weighted) votes the one whose
*first occurrence* in sample order is earliest wins. Samples are exchangeable, so this is a
uniformly random tie-break in distribution while staying deterministic for a given pool.
"""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from ttc.tasks.base import INVALID_ANSWER


def _valid(answer_ids, valid):
    ok = answer_ids != INVALID_ANSWER
    return ok if valid is None else ok & valid


def best_of_n(
    scores: Float[Array, "... N"], valid: Bool[Array, "... N"] | None = None
) -> Int[Array, ...]:
    """Index of the highest-scoring valid sample per group (first index on ties).

    NaN scores count as ``-inf``; a group with no valid sample returns 0.
    """
    s = jnp.where(jnp.isnan(scores), -jnp.inf, scores)
    ok = jnp.ones(s.shape, bool) if valid is None else valid
    masked = jnp.where(ok, s, -jnp.inf)
    hit = ok & (masked == jnp.max(masked, axis=-1, keepdims=True))
    return jnp.where(jnp.any(ok, axis=-1), jnp.argmax(hit, axis=-1), 0).astype(jnp.int32)


def vote_scores(
    answer_ids: Int[Array, "... N"],
    weights: Float[Array, "... N"] | None = None,
    valid: Bool[Array, "... N"] | None = None,
) -> Float[Array, "... N"]:
    """Total (weighted) votes of each sample's answer; ``-inf`` for invalid samples."""
    ok = _valid(answer_ids, valid)
    w = jnp.ones(answer_ids.shape, jnp.float32) if weights is None else weights.astype(jnp.float32)
    w = jnp.where(ok & jnp.isfinite(w), w, 0.0)
    same = answer_ids[..., :, None] == answer_ids[..., None, :]
    votes = jnp.sum(jnp.where(same, w[..., None, :], 0.0), axis=-1)
    return jnp.where(ok, votes, -jnp.inf)


def majority_vote(
    answer_ids: Int[Array, "... N"],
    weights: Float[Array, "... N"] | None = None,
    valid: Bool[Array, "... N"] | None = None,
) -> Int[Array, ...]:
    """Chosen answer id per group: most (weighted) votes, ties to the earliest first occurrence.

    Args:
        answer_ids: ``[..., N]`` answer ids; :data:`INVALID_ANSWER` never wins.
        weights: optional ``[..., N]`` non-negative weights (e.g. reward scores) for weighted
            majority; non-finite weights count as 0.
        valid: optional ``[..., N]`` extra validity mask.

    Returns:
        ``[...]`` chosen answer ids (:data:`INVALID_ANSWER` when no sample is valid).
    """
    ok = _valid(answer_ids, valid)
    votes = vote_scores(answer_ids, weights, valid)
    idx = jnp.argmax(votes, axis=-1)
    chosen = jnp.take_along_axis(answer_ids, idx[..., None], axis=-1)[..., 0]
    return jnp.where(jnp.any(ok, axis=-1), chosen, INVALID_ANSWER).astype(jnp.int32)
