"""Reward-model heads: how a PRM/ORM turns its transformer's outputs into a score logit.

Two heads (``TransformerConfig.head``):

* ``scalar`` — a value head on the last hidden state (Cobbe et al. 2021; Lightman et al. 2023).
  The logit at a position is the head's output there.
* ``lm_value`` — a *log-probability verifier*: the model keeps its language-model head and adds a
  value head; the logit at position ``t`` is

      value_t + w_min · min_{s<=t} lp_s + w_mean · mean_{s<=t} lp_s

  where ``lp_s = log p(token_s | tokens_<s)`` under the model's own LM head and ``s`` ranges over
  the *solution* tokens scored so far (the prompt is excluded). ``w`` is learned with the value
  head. The LM trunk is trained on the task's reference solutions (the policy's SFT data) and
  frozen while the head learns from Monte-Carlo step labels, so the features stay calibrated
  log-probabilities. This is a process verifier in the sense of Lightman et al. (2023): the score
  at a step end judges the whole prefix, and the running minimum makes one implausible token
  condemn every later step. The features are those of likelihood reranking (the policy's own
  version is ``bon_loglik``), here under a separately trained reference LM.

Why it exists: value heads fine-tuned from the policy's trunk on Monte-Carlo labels learn which
*problems* are hard but rank the solutions of one problem close to chance, while the
log-probability of a sampled solution under an LM trained longer on the same data ranks them
well (the within-problem AUCs are in README "Results" and docs/RESULTS.md).

The running statistics make incremental scoring exact: :class:`LogProbCarry` holds each row's
log-softmax at its last consumed position (it predicts the next call's first token) and the
running min/sum/count, so a search step pays only for its new tokens.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct
from jaxtyping import Array, Bool, Float, Int

N_FEATURES = 2  # running min and running mean of the solution tokens' log-probabilities


@struct.dataclass
class LogProbCarry:
    """Per-row running state of the log-probability features (``lm_value`` heads).

    Attributes:
        next_logp: ``[B, V]`` log-softmax at the last consumed position.
        lp_min: ``[B]`` min log-prob of the solution tokens so far (0 before any).
        lp_sum: ``[B]`` their sum.
        count: ``[B]`` how many there were.
    """

    next_logp: Float[Array, "B V"]
    lp_min: Float[Array, " B"]
    lp_sum: Float[Array, " B"]
    count: Float[Array, " B"]

    @classmethod
    def zeros(cls, batch: int, vocab: int) -> LogProbCarry:
        z = jnp.zeros((batch,), jnp.float32)
        return cls(next_logp=jnp.zeros((batch, vocab), jnp.float32), lp_min=z, lp_sum=z, count=z)


def score_logits(
    model,
    out: Float[Array, "B S O"],
    tokens: Int[Array, "B S"],
    *,
    solution: Bool[Array, "B S"],
    consumed: Int[Array, " B"],
    carry: LogProbCarry | None = None,
) -> tuple[Float[Array, "B S"], LogProbCarry | None]:
    """Score logits ``[B, S]`` of a reward model's outputs ``out`` for ``tokens``.

    Args:
        model: the reward model (its config names the head; ``lm_value`` reads ``feat_w``).
        out: the model's outputs for ``tokens`` (``[..., V + 1]`` for ``lm_value``).
        tokens: the tokens just run, ``[B, S]``.
        solution: which of them are solution tokens (counted in the features); must be within
            each row's first ``consumed`` positions.
        consumed: how many of each row's ``S`` tokens are real (the rest is padding); the carry
            advances to position ``consumed - 1`` (unchanged where 0).
        carry: running state from the previous call (``None``: a fresh start, e.g. a full
            forward from position 0).

    Returns:
        Logits (meaningful at consumed positions) and the advanced carry (``None`` for ``scalar``
        heads).
    """
    cfg = model.cfg
    if cfg.head == "scalar":
        return out[..., 0].astype(jnp.float32), None
    b, s = tokens.shape
    v = cfg.vocab_size
    if carry is None:
        carry = LogProbCarry.zeros(b, v)
    logp = jax.nn.log_softmax(out[..., :v].astype(jnp.float32), axis=-1)
    prev = jnp.concatenate([carry.next_logp[:, None], logp[:, :-1]], axis=1)
    lp = jnp.take_along_axis(prev, tokens[..., None], axis=-1)[..., 0]
    lp = jnp.where(solution, lp, 0.0)  # log-probs are <= 0: a 0 never lowers the minimum
    lp_min = jnp.minimum(carry.lp_min[:, None], jax.lax.cummin(lp, axis=1))
    lp_sum = carry.lp_sum[:, None] + jnp.cumsum(lp, axis=1)
    count = carry.count[:, None] + jnp.cumsum(solution.astype(jnp.float32), axis=1)
    w = model.feat_w[...]
    logit = (out[..., v].astype(jnp.float32) + w[0] * lp_min
             + w[1] * lp_sum / jnp.maximum(count, 1.0))
    last = jnp.clip(consumed - 1, 0, s - 1)[:, None]
    at = lambda x: jnp.take_along_axis(x, last, axis=1)[:, 0]  # noqa: E731
    moved = consumed > 0
    new = LogProbCarry(
        next_logp=jnp.where(moved[:, None], jnp.take_along_axis(
            logp, last[..., None], axis=1)[:, 0], carry.next_logp),
        lp_min=jnp.where(moved, at(lp_min), carry.lp_min),
        lp_sum=jnp.where(moved, at(lp_sum), carry.lp_sum),
        count=jnp.where(moved, at(count), carry.count),
    )
    return logit, new
