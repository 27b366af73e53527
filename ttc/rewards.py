"""Reward sources: learned PRM/ORM (a model of the policy interface, :mod:`ttc.models.interface`,
with a ``scalar`` or ``lm_value`` head) and the oracle verifier.

Scores are probabilities in ``[0, 1]`` that the solution is (still) correct.

* **PRM** (process reward model; Lightman et al. 2023, trained with Monte-Carlo step labels as in
  Math-Shepherd, Wang et al. 2024): ``sigmoid`` of the score logit at each step's last token (the
  step delimiter or ``EOS``): a value head (``head='scalar'``) or the log-probability verifier of
  :mod:`ttc.models.reward` (``head='lm_value'``).
* **ORM** (outcome reward model; Cobbe et al. 2021): the same trunk, read at ``EOS`` only.
* **Oracle**: the task's exact step checker (``Task.prefix_correct``), with a ``flip`` rate and
  Gaussian ``noise`` to simulate imperfect verifiers in controlled studies. Usable inside jit.

Two ways to score:

* :func:`score_solutions` — whole solutions at once: one plain forward per row (the reference).
* :func:`prefill_prompts` / :func:`score_suffixes` — the same scores with each prompt run once
  per problem: its KV cache (and log-prob carry) is gathered to the problem's solutions, which
  then run only their own tokens, ``width`` slots per row (pool methods,
  :func:`ttc.evaluate.score_pool`).
* :func:`init_state` / :func:`consume_token` / :func:`score_new_tokens` — incremental, with the
  reward model's own KV cache, so a search step only pays for the tokens generated since the
  last call. A learned model (``RewardSpec.fused``, the default) consumes each token inside the
  policy's decode loop, one slot per row per iteration (:func:`ttc.decode.decode_with`), so it
  executes what the decode executes; unfused, the new tokens are read after the step in a fixed
  window of ``window`` slots starting at the row's reward-cache length (the reference).

Step-score aggregation (:func:`aggregate`): ``last | min | prod | mean`` over a solution's steps.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, struct
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

from ttc import flops as F
from ttc.models.interface import Cache
from ttc.models.reward import LogProbCarry, score_logits
from ttc.tasks.base import answers_on_host
from ttc.tasks.stops import StopRule, stop_rule

KINDS = ("prm", "orm", "oracle")
AGGREGATIONS = ("last", "min", "prod", "mean")
EPS = 1e-3  # scores are clipped to [EPS, 1-EPS] so that logit(score) stays finite


@dataclasses.dataclass(frozen=True, kw_only=True)
class RewardSpec:
    """Static description of a reward source (hashable: a static jit argument).

    Attributes:
        kind: ``prm`` | ``orm`` | ``oracle``.
        graphdef: the reward model's graphdef (learned kinds); its params are passed separately.
        window: slots read per incremental scoring call (>= the longest step in tokens) when
            not ``fused``.
        flip: oracle only, probability of flipping a step verdict.
        noise: oracle only, std of Gaussian noise added to the verdict (then clipped to [0, 1]).
        fused: a learned model consumes each token inside the policy's decode loop
            (:func:`consume_token`) instead of a window per step.
        external: the scores come from a text scorer outside the jitted search loop
            (``reward=hf``, :mod:`ttc.search.scored`): no reward state inside it.
    """

    kind: str
    graphdef: nnx.GraphDef | None = None
    window: int = 8
    flip: float = 0.0
    noise: float = 0.0
    fused: bool = True
    external: bool = False

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown reward kind {self.kind!r}; choose from {KINDS}")
        if self.kind != "oracle" and self.graphdef is None:
            raise ValueError(f"a {self.kind} reward needs a model graphdef")
        if not 0.0 <= self.flip <= 1.0 or self.noise < 0:
            raise ValueError("need 0 <= flip <= 1 and noise >= 0")

    @property
    def learned(self) -> bool:
        """A ttc reward model runs inside the jitted loops (not the oracle, not external)."""
        return self.kind != "oracle" and not self.external

    @property
    def per_token(self) -> bool:
        """Scores token by token inside the decode loop (a learned, fused model)."""
        return self.learned and self.fused

    @property
    def slots(self) -> int:
        """Slots one scoring call reads per row (the FLOP ledger's executed work)."""
        return 1 if self.per_token else self.window

    def cache_len(self, policy_cache_len: int) -> int:
        """The reward model's cache length beside a policy cache of ``policy_cache_len``."""
        return policy_cache_len + (0 if self.per_token else self.window)


@struct.dataclass
class RewardState:
    """Incremental scoring state, one row per search row.

    ``cache`` is the reward model's per-row state, ``(kv_cache, carry)``: its KV cache and, for a
    log-probability verifier, the running log-prob features (:class:`LogProbCarry`; ``None`` for a
    scalar head). ``length`` is how many tokens of each row have been scored, ``last_logit``
    the score logit at the last token consumed (per-token scoring). Empty for the oracle.
    ``calls`` counts batched scoring calls (executed FLOPs: ``slots`` per row each) and
    ``useful_tokens``/``useful_ctx`` the tokens scored (useful FLOPs), per slot.
    """

    cache: tuple[Cache, LogProbCarry | None] | None
    length: Int[Array, " B"]
    last_logit: Float[Array, " B"]
    useful_tokens: Int[Array, " B"]
    useful_ctx: Float[Array, " B"]
    calls: Int[Array, ""]


def step_end_positions(tokens, prompt_len, length, stops: StopRule, max_steps: int):
    """``[B, max_steps]`` positions of each step's last token (``-1`` padding) and a mask."""
    _, t = tokens.shape
    pos = jnp.arange(t)[None, :]
    is_end = (stops.ends_in_tokens(tokens, prompt_len) & (pos >= prompt_len[:, None])
              & (pos < length[:, None]))
    ends = jax.vmap(lambda m: jnp.nonzero(m, size=max_steps, fill_value=-1)[0])(is_end)
    return ends, ends >= 0


@functools.partial(jax.jit, static_argnames=("task", "max_steps"))
def step_ends(task, tokens, prompt_len, length, *, max_steps: int):
    """:func:`step_end_positions` under the task's stop rule, jitted (host callers)."""
    return step_end_positions(tokens, prompt_len, length, stop_rule(task.tokenizer), max_steps)


def _oracle_verdicts(task, tokens, prompt_len, ends, gold):
    return jax.vmap(lambda e: task.prefix_correct(tokens, prompt_len, e + 1, gold), in_axes=1,
                    out_axes=1)(ends)


_traced_verdicts = jax.jit(_oracle_verdicts, static_argnums=0)


def step_verdicts(task, tokens: np.ndarray, prompt_len: np.ndarray, ends: np.ndarray,
                  mask: np.ndarray, gold: np.ndarray) -> np.ndarray:
    """``[B, K]`` oracle verdicts (``task.prefix_correct``) of every step prefix ``tokens[b,
    :ends[b, k] + 1]``, ``False`` where ``mask`` is; host arrays in and out. Jitted for a task
    whose answers are jit-able, on the host for one whose are host work
    (:func:`ttc.tasks.base.answers_on_host`)."""
    tokens, prompt_len, ends, gold = map(np.asarray, (tokens, prompt_len, ends, gold))
    if answers_on_host(task):
        ok = np.stack([np.asarray(task.prefix_correct(tokens, prompt_len, e + 1, gold))
                       for e in ends.T], axis=1)
    else:
        ok = jax.device_get(_traced_verdicts(task, tokens, prompt_len, ends, gold))
    return np.asarray(ok, bool) & np.asarray(mask, bool)


def oracle_scores(verdicts: Bool[Array, "B K"], mask: Bool[Array, "B K"], key: PRNGKeyArray,
                  spec: RewardSpec) -> Float[Array, "B K"]:
    """The oracle's clipped step scores from its verdicts: ``spec``'s flips and noise drawn
    with ``key``, masked steps at ``EPS``."""
    return _clip(_noisy(verdicts.astype(jnp.float32), key, spec) * mask)


def _noisy(score, key, spec: RewardSpec):
    if spec.flip > 0 or spec.noise > 0:
        k1, k2 = jax.random.split(key)
        flip = jax.random.bernoulli(k1, spec.flip, score.shape)
        score = jnp.where(flip, 1.0 - score, score)
        score = jnp.clip(score + spec.noise * jax.random.normal(k2, score.shape), 0.0, 1.0)
    return score


def _clip(score):
    return jnp.clip(jnp.where(jnp.isnan(score), 0.5, score), EPS, 1.0 - EPS)


def score_solutions(
    spec: RewardSpec,
    params: nnx.State | None,
    task,
    tokens: Int[Array, "B T"],
    prompt_len: Int[Array, " B"],
    length: Int[Array, " B"],
    gold: Int[Array, "B Ls"],
    key: PRNGKeyArray,
) -> tuple[Float[Array, "B K"], Bool[Array, "B K"]]:
    """Step scores ``[B, K]`` (``K = task.max_steps + 1``) of complete solutions and their mask.

    For an ORM only the final step (``EOS``) is scored; its mask has one entry per row.
    """
    stops = stop_rule(task.tokenizer)
    ends, mask = step_end_positions(tokens, prompt_len, length, stops, task.max_steps + 1)
    if spec.kind == "oracle":
        return oracle_scores(_oracle_verdicts(task, tokens, prompt_len, ends, gold), mask, key,
                             spec), mask
    model = nnx.merge(spec.graphdef, params)
    out, _ = model(tokens)
    pos = jnp.arange(tokens.shape[1])[None, :]
    logit, _ = score_logits(model, out, tokens, solution=pos >= prompt_len[:, None],
                            consumed=length)
    s = jnp.take_along_axis(jax.nn.sigmoid(logit), jnp.maximum(ends, 0), axis=1)
    return _read_steps(spec, s, tokens, ends, mask, stops)


def _read_steps(spec: RewardSpec, s, tokens, ends, mask, stops: StopRule):
    """Clipped scores at the step ends and their mask; an ORM keeps only a final ``EOS``."""
    if spec.kind == "orm":
        last = jnp.sum(mask, axis=1) - 1
        mask = mask & (jnp.arange(mask.shape[1])[None, :] == last[:, None])
        mask = mask & stops.is_eos(jnp.take_along_axis(tokens, jnp.maximum(ends, 0), 1))
    return _clip(s) * mask, mask


def prefill_prompts(
    spec: RewardSpec, params: nnx.State, prompts: Int[Array, "P Lp"], prompt_len: Int[Array, " P"],
    cache_len: int | None = None,
) -> tuple[Cache, LogProbCarry | None]:
    """The reward model's state after each prompt: ``(kv_cache, carry)``, one row per prompt.

    The cache has ``cache_len`` slots (default: the padded prompt width ``Lp``); slots from
    ``prompt_len`` on hold padding that the solution's tokens overwrite. ``carry`` is the
    log-probability verifier's running state (:class:`LogProbCarry`; ``None`` for a scalar head).
    """
    model = nnx.merge(spec.graphdef, params)
    p, lp = prompts.shape
    kv = model.cfg.init_cache(p, lp if cache_len is None else cache_len)
    out, kv = model(prompts, cache=kv, write_pos=jnp.zeros((p,), jnp.int32))
    _, carry = score_logits(model, out, prompts, solution=jnp.zeros(prompts.shape, bool),
                            consumed=prompt_len)
    return kv, carry


def score_suffixes(
    spec: RewardSpec,
    params: nnx.State,
    task,
    prefix: tuple[Cache, LogProbCarry | None],
    row_prompt: Int[Array, " B"],
    tokens: Int[Array, "B T"],
    prompt_len: Int[Array, " B"],
    length: Int[Array, " B"],
    *,
    width: int,
) -> tuple[Float[Array, "B K"], Bool[Array, "B K"]]:
    """:func:`score_solutions` of a learned verifier, each row running only its solution.

    Args:
        prefix: :func:`prefill_prompts` of the problems' prompts (``P`` rows, ``Lp`` slots).
        row_prompt: ``[B]`` which prefix row each solution continues.
        tokens, prompt_len, length: the solutions as in :func:`score_solutions`.
        width: slots run per row, at least the longest solution (``length - prompt_len``); the
            row's cache is the prefix's ``Lp`` slots plus ``width``.

    Returns:
        The step scores and mask of :func:`score_solutions` (equal up to float rounding).
    """
    kv, carry = jax.tree.map(lambda x: x[row_prompt], prefix)
    kv = jax.tree.map(lambda x: jnp.pad(x, ((0, 0), (0, 0), (0, width), (0, 0))), kv)
    n_sol = length - prompt_len
    j = jnp.arange(width)[None, :]
    new = j < n_sol[:, None]
    idx = jnp.clip(prompt_len[:, None] + j, 0, tokens.shape[1] - 1)
    chunk = jnp.where(new, jnp.take_along_axis(tokens, idx, 1), 0)
    model = nnx.merge(spec.graphdef, params)
    out, _ = model(chunk, cache=kv, write_pos=prompt_len)
    logit, _ = score_logits(model, out, chunk, solution=new, consumed=n_sol, carry=carry)
    stops = stop_rule(task.tokenizer)
    ends, mask = step_end_positions(tokens, prompt_len, length, stops, task.max_steps + 1)
    rel = jnp.clip(ends - prompt_len[:, None], 0, width - 1)
    s = jnp.take_along_axis(jax.nn.sigmoid(logit), rel, axis=1)
    return _read_steps(spec, s, tokens, ends, mask, stops)


def aggregate(
    scores: Float[Array, "B K"], mask: Bool[Array, "B K"], how: str
) -> Float[Array, " B"]:
    """Aggregates step scores over each row's scored steps; rows with none score 0."""
    if how not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {how!r}; choose from {AGGREGATIONS}")
    n = jnp.sum(mask, axis=1)
    any_ = n > 0
    if how == "last":
        last_pos = jnp.max(jnp.where(mask, jnp.arange(scores.shape[1])[None], -1), axis=1)
        out = jnp.take_along_axis(scores, jnp.maximum(last_pos, 0)[:, None], axis=1)[:, 0]
    elif how == "min":
        out = jnp.min(jnp.where(mask, scores, jnp.inf), axis=1)
    elif how == "prod":
        out = jnp.exp(jnp.sum(jnp.where(mask, jnp.log(jnp.maximum(scores, 1e-30)), 0.0), axis=1))
    else:
        out = jnp.sum(jnp.where(mask, scores, 0.0), axis=1) / jnp.maximum(n, 1)
    return jnp.where(any_, out, 0.0)


# ---- incremental scoring (search) -------------------------------------------------------------
def init_state(spec: RewardSpec, params, prompts, prompt_len, *, num_samples: int,
               cache_len: int) -> RewardState:
    """Prefills the reward model on the prompts (once per problem) and tiles to the rows."""
    p = prompts.shape[0]
    b = p * num_samples
    rep = functools.partial(jnp.repeat, repeats=num_samples, axis=0)
    cache = None
    if spec.learned:
        cache = jax.tree.map(rep, prefill_prompts(spec, params, prompts, prompt_len,
                                                  spec.cache_len(cache_len)))
    return RewardState(cache=cache, length=rep(prompt_len.astype(jnp.int32)),
                       last_logit=jnp.zeros((b,), jnp.float32),
                       useful_tokens=jnp.zeros((b,), jnp.int32),
                       useful_ctx=jnp.zeros((b,), jnp.float32), calls=jnp.zeros((), jnp.int32))


def consume_token(spec: RewardSpec, params, rs: RewardState, tok: Int[Array, " B"],
                  pos: Int[Array, " B"], active: Bool[Array, " B"]) -> RewardState:
    """Runs the reward model on one new token per row (``tok`` at slot ``pos``), inside the
    policy's decode loop (:func:`ttc.decode.decode_with`); rows not ``active`` keep their
    carry and ``last_logit`` (their write at ``pos`` lands past their length: never read)."""
    model = nnx.merge(spec.graphdef, params)
    kv, carry = rs.cache
    out, kv = model(tok[:, None], cache=kv, write_pos=pos)
    logit, carry = score_logits(model, out, tok[:, None], solution=active[:, None],
                                consumed=active.astype(jnp.int32), carry=carry)
    return rs.replace(cache=(kv, carry), calls=rs.calls + 1,
                      last_logit=jnp.where(active, logit[:, 0], rs.last_logit))


def score_new_tokens(
    spec: RewardSpec, params, task, rs: RewardState, tokens, prompt_len, length, gold_rows, key
) -> tuple[RewardState, Float[Array, " B"]]:
    """Scores each row at its current last token, consuming the tokens since the last call
    (per-token scoring: they were consumed by :func:`consume_token` already).

    Returns the advanced state and scores ``[B]`` (meaningful for rows that advanced; the
    caller keeps the previous score of rows that did not).
    """
    t = tokens.shape[1]
    n_new = length - rs.length
    j = jnp.arange(spec.window)[None, :]
    calls = rs.calls + (0 if spec.per_token else 1)
    cache = rs.cache
    if spec.per_token:
        score = jax.nn.sigmoid(rs.last_logit)
    elif spec.learned:
        idx = jnp.clip(rs.length[:, None] + j, 0, t - 1)
        new = j < n_new[:, None]
        chunk = jnp.where(new, jnp.take_along_axis(tokens, idx, 1), 0)
        model = nnx.merge(spec.graphdef, params)
        kv, carry = rs.cache
        out, kv = model(chunk, cache=kv, write_pos=rs.length)
        logit, carry = score_logits(model, out, chunk, solution=new, consumed=n_new, carry=carry)
        cache = (kv, carry)
        last = jnp.clip(n_new - 1, 0, spec.window - 1)
        score = jax.nn.sigmoid(jnp.take_along_axis(logit, last[:, None], 1)[:, 0])
    else:
        cache = None
        ok = task.prefix_correct(tokens, prompt_len, length, gold_rows)
        score = _noisy(ok.astype(jnp.float32), key, spec)
    if spec.kind == "orm":  # an ORM only judges finished solutions
        fin = jnp.take_along_axis(tokens, jnp.maximum(length - 1, 0)[:, None], 1)[:, 0]
        score = jnp.where(stop_rule(task.tokenizer).is_eos(fin), score, 0.5)
    # positions attended by the new tokens, for the FLOP ledger (fewer in sliding windows)
    rcfg = nnx.merge(spec.graphdef, params).cfg if spec.graphdef is not None else None
    ctx = F.context_sum(rcfg, rs.length, n_new)
    rs = rs.replace(cache=cache, length=length,
                    useful_tokens=rs.useful_tokens + n_new,
                    useful_ctx=rs.useful_ctx + ctx.astype(jnp.float32), calls=calls)
    return rs, _clip(score)
