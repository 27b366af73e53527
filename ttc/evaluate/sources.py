"""Verifiers of an evaluation: the reward sources, scoring a pool with them, and the memo that
scores each pool once per verifier."""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ttc import rewards as R
from ttc.decode import TRACE_COUNTS, Samples
from ttc.errors import ConfigError
from ttc.methods import MethodSpec
from ttc.models.interface import PolicyConfig
from ttc.parallel import Layout, device_groups, fetch, fit_layout, on_layout, over_rows
from ttc.tasks.base import ProblemSet, Task, answers_on_host
from ttc.tasks.stops import stop_rule


@dataclasses.dataclass(frozen=True)
class RewardSource:
    """A reward source ready for scoring: static spec, params, and its model config (FLOPs)."""

    spec: R.RewardSpec
    params: object
    cfg: PolicyConfig | None
    meta: dict = dataclasses.field(default_factory=dict)
    scorer: Any = None
    """A text scorer (:class:`ttc.hub.HubReward`, ``reward=hf``) that scores decoded solutions
    on the host instead of ``spec``'s model; pool methods only."""


VerifierKey = tuple[str, float, float]
"""``(reward kind, flip, noise)``: methods with equal keys share one verifier's scores."""


def reward_key(m: MethodSpec) -> VerifierKey:
    """The verifier a method with a ``reward`` parameter scores with."""
    return (m.reward, float(m.value("flip")), float(m.value("noise")))


class Verifiers:
    """The learned reward sources of an evaluation (``prm``/``orm``) plus the oracle, built on
    demand from a method's ``flip``/``noise``."""

    def __init__(self, task: Task, learned: dict[str, RewardSource] | None):
        self.task = task
        self.learned = dict(learned or {})

    def check(self, methods: list[MethodSpec]) -> None:
        """Raises :class:`ConfigError` if a method needs a learned model that is missing."""
        for m in methods:
            if m.reward in ("prm", "orm") and m.reward not in self.learned:
                raise ConfigError(f"method {m.label!r} needs a {m.reward} reward model")

    def source(self, m: MethodSpec) -> RewardSource:
        """The reward source ``m`` scores with."""
        kind, flip, noise = reward_key(m)
        if kind == "oracle":
            return RewardSource(spec=R.RewardSpec(kind="oracle", window=self.task.max_step_len,
                                                  flip=flip, noise=noise), params=None, cfg=None)
        return self.learned[kind]

    def meta(self, m: MethodSpec) -> dict:
        """The metadata of ``m``'s learned reward model (empty for the oracle or none)."""
        return self.learned[m.reward].meta if m.reward in self.learned else {}


WIDTH_STEP = 4
"""A learned verifier's per-row width (solution slots run) is rounded up to a multiple of this,
so that a pool's length-sorted chunks compile a few shapes."""

LEARNED_CHUNK = 256
"""Rows per chunk of a learned verifier's pool scoring: small chunks of length-sorted rows
keep each chunk's width close to its rows' lengths (``scripts/bench.py --sections methods``
reports the useful/executed ratio)."""


class PoolScoring(NamedTuple):
    """A verifier's scores of a pool and the FLOPs it executed for them.

    Attributes:
        steps: ``[P, N, K]`` step scores.
        mask: ``[P, N, K]`` which of them are real steps.
        executed: ``[P, N]`` executed FLOPs of scoring each solution (its share of its chunk's
            padded rows and slots; zeros for the oracle).
        prefill_executed: ``[P]`` executed FLOPs of running each problem's prompt once.
    """

    steps: np.ndarray
    mask: np.ndarray
    executed: np.ndarray
    prefill_executed: np.ndarray
    useful: np.ndarray | None = None
    """``[P, N]`` useful FLOPs per solution when the scorer counts its own (``reward=hf``: its
    tokens are not the policy's; each problem's prompt is shared among its solutions)."""


@functools.partial(jax.jit, static_argnames=("spec", "task", "devices"))
def _score_pool(params, tokens, prompt_len, length, gold, keys, *, spec, task, devices):
    """Scores one chunk of solutions per device (``keys``: ``[devices]``, one per chunk)."""
    TRACE_COUNTS["score_pool"] += 1

    def local(params, tokens, prompt_len, length, gold, keys):
        return R.score_solutions(spec, params, task, tokens, prompt_len, length, gold, keys[0])

    split = {"tokens", "prompt_len", "length", "gold", "keys"}
    return over_rows(local, devices, split=split)(params, tokens, prompt_len, length, gold, keys)


@functools.partial(jax.jit, static_argnames=("spec",))
def _prefill_pool(params, prompts, prompt_len, *, spec):
    TRACE_COUNTS["score_pool"] += 1
    return R.prefill_prompts(spec, params, prompts, prompt_len)


@functools.partial(jax.jit, static_argnames=("spec", "task", "devices", "width"))
def _score_suffixes(params, prefix, row_prompt, tokens, prompt_len, length, *, spec, task,
                    devices, width):
    """Scores one chunk of solutions per device, each running only its own tokens."""
    TRACE_COUNTS["score_pool"] += 1

    def local(params, prefix, row_prompt, tokens, prompt_len, length):
        return R.score_suffixes(spec, params, task, prefix, row_prompt, tokens, prompt_len,
                                length, width=width)

    split = {"row_prompt", "tokens", "prompt_len", "length"}
    return over_rows(local, devices, split=split)(params, prefix, row_prompt, tokens,
                                                  prompt_len, length)


def score_pool(src: RewardSource, task: Task, samples: Samples, problems: ProblemSet, seed: int,
               chunk: int | None = None, devices: int | Layout | None = None) -> PoolScoring:
    """Step scores ``[P, N, K]``, mask and executed FLOPs of every pooled solution.

    Fixed-size chunks of rows, one per ``data`` slice of ``devices`` side by side (a device
    count or :class:`~ttc.parallel.Layout`; default: the reward layout of
    :func:`ttc.parallel.use_layouts`, see :mod:`ttc.parallel`: the scores do not depend on it).
    A learned verifier runs each prompt once (:func:`ttc.rewards.prefill_prompts`) and the
    solutions sorted by length, each chunk only as wide as its longest solution
    (:func:`ttc.rewards.score_suffixes`); the oracle scores whole rows, each chunk with its own
    key. ``chunk``: rows per chunk (default
    :data:`LEARNED_CHUNK` for a learned verifier, 2048 for the oracle).
    """
    if src.scorer is not None:
        return _score_text(src.scorer, task, samples, problems)
    if src.spec.learned:
        return _score_learned(src, task, samples, problems, chunk or LEARNED_CHUNK, devices)
    chunk = chunk or 2048
    p, n, t = samples.tokens.shape
    tokens = samples.tokens.reshape(p * n, t)
    plen = np.repeat(problems.prompt_len, n)
    gold = np.repeat(problems.gold, n, axis=0)
    length = samples.length.reshape(-1)
    key = jax.random.key(10_000 + seed)
    chunks = []
    for i in range(0, p * n, chunk):
        idx = np.arange(i, i + chunk)
        key, sub = jax.random.split(key)
        chunks.append((np.where(idx < p * n, idx, i), sub, min(chunk, p * n - i)))
    if answers_on_host(task):  # a text task's verdicts are host work
        return _score_oracle_host(src.spec, task, tokens, plen, length, gold, chunks, (p, n))
    layout = fit_layout(devices, "reward", len(chunks))
    d, params = layout.data, on_layout(src.params, layout)
    outs, masks = [], []
    for group, padded in device_groups(chunks, d):
        idx = np.concatenate([c[0] for c in padded])
        sc, mk = _score_pool(params, jnp.asarray(tokens[idx]), jnp.asarray(plen[idx]),
                             jnp.asarray(length[idx]), jnp.asarray(gold[idx]),
                             jnp.stack([c[1] for c in padded]), spec=src.spec, task=task,
                             devices=layout)
        sc, mk = fetch((sc, mk))
        for j, (_, _, keep) in enumerate(group):
            outs.append(sc[j * chunk:j * chunk + keep])
            masks.append(mk[j * chunk:j * chunk + keep])
    k = outs[0].shape[1]
    return PoolScoring(steps=np.concatenate(outs).reshape(p, n, k),
                       mask=np.concatenate(masks).reshape(p, n, k),
                       executed=np.zeros((p, n)), prefill_executed=np.zeros((p,)))


@functools.partial(jax.jit, static_argnames=("spec",))
def _oracle_chunk(verdicts, mask, key, *, spec):
    TRACE_COUNTS["score_pool"] += 1
    return R.oracle_scores(verdicts, mask, key, spec)


def _score_oracle_host(spec: R.RewardSpec, task: Task, tokens, plen, length, gold, chunks,
                       shape: tuple[int, int]) -> PoolScoring:
    """:func:`score_pool`'s oracle for a task whose answers are host work: the verdicts of every
    step on the host (:func:`ttc.rewards.step_verdicts`), then each chunk's flips and noise
    from its own key, as the jitted oracle draws them."""
    p, n = shape
    k = task.max_steps + 1
    ends, mask = map(np.asarray, R.step_ends(task, tokens, plen, length, max_steps=k))
    ok = R.step_verdicts(task, tokens, plen, ends, mask, gold)
    steps = np.zeros((p * n, k), np.float32)
    for idx, key, keep in chunks:
        sc = np.asarray(_oracle_chunk(ok[idx], mask[idx], key, spec=spec))
        steps[idx[:keep]] = sc[:keep]
    return PoolScoring(steps=steps.reshape(p, n, k), mask=mask.reshape(p, n, k),
                       executed=np.zeros((p, n)), prefill_executed=np.zeros((p,)))


def _score_learned(src: RewardSource, task: Task, samples: Samples, problems: ProblemSet,
                   chunk: int, devices: int | Layout | None) -> PoolScoring:
    """:func:`score_pool` of a learned verifier: prompts once, solutions sorted by length."""
    p, n, t = samples.tokens.shape
    tokens = samples.tokens.reshape(p * n, t)
    plen = np.repeat(problems.prompt_len, n)
    length = samples.length.reshape(-1)
    row_prompt = np.repeat(np.arange(p), n)
    lp = problems.prompts.shape[1]
    order = np.argsort(length - plen, kind="stable")
    chunk = min(chunk, -(-p * n // 8) * 8)  # a small pool is one chunk, not mostly padding
    chunks = [order[i:i + chunk] for i in range(0, p * n, chunk)]
    layout = fit_layout(devices, "reward", len(chunks))
    d, params = layout.data, on_layout(src.params, layout)
    prefix = _prefill_pool(params, jnp.asarray(problems.prompts),
                           jnp.asarray(problems.prompt_len), spec=src.spec)
    rows = p * n
    k = task.max_steps + 1
    steps, mask = np.zeros((rows, k), np.float32), np.zeros((rows, k), bool)
    executed = np.zeros(rows)
    for group, padded in device_groups(chunks, d):
        idx = np.concatenate([np.pad(c, (0, chunk - len(c)), mode="edge") for c in padded])
        sol = int((length[idx] - plen[idx]).max())
        width = max(WIDTH_STEP, -(-sol // WIDTH_STEP) * WIDTH_STEP)
        sc, mk = _score_suffixes(params, prefix, jnp.asarray(row_prompt[idx]),
                                 jnp.asarray(tokens[idx]), jnp.asarray(plen[idx]),
                                 jnp.asarray(length[idx]), spec=src.spec, task=task,
                                 devices=layout, width=width)
        real = np.concatenate(group)
        steps[real], mask[real] = np.asarray(sc)[:len(real)], np.asarray(mk)[:len(real)]
        # every padded row and slot of the call, shared by the group's real rows
        executed[real] = d * chunk * width * src.cfg.flops_per_token(lp + width) / len(real)
    pre = np.full((p,), lp * src.cfg.flops_per_token(lp))
    return PoolScoring(steps=steps.reshape(p, n, k), mask=mask.reshape(p, n, k),
                       executed=executed.reshape(p, n), prefill_executed=pre)


def solution_steps(task: Task, tokens: np.ndarray, prompt_len: int,
                   ends: np.ndarray) -> list[str]:
    """The text of each step of one solution (its tokens up to each step end in ``ends``,
    from :func:`ttc.rewards.step_end_positions`), without the delimiter or ``EOS``."""
    tok = task.tokenizer
    delim = getattr(tok, "step_delimiter", "\n\n")
    out, start = [], prompt_len
    for e in ends:
        text = tok.decode(tokens[start:e + 1], skip_special_tokens=True)
        out.append(text.replace(delim, " ").strip())
        start = e + 1
    return out


def _score_text(scorer, task: Task, samples: Samples, problems: ProblemSet) -> PoolScoring:
    """:func:`score_pool` by a text scorer (``reward=hf``): every solution decoded, split at the
    policy's step ends, scored as ``(question, steps)``; an ORM's one score is its final
    step's, kept only for finished solutions (as a learned ORM)."""
    p, n, t = samples.tokens.shape
    k = task.max_steps + 1
    stops = stop_rule(task.tokenizer)
    plen = np.repeat(problems.prompt_len, n)
    ends, mask = R.step_end_positions(jnp.asarray(samples.tokens.reshape(p * n, t)),
                                      jnp.asarray(plen), jnp.asarray(samples.length.reshape(-1)),
                                      stops, k)
    ends, mask = np.asarray(ends).reshape(p, n, k), np.asarray(mask).reshape(p, n, k)
    queries = [(problems.texts[i],
                [solution_steps(task, samples.tokens[i, j], int(problems.prompt_len[i]),
                                ends[i, j][mask[i, j]])
                 for j in range(n)]) for i in range(p)]
    before = (scorer.flops.useful, scorer.flops.executed)
    scores = scorer.score(queries)
    steps = np.zeros((p, n, k), np.float32)
    orm = scorer.format.name == "orm"
    for i in range(p):
        for j in range(n):
            sc, m = np.asarray(scores[i][j], np.float32), int(mask[i, j].sum())
            if orm and m:
                last = int(ends[i, j, m - 1])
                finished = bool(stops.is_eos(jnp.asarray(samples.tokens[i, j, last])))
                mask[i, j] = False
                mask[i, j, m - 1] = finished
                steps[i, j, m - 1] = sc[0] if finished else 0.0
            else:
                steps[i, j, :len(sc)] = sc
    steps = np.clip(steps, R.EPS, 1 - R.EPS) * mask
    per = 1.0 / (p * n)
    return PoolScoring(steps=steps, mask=mask,
                       executed=np.full((p, n), (scorer.flops.executed - before[1]) * per),
                       prefill_executed=np.zeros((p,)),
                       useful=np.full((p, n), (scorer.flops.useful - before[0]) * per))


@dataclasses.dataclass(frozen=True, kw_only=True)
class PoolScores:
    """One verifier's step scores of every pooled solution.

    Attributes:
        steps: ``[P, N, K]`` step scores.
        mask: ``[P, N, K]`` which of them are real steps.
        seconds: wall time the scoring took.
        executed: ``[P, N]`` executed FLOPs of scoring each solution (:class:`PoolScoring`).
        prefill_executed: ``[P]`` executed FLOPs of each problem's prompt.
    """

    steps: np.ndarray
    mask: np.ndarray
    seconds: float
    executed: np.ndarray
    prefill_executed: np.ndarray
    useful: np.ndarray | None = None

    def aggregated(self, how: str) -> np.ndarray:
        """``[P, N]`` one score per solution (:func:`ttc.rewards.aggregate`)."""
        k = self.steps.shape[-1]
        return np.asarray(R.aggregate(jnp.asarray(self.steps.reshape(-1, k)),
                                      jnp.asarray(self.mask.reshape(-1, k)),
                                      how)).reshape(self.steps.shape[:2])


class ScoreMemo:
    """The scores of one pool (one seed) by each verifier, computed on first use."""

    def __init__(self, task: Task, samples: Samples, problems: ProblemSet, seed: int):
        self.task, self.samples, self.problems, self.seed = task, samples, problems, seed
        self._done: dict[VerifierKey, PoolScores] = {}

    def get(self, key: VerifierKey, src: RewardSource) -> PoolScores:
        """The pool's scores by ``src`` (the verifier ``key``), scoring it the first time."""
        if key not in self._done:
            t0 = time.time()
            sc = score_pool(src, self.task, self.samples, self.problems, self.seed)
            self._done[key] = PoolScores(steps=sc.steps, mask=sc.mask, seconds=time.time() - t0,
                                         executed=sc.executed,
                                         prefill_executed=sc.prefill_executed,
                                         useful=sc.useful)
        return self._done[key]
