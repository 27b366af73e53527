"""Step-level search scored on the host between jitted steps: by a text reward model
(``reward=hf``) or by the outcome oracle of a task whose answers are host work (a text task).

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

A text task's oracle (:class:`OracleSteps`) takes the same path, its verdicts read by
``task.prefix_correct`` on the host (:func:`ttc.tasks.base.answers_on_host`). Particle Gibbs
runs its sweeps inside one jitted scan and is not built on this path.
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
    """One step of every row; its step ends, the lookahead rollout's tokens and ends, and a key
    for the step's scores."""
    policy = (graphdef, params, None, None)
    s, advanced, key = L.propose(policy, reward, task, s, sp)
    ends = _ends(task, s.dec)
    rolled = None
    if cfg.method == "lookahead" and cfg.lookahead > 0:
        s2, _, dec = L._rollout_score(policy, reward, task, s, cfg.lookahead, score=False)
        s = s2.replace(dec=s.dec, rew=s.rew)  # the rollout itself is discarded
        rolled = (dec.tokens, dec.length, *_ends(task, dec))
    return s, advanced, ends, rolled, key


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


class HubSteps:
    """Step scores of a text reward model (``reward=hf``), from a per-row
    :class:`~ttc.hub.session.ScoringSession`; the scorer's FLOPs are its own count."""

    def __init__(self, scorer, task, questions: Sequence[str], num_samples: int):
        self.task = task
        self.session = ScoringSession.start(scorer, list(questions), num_samples=num_samples)

    def score(self, tokens, prompt_len, length, ends, mask, rows, *, commit: bool,
              key) -> tuple[np.ndarray, np.ndarray]:
        """Scores of ``rows`` (those with at least one step): the rows scored and their clipped
        scores (step-level search takes a step reward: a PRM format)."""
        del length, key
        rows = [int(b) for b in rows if mask[b].any()]
        probs = self.session.score(rows, _steps_of(self.task, tokens, prompt_len, ends, mask,
                                                   rows), commit=commit)
        return np.asarray(rows, np.int64), np.clip(probs, R.EPS, 1.0 - R.EPS)

    def gather(self, idx: np.ndarray) -> None:
        self.session.gather(idx)

    def work(self) -> dict[str, float]:
        f, g = self.session.flops, self.session.peek_flops
        return {"useful": f.useful, "executed": f.executed, "look_useful": g.useful,
                "look_executed": g.executed, "rescored": self.session.rescored}


_oracle_scores = jax.jit(R.oracle_scores, static_argnames=("spec",))


class OracleSteps:
    """The oracle of a task whose answers are host work (a text task,
    :func:`ttc.tasks.base.answers_on_host`): each row's verdict ``task.prefix_correct`` at its
    current length (a text task's outcome oracle: a finished row is correct iff its answer is
    the gold one, an unfinished one is ``True``), with the spec's flips and noise drawn over
    every row from the step's key: what the jitted loop's oracle computes
    (:func:`ttc.rewards.score_new_tokens`). The oracle costs no FLOPs."""

    def __init__(self, task, spec: R.RewardSpec, gold_rows: np.ndarray):
        self.task, self.spec, self.gold = task, spec, np.asarray(gold_rows)

    def score(self, tokens, prompt_len, length, ends, mask, rows, *, commit: bool,
              key) -> tuple[np.ndarray, np.ndarray]:
        del ends, mask
        rows = np.asarray(rows, np.int64)
        ok = np.ones(tokens.shape[0], bool)
        if rows.size:
            ok[rows] = self.task.prefix_correct(tokens[rows], prompt_len[rows], length[rows],
                                                self.gold[rows])
        key = key if commit else jax.random.fold_in(key, 1)
        scores = _oracle_scores(jnp.asarray(ok), jnp.ones(ok.shape, bool), key, spec=self.spec)
        return rows, np.asarray(scores)[rows]

    def gather(self, idx: np.ndarray) -> None:
        self.gold = self.gold[np.asarray(idx)]

    def work(self) -> None:
        return None


def search_chunk(graphdef, params, reward: R.RewardSpec, steps, task, prompts, prompt_len, key,
                 *, cfg: L.SearchConfig, num_samples: int, sampling: SamplingParams,
                 hp: L.SearchParams, cache_len: int) -> L._ChunkOut:
    """One chunk of problems searched with ``steps`` (:class:`HubSteps` or
    :class:`OracleSteps`) scoring between the jitted steps: its :class:`_ChunkOut`."""
    n = num_samples
    static = dict(reward=reward, task=task, cfg=cfg)
    s = _init(graphdef, params, jnp.asarray(prompts), jnp.asarray(prompt_len), key,
              num_samples=n, cache_len=cache_len, **static)
    plen = np.repeat(np.asarray(prompt_len), n)
    for _ in range(task.max_steps + 1):
        if bool(np.all(np.asarray(s.dec.done))):
            break
        last = np.asarray(s.last)
        s, advanced, (ends, mask), rolled, sub = _propose(graphdef, params, s, sampling,
                                                          **static)
        advanced, tokens = np.asarray(advanced), np.asarray(s.dec.tokens)
        ends, mask = np.asarray(ends), np.asarray(mask)
        r = last.astype(np.float32).copy()
        rows, probs = steps.score(tokens, plen, np.asarray(s.dec.length), ends, mask,
                                  np.flatnonzero(advanced), commit=True, key=sub)
        r[rows] = probs
        if rolled is not None:  # a row not done is scored at its rollout's end instead
            r_tokens, r_len, r_ends, r_mask = map(np.asarray, rolled)
            done = np.asarray(s.dec.done)
            look = last.astype(np.float32).copy()
            moved = np.flatnonzero(r_len > np.asarray(s.dec.length))
            rows2, probs2 = steps.score(r_tokens, plen, r_len, r_ends, r_mask, moved,
                                        commit=False, key=sub)
            look[rows2] = probs2
            r = np.where(done, r, look)
        s, idx = _select(s, jnp.asarray(r), jnp.asarray(advanced), hp, cfg=cfg, n=n)
        steps.gather(np.asarray(idx))
    return _outputs(s, task=task, cfg=cfg, n=n)


def run_chunks(graphdef, params, reward, scorer, task, prompts, prompt_len, gold, questions,
               chunks, *, cfg, num_samples, sampling, hp, cache_len,
               collector) -> L.SearchResult:
    """:func:`ttc.search.loop.run_search`'s chunks ``(ids, padded ids, key)`` searched with
    scores from the host: a text ``scorer`` (its FLOPs as :class:`ScorerWork`) or, with
    ``scorer=None``, the oracle of a task whose answers are host work."""
    if scorer is not None and questions is None:
        raise ValueError("a text scorer needs the problems' question texts (questions=)")
    if cfg.method == "pgibbs":
        raise ValueError("particle Gibbs runs its sweeps in one jitted loop: it cannot take "
                         "scores from the host (a text scorer, or a text task's oracle)")
    p = prompts.shape[0]
    work = {k: np.zeros(p) for k in ("useful", "executed", "look_useful", "look_executed",
                                     "rescored")}
    for ids, padded, key in chunks:
        if scorer is None:
            steps = OracleSteps(task, reward, np.repeat(gold[padded], num_samples, axis=0))
        else:
            steps = HubSteps(scorer, task, [questions[i] for i in padded], num_samples)
        out = search_chunk(graphdef, params, reward, steps, task, prompts[padded],
                           prompt_len[padded], key, cfg=cfg, num_samples=num_samples,
                           sampling=sampling, hp=hp, cache_len=cache_len)
        collector.add(L.host_answers(task, cfg, fetch(out), prompt_len[padded]), 0, 1, ids,
                      repeats=1)
        for k, v in (steps.work() or {}).items():
            work[k][ids] = v / len(ids)
    return collector.result(cache_len=cache_len, window=1, reward_cache_len=0,
                            scorer=L.ScorerWork(**work) if scorer is not None else None)
