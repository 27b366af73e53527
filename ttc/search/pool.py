"""Pool-based methods: evaluate every budget ``k <= n`` from one pool of ``n`` samples.

Independent-sampling methods (single sample, best-of-N, majority vote, coverage) need no
re-sampling per budget: their accuracy at budget ``k`` is the expectation over uniformly random
size-``k`` subsets of the pool, estimated without bias:

* best-of-k by a score: exact expectation (:func:`ttc.metrics.expected_best_of_k`);
* coverage (pass@k, an oracle upper bound): exact (:func:`ttc.metrics.pass_at_k`);
* majority vote: Monte-Carlo over ``subsets`` random subsets, in one jit per ``k``
  (exact when ``k == n``).

Methods that select by a verifier (best-of-N, weighted majority) take the pool's aggregated
scores (:func:`scored_correct`); the others need the pool alone (:func:`per_problem_correct`).

FLOPs at budget ``k`` (:func:`ttc.ledger.pool_ledger`) charge the shared-prompt prefill once plus
``k`` times the pool's mean per-sample decode cost (useful and executed): linear in ``k``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from ttc import registry as REG
from ttc.decode import TRACE_COUNTS, Samples
from ttc.metrics import expected_best_of_k, pass_at_k
from ttc.search.aggregate import majority_vote
from ttc.tasks.base import INVALID_ANSWER, ProblemSet

POOL_METHODS = tuple(m.name for m in REG.iter_methods(REG.KIND_POOL) if not m.needs_reward)
"""The pool methods that need no verifier: estimated from the pool alone."""
SCORED_METHODS = tuple(m.name for m in REG.iter_methods(REG.KIND_POOL) if m.needs_reward)
"""The pool methods that select by a verifier's score (:func:`scored_correct`)."""


@functools.partial(jax.jit, static_argnames=("k", "subsets"))
def _majority_subsets(key, answers, weights, gold, *, k: int, subsets: int):
    TRACE_COUNTS["majority_subsets"] += 1
    p, n = answers.shape
    keys = jax.random.split(key, p)

    def one(x):
        key, a, w, g = x
        pick = jnp.argsort(jax.random.uniform(key, (subsets, n)), axis=-1)[:, :k]  # [S, k]
        chosen = majority_vote(a[pick], w[pick])
        return jnp.mean((chosen == g).astype(jnp.float32))

    # the vote compares every pair of a subset ([S, k, k] per problem): problems in batches
    # that keep that under ~256 MiB, so a 1024-sample pool fits in memory
    batch = max(1, min(p, (1 << 26) // (subsets * k * k)))
    return jax.lax.map(one, (keys, answers, weights, gold), batch_size=batch)


def weighted_majority_at_k(answers, weights, gold, k: int, *, key, subsets: int) -> np.ndarray:
    """Expected correctness ``[P]`` of (weighted) majority vote over random size-k subsets
    (Monte-Carlo over ``subsets`` draws; exact when ``k == n``)."""
    n = answers.shape[1]
    w = jnp.ones(answers.shape, jnp.float32) if weights is None else jnp.asarray(weights)
    if k == n:
        return np.asarray(majority_vote(jnp.asarray(answers), w) == gold, np.float64)
    return np.asarray(_majority_subsets(key, jnp.asarray(answers), w, jnp.asarray(gold), k=k,
                                        subsets=subsets), np.float64)


def per_problem_correct(
    method: str, samples: Samples, problems: ProblemSet, k: int, *, key=None, subsets: int = 256,
    length_normalize: bool = True,
) -> np.ndarray:
    """Expected correctness ``[P]`` of ``method`` at budget ``k`` from the pool."""
    ans, gold = samples.answers, problems.answers
    n = ans.shape[1]
    if not 1 <= k <= n:
        raise ValueError(f"budget {k} outside the pool size 1..{n}")
    correct = ans == gold[:, None]
    if method == "single":
        return correct.mean(axis=1)
    if method == "coverage":
        return pass_at_k(n, correct.sum(axis=1), k)
    if method == "bon_loglik":
        score = samples.loglik / np.maximum(samples.useful_tokens, 1) if length_normalize \
            else samples.loglik
        score = np.where(ans == INVALID_ANSWER, -np.inf, score)
        return expected_best_of_k(score, correct, k)
    if method == "majority":
        key = jax.random.key(0) if key is None else key
        return weighted_majority_at_k(ans, None, gold, k, key=key, subsets=subsets)
    raise ValueError(f"unknown pool method {method!r}; choose from {POOL_METHODS}")


def scored_correct(
    method: str, scores: np.ndarray, samples: Samples, problems: ProblemSet, k: int, *, key,
    subsets: int = 256,
) -> np.ndarray:
    """Expected correctness ``[P]`` at budget ``k`` of a pool method that selects by
    ``scores`` ``[P, N]`` (one aggregated verifier score per sample): ``bon`` (exact expected
    best-of-k; invalid answers never win) or ``weighted_majority`` (score-weighted vote,
    Monte-Carlo over ``subsets`` subsets)."""
    ans = samples.answers
    if method == "bon":
        correct = ans == problems.answers[:, None]
        return expected_best_of_k(np.where(ans != INVALID_ANSWER, scores, -np.inf), correct, k)
    if method == "weighted_majority":
        return weighted_majority_at_k(ans, scores, problems.answers, k, key=key, subsets=subsets)
    raise ValueError(f"unknown scored pool method {method!r}; choose from {SCORED_METHODS}")
