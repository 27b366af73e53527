"""The FLOP ledgers of the main job's cells, built from the analytic primitives of
:mod:`ttc.flops`: one builder per kind of cell.

* :func:`pool_ledger`: a size-``k`` subset of a pool of independent samples (policy prefill
  and decode);
* :func:`pool_reward_ledger`: the verifier's scoring of that subset (added to a pool ledger);
* :func:`search_ledger`: one step-level search run (policy prefill and decode, incremental
  reward scoring, lookahead rollouts).

Every figure is per problem (a mean over the problems), in the two totals of :mod:`ttc.flops`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ttc import flops as F
from ttc.decode import Samples
from ttc.flops import Ledger
from ttc.models.interface import PolicyConfig
from ttc.search.loop import SearchResult
from ttc.tasks.base import ProblemSet

if TYPE_CHECKING:
    from ttc.evaluate.sources import PoolScores, RewardSource


def pool_ledger(cfg: PolicyConfig, samples: Samples, problems: ProblemSet, k: int) -> Ledger:
    """Per-problem mean FLOPs of a size-``k`` subset of a pool (a :class:`ttc.decode.Samples`).

    The prefill is charged once per problem: useful at the prompt's own length; executed as
    recorded by the sampler (``prefill_tokens`` token-rows over ``prefill_ctx`` slots), or, for
    pools saved without those counters, the padded prompt width over the whole cache. Decode:
    ``k`` times the mean per sample; executed is every loop row-iteration charged to the
    problem's samples (``executed_row_steps``), each over all ``cache_len`` slots.
    """
    led = Ledger()
    if getattr(samples, "prefill_tokens", None) is None:
        pre_e = F.prefill_executed(cfg, problems.prompts.shape[1], samples.cache_len)
    else:
        pre_e = F.forward_flops(cfg, samples.prefill_tokens, samples.prefill_ctx).mean()
    led.add("policy_prefill", F.prefill_useful(cfg, problems.prompt_len).mean(), pre_e)
    dec_u = F.decode_useful(cfg, samples.useful_tokens, samples.useful_ctx).mean(axis=1)
    dec_e = F.decode_executed(cfg, samples.executed_row_steps, samples.cache_len).mean(axis=1)
    led.add("policy_decode", k * dec_u.mean(), k * dec_e.mean())
    return led


def pool_reward_ledger(led: Ledger, src: RewardSource, scored: PoolScores,
                       samples: Samples, problems: ProblemSet, k: int) -> None:
    """Adds to ``led`` the verifier's FLOPs of scoring a size-``k`` subset of the pool.

    A learned verifier runs each prompt once (``reward_prefill``) and each sample's own tokens
    (``reward``): useful at each token's own context; executed as the scorer ran them
    (``scored.executed``: each sample's share of its padded, length-sorted chunk,
    :func:`ttc.evaluate.score_pool`), ``k`` times the pool's mean. The oracle verifier is free
    (a zero ``reward`` component).
    """
    if src.cfg is None:
        led.add("reward", 0.0, 0.0)
        return
    if scored.useful is not None:  # a text scorer counted its own tokens (prompt shares included)
        led.add("reward", k * scored.useful.mean(), k * scored.executed.mean())
        return
    led.add("reward_prefill", F.prefill_useful(src.cfg, problems.prompt_len).mean(),
            scored.prefill_executed.mean())
    # each sample's tokens at the verifier's own attended context (its sliding windows, if
    # any, not the policy's); without windows this equals the sampler's useful_ctx exactly
    ctx = F.context_sum(src.cfg, np.asarray(problems.prompt_len)[:, None].astype(np.int64),
                        np.asarray(samples.useful_tokens, np.int64))
    dec = F.decode_useful(src.cfg, samples.useful_tokens, np.asarray(ctx, np.float32)).mean()
    led.add("reward", k * dec, k * scored.executed.mean())


def search_ledger(policy_cfg: PolicyConfig, src: RewardSource, res: SearchResult,
                  problems: ProblemSet) -> Ledger:
    """Per-problem mean FLOPs of one search run (:class:`ttc.search.loop.SearchResult`).

    Components: ``policy_prefill`` (once per problem), ``policy_decode`` (proposed steps),
    ``reward_prefill`` and ``reward`` (a learned verifier's incremental scoring, each call
    reading ``window`` slots per row: one per decode iteration when it scores token by token; a
    text scorer's own count, :class:`ttc.search.loop.ScorerWork`) and ``lookahead`` (rollout
    decode and its scoring, only when rollouts generated tokens).
    """
    w = res.work.mean()
    led = Ledger()
    t = res.cache_len
    lp_pad = problems.prompts.shape[1]
    led.add("policy_prefill", F.prefill_useful(policy_cfg, problems.prompt_len).mean(),
            F.prefill_executed(policy_cfg, lp_pad, t))
    led.add("policy_decode", F.decode_useful(policy_cfg, w.dec_tokens, w.dec_ctx),
            F.decode_executed(policy_cfg, w.dec_steps, t))
    look_u = F.decode_useful(policy_cfg, w.look_tokens, w.look_ctx)
    look_e = F.decode_executed(policy_cfg, w.look_steps, t)
    if res.scorer is not None:  # a text scorer counted its own work (prefix prefills included)
        sw = res.scorer
        led.add("reward", float(sw.useful.mean()), float(sw.executed.mean()))
        look_u += float(sw.look_useful.mean())
        look_e += float(sw.look_executed.mean())
    elif src.cfg is not None:
        rc = src.cfg
        tr = res.reward_cache_len
        led.add("reward_prefill", F.prefill_useful(rc, problems.prompt_len).mean(),
                F.prefill_executed(rc, lp_pad, tr))
        led.add("reward", F.decode_useful(rc, w.rew_tokens, w.rew_ctx),
                w.rew_calls * res.window * rc.flops_per_token(tr))
        look_u += F.decode_useful(rc, w.look_rew_tokens, w.look_rew_ctx)
        look_e += w.look_rew_calls * res.window * rc.flops_per_token(tr)
    if w.look_tokens > 0:
        led.add("lookahead", look_u, look_e)
    return led
