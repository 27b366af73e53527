"""Step-level search scored by a text reward model between jitted steps (``reward=hf``).

A Hugging Face reward model has its own tokenizer and text layout (:mod:`ttc.hub.reward`), so
its scores cannot be read inside the policy's jitted loop as a ttc reward model's are
(:mod:`ttc.search.loop`). Here the same method runs with the loop's body split at the score:

1. ``propose`` (jitted): every unfinished row decodes one step; the step ends of every row
   come back with the tokens (and, for lookahead search, a greedy ``k``-step rollout's);
2. on the host, each row that advanced is decoded into its steps' text and the newest step is
   scored by a :class:`ttc.hub.session.ScoringSession`, which keeps every row's tokens in the
   reward model's own KV cache and runs only what is new (lookahead: the rollout's end, scored
   without being kept);
3. ``select`` (jitted): the scores enter the aggregates and the method's selection, whose
   ancestor indices are applied to the session's rows as well.

Everything but the score is the jitted loop's own code (:func:`ttc.search.loop.propose`,
:func:`~ttc.search.loop.record`, :func:`~ttc.search.loop.select`), so a search with a text
scorer that returns what a ttc reward model would return gives the same rows. Chunks run one
after another on one device; each compiles its jitted pieces once per (method, ``N``).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ttc import rewards as R
from ttc.decode import SamplingParams
from ttc.evaluate.sources import solution_steps
from ttc.hub.session import ScoringSession
from ttc.parallel import fetch
from ttc.search import loop as L
from ttc.tasks.stops import stop_rule

_STATIC = ("graphdef", "reward", "task", "cfg")


@functools.partial(jax.jit, static_argnames=(*_STATIC, "num_samples", "cache_len"))
def _init(graphdef, params, prompts, prompt_len, key, *, reward, task, cfg, num_samples,
          cache_len) -> L.SearchState:
    del cfg
    policy = (graphdef, params, None, None)
    return L.init_search(policy, reward, task, prompts, prompt_len, key, n=num_samples,
                         cache_len=cache_len)


@functools.partial(jax.jit, static_argnames=_STATIC)
def _propose(graphdef, params, s: L.SearchState, sp: SamplingParams, *, reward, task, cfg):
    """One step of every row; its step ends, and the lookahead rollout's tokens and ends."""
    policy = (graphdef, params, None, None)
    s, advanced, _ = L.propose(policy, reward, task, s, sp)
    ends = _ends(task, s.dec)
    rolled = None
    if cfg.method == "lookahead" and cfg.lookahead > 0:
        s2, _, dec = L._rollout_score(policy, reward, task, s, cfg.lookahead, score=False)
        s = s2.replace(dec=s.dec, rew=s.rew)  # the rollout itself is discarded
        rolled = (dec.tokens, dec.length, *_ends(task, dec))
    return s, advanced, ends, rolled


def _ends(task, dec):
    return R.step_end_positions(dec.tokens, dec.prompt_len, dec.length,
                                stop_rule(task.tokenizer), task.max_steps + 1)


@functools.partial(jax.jit, static_argnames=("cfg", "n"))
def _select(s: L.SearchState, r, advanced, hp: L.SearchParams, *, cfg, n):
    s = L.record(s, r, advanced)
    s, idx, first = L.select(cfg, s, hp, n)
    return L.apply_selection(s, idx, first), idx


@functools.partial(jax.jit, static_argnames=("task", "cfg", "n"))
def _outputs(s: L.SearchState, *, task, cfg, n) -> L._ChunkOut:
    return L.chunk_outputs(task, cfg, s, n)


def _steps_of(task, tokens, prompt_len, ends, mask, rows) -> list[list[str]]:
    return [solution_steps(task, tokens[b], int(prompt_len[b]), ends[b][mask[b]]) for b in rows]


def _score(session: ScoringSession, task, tokens, prompt_len, ends, mask, rows, *,
           commit: bool) -> tuple[np.ndarray, np.ndarray]:
    """Scores of ``rows`` (those with at least one step): the rows scored and their clipped
    scores (step-level search takes a step reward: a PRM format)."""
    rows = [int(b) for b in rows if mask[b].any()]
    probs = session.score(rows, _steps_of(task, tokens, prompt_len, ends, mask, rows),
                          commit=commit)
    return np.asarray(rows, np.int64), np.clip(probs, R.EPS, 1.0 - R.EPS)


def search_chunk(graphdef, params, reward: R.RewardSpec, scorer, task, prompts, prompt_len,
                 questions: Sequence[str], key, *, cfg: L.SearchConfig, num_samples: int,
                 sampling: SamplingParams, hp: L.SearchParams, cache_len: int):
    """One chunk of problems (``questions`` their texts): its :class:`_ChunkOut` and session."""
    n = num_samples
    static = dict(reward=reward, task=task, cfg=cfg)
    s = _init(graphdef, params, jnp.asarray(prompts), jnp.asarray(prompt_len), key,
              num_samples=n, cache_len=cache_len, **static)
    session = ScoringSession.start(scorer, list(questions), num_samples=n)
    plen = np.repeat(np.asarray(prompt_len), n)
    for _ in range(task.max_steps + 1):
        if bool(np.all(np.asarray(s.dec.done))):
            break
        last = np.asarray(s.last)
        s, advanced, (ends, mask), rolled = _propose(graphdef, params, s, sampling, **static)
        advanced, tokens = np.asarray(advanced), np.asarray(s.dec.tokens)
        ends, mask = np.asarray(ends), np.asarray(mask)
        r = last.astype(np.float32).copy()
        rows, probs = _score(session, task, tokens, plen, ends, mask,
                             np.flatnonzero(advanced), commit=True)
        r[rows] = probs
        if rolled is not None:  # a row not done is scored at its rollout's end instead
            r_tokens, r_len, r_ends, r_mask = map(np.asarray, rolled)
            done = np.asarray(s.dec.done)
            look = last.astype(np.float32).copy()
            moved = np.flatnonzero(r_len > np.asarray(s.dec.length))
            rows2, probs2 = _score(session, task, r_tokens, plen, r_ends, r_mask, moved,
                                   commit=False)
            look[rows2] = probs2
            r = np.where(done, r, look)
        s, idx = _select(s, jnp.asarray(r), jnp.asarray(advanced), hp, cfg=cfg, n=n)
        session.gather(np.asarray(idx))
    return _outputs(s, task=task, cfg=cfg, n=n), session


def run_chunks(graphdef, params, reward, scorer, task, prompts, prompt_len, questions, chunks,
               *, cfg, num_samples, sampling, hp, cache_len, collector) -> L.SearchResult:
    """:func:`ttc.search.loop.run_search`'s chunks ``(ids, padded ids, key)`` searched with a
    text scorer, collected into one result (the scorer's FLOPs as :class:`ScorerWork`)."""
    if questions is None:
        raise ValueError("a text scorer needs the problems' question texts (questions=)")
    p = prompts.shape[0]
    work = {k: np.zeros(p) for k in ("useful", "executed", "look_useful", "look_executed",
                                     "rescored")}
    for ids, padded, key in chunks:
        out, session = search_chunk(
            graphdef, params, reward, scorer, task, prompts[padded], prompt_len[padded],
            [questions[i] for i in padded], key, cfg=cfg, num_samples=num_samples,
            sampling=sampling, hp=hp, cache_len=cache_len)
        collector.add(fetch(out), 0, 1, ids, repeats=1)
        share = 1.0 / len(ids)
        f, g = session.flops, session.peek_flops
        for k, v in (("useful", f.useful), ("executed", f.executed),
                     ("look_useful", g.useful), ("look_executed", g.executed),
                     ("rescored", session.rescored)):
            work[k][ids] = v * share
    return collector.result(cache_len=cache_len, window=1, reward_cache_len=0,
                            scorer=L.ScorerWork(**work))
