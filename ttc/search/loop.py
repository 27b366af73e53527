"""Step-level search over a fixed-shape ``[P, N]`` batch, one ``jax.jit`` per (method, N).

One iteration of the outer ``lax.while_loop`` is one reasoning step for every row:

1. **propose** — each unfinished row decodes until its step delimiter or ``EOS`` (inner
   ``while_loop``, at most ``task.max_step_len`` tokens; a longer step ends the row as
   malformed);
2. **score** — the reward source scores the new step incrementally (its own KV cache); for
   lookahead search the score is taken at the end of a ``k``-step greedy rollout instead;
3. **select** — rows are replaced by copies of others: a gather of every batched leaf of the
   state, both KV caches included (work counters excepted: work done stays done).

Methods (``SearchConfig.method``):

* ``beam`` — PRM beam search (Snell et al. 2024, "Scaling LLM Test-Time Compute Optimally can
  be More Effective than Scaling Model Parameters", §5): keep the top ``N/M`` rows of each problem
  by the current step score, expand each ``M`` times.
* ``dvts`` — diverse verifier tree search (Beeching, Tunstall & Rush 2024, HF blog "Scaling
  test-time compute"): ``N/M`` independent subtrees of ``M`` rows; each keeps its best row.
* ``lookahead`` — beam search whose candidates are scored at the end of a ``k``-step greedy
  (temperature 0) rollout (Snell et al. 2024, §5); rollout tokens are charged to the budget.
* ``pgibbs`` — particle Gibbs (Puri et al. 2025): ``sweeps`` particle filters of
  ``N / sweeps`` particles; each sweep after the first replays a reference trajectory drawn
  from the previous sweep, which resampling never removes; the answer pools every sweep.
* ``tempering`` — parallel tempering (Puri et al. 2025): ``chains`` particle filters of
  ``N / chains`` particles at weight temperatures ``T * ladder**c``, neighbouring chains
  exchanging particles by Metropolis swaps (:mod:`ttc.search.tempering`); the answer comes
  from the temperature-``T`` chain.
* ``rebase`` — reward-balanced search (Wu et al. 2024, "Inference Scaling Laws: An Empirical
  Analysis of Compute-Optimal Inference for Problem-Solving with Language Models"): finished
  rows keep their slot; the remaining width goes to the unfinished rows in proportion to
  ``softmax(r_t / T_b)`` (:mod:`ttc.search.rebase`).
* ``particle`` — particle filtering (Puri et al. 2025, "A Probabilistic Inference Approach to
  Inference-Time Scaling of LLMs using Particle-Based Monte Carlo Methods"): weights
  ``softmax(logit(r_t) / T)`` of the step score (incremental weights optional), resampling
  (multinomial | systematic | stratified | residual) every step or when ESS < threshold·N.

Finished rows are absorbing: they keep their final score and stay in the pool. In beam/DVTS/
lookahead, copies of a finished row beyond the first are marked invalid (they carry no new
information and must not be counted twice by the final vote); particle filtering keeps the
copies, which represent posterior mass. The final pick is a weighted majority vote (Snell's
"weighted best-of-N") or the argmax of the aggregated score.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, struct
from jaxtyping import Array, Bool, Float, Int

from ttc import registry as REG
from ttc import rewards as R
from ttc.decode import TRACE_COUNTS, DecodeState, SamplingParams, decode_with, prefill
from ttc.memory import check_chunk_fits
from ttc.parallel import Layout, device_groups, fetch, fit_layout, on_layout, over_rows
from ttc.search.aggregate import best_of_n, majority_vote
from ttc.search.rebase import ancestors, balanced_counts
from ttc.search.resampling import ess, resample
from ttc.search.tempering import swap_slots
from ttc.tasks.base import answers_on_host, traced_answers
from ttc.tasks.stops import stop_rule

METHODS = REG.names(REG.KIND_SEARCH)
"""The step-level search methods (:mod:`ttc.registry`)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class SearchConfig:
    """A step-level search method (hashable; static under jit).

    Attributes:
        method: ``beam`` | ``dvts`` | ``lookahead`` | ``particle`` | ``pgibbs`` |
            ``tempering`` | ``rebase``.
        beam_width: ``M``, expansions per kept row (beam, lookahead) or rows per subtree (DVTS);
            capped at ``N`` (so ``N < M`` budgets still run).
        lookahead: greedy steps of the rollout (lookahead only).
        aggregation: step-score aggregation for the final pick (``last|min|prod|mean``).
        final: ``weighted_majority`` or ``argmax``.
        incremental: particle filtering: accumulate log-weights between resampling events.
        scheme: particle filtering resampling scheme.
        sweeps: particle Gibbs: sweeps of ``N / sweeps`` particles each (``min(sweeps, N)``
            sweeps at budget ``N``, as ``beam_width``).
        chains: parallel tempering: chains of ``N / chains`` particles each (``min(chains, N)``
            chains at budget ``N``).
    """

    method: str
    beam_width: int = REG.BEAM_WIDTH.default
    lookahead: int = REG.LOOKAHEAD.default
    aggregation: str = REG.AGGREGATION.default
    final: str = REG.FINAL.default
    incremental: bool = REG.INCREMENTAL.default
    scheme: str = REG.SCHEME.default
    sweeps: int = REG.SWEEPS.default
    chains: int = REG.CHAINS.default

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown search method {self.method!r}; choose from {METHODS}")
        for p in (REG.BEAM_WIDTH, REG.LOOKAHEAD, REG.AGGREGATION, REG.FINAL, REG.INCREMENTAL,
                  REG.SCHEME):
            _check(p, getattr(self, p.name))

    def n_sweeps(self, n: int) -> int:
        """Particle Gibbs' sweeps at budget ``n``: ``min(sweeps, n)``, which must divide it (1
        for the other methods)."""
        k = min(self.sweeps, n) if self.method == "pgibbs" else 1
        if n % k:
            raise ValueError(f"budget N={n} is not a multiple of sweeps={k}")
        return k

    def n_chains(self, n: int) -> int:
        """Parallel tempering's chains at budget ``n``: ``min(chains, n)``, which must divide it
        (1 for the other methods)."""
        c = min(self.chains, n) if self.method == "tempering" else 1
        if n % c:
            raise ValueError(f"budget N={n} is not a multiple of chains={c}")
        return c

    def rows(self, n: int) -> int:
        """Rows searched at once at budget ``n``: ``n / sweeps`` for particle Gibbs, else ``n``
        (parallel tempering: all its chains)."""
        self.n_chains(n)
        return n // self.n_sweeps(n)

    def width(self, n: int) -> int:
        """Effective ``M`` for budget ``n`` (``min(M, n)``; must divide ``n``)."""
        m = min(self.beam_width, n)
        if n % m:
            raise ValueError(f"budget N={n} is not a multiple of beam_width M={m}")
        return m


@struct.dataclass
class SearchParams:
    """Traced knobs of a search (changing them does not recompile).

    Attributes:
        temperature: particle-filter weight temperature ``T`` in ``softmax(logit(r)/T)``.
        ess_threshold: resample when ``ESS < ess_threshold * N``, in ``[0, 1]`` (``1``: every
            step).
        balance_temperature: REBASE's ``T_b`` in the child allocation ``softmax(r / T_b)``.
        ladder: parallel tempering: chain ``c`` weighs by temperature ``T * ladder**c``.
    """

    temperature: Float[Array, ""]
    ess_threshold: Float[Array, ""]
    balance_temperature: Float[Array, ""]
    ladder: Float[Array, ""]

    @classmethod
    def make(cls, temperature: float = REG.TEMPERATURE.default,
             ess_threshold: float = REG.ESS_THRESHOLD.default,
             balance_temperature: float = REG.BALANCE_TEMPERATURE.default,
             ladder: float = REG.LADDER.default) -> SearchParams:
        """Checks the knobs (:data:`ttc.registry.TEMPERATURE`, :data:`ttc.registry.ESS_THRESHOLD`,
        :data:`ttc.registry.BALANCE_TEMPERATURE`, :data:`ttc.registry.LADDER`) and makes them
        traced scalars; ``ValueError`` if one is out of range."""
        _check(REG.TEMPERATURE, temperature)
        _check(REG.ESS_THRESHOLD, ess_threshold)
        _check(REG.BALANCE_TEMPERATURE, balance_temperature)
        _check(REG.LADDER, ladder)
        return cls(temperature=jnp.asarray(temperature, jnp.float32),
                   ess_threshold=jnp.asarray(ess_threshold, jnp.float32),
                   balance_temperature=jnp.asarray(balance_temperature, jnp.float32),
                   ladder=jnp.asarray(ladder, jnp.float32))


def _check(p: REG.ParamSpec, value: object) -> None:
    why = p.validate(value)
    if why is not None:
        raise ValueError(f"{p.name}={value!r} is {why}; it must be {p.allowed()}")


@struct.dataclass
class SearchState:
    """The outer loop's carry. Batched leaves are ``[B]`` with ``B = P * N``."""

    dec: DecodeState
    rew: R.RewardState
    last: Float[Array, " B"]  # latest step score
    min: Float[Array, " B"]
    logprod: Float[Array, " B"]
    sum: Float[Array, " B"]
    count: Int[Array, " B"]
    logw: Float[Array, " B"]  # particle log-weights (incremental mode)
    logit_sum: Float[Array, " B"]  # sum of the step scores' logits (tempering's energy)
    valid: Bool[Array, " B"]  # False for redundant copies of a finished row
    moved: Bool[Array, " B"]  # the row produced a new step in the latest iteration
    # lookahead rollout work (per slot), charged separately in the ledger
    look_tokens: Int[Array, " B"]
    look_ctx: Float[Array, " B"]
    look_rew_tokens: Int[Array, " B"]
    look_rew_ctx: Float[Array, " B"]
    look_steps: Int[Array, ""]
    look_rew_calls: Int[Array, ""]
    step: Int[Array, ""]
    # particle Gibbs: each row's reference trajectory and the rows that replay it (not gathered)
    ref_tokens: Int[Array, "B T"] | None = None
    forced: Bool[Array, " B"] | None = None


def gather_rows(s: SearchState, idx: Int[Array, " B"]) -> SearchState:
    """Replaces row ``b`` by row ``idx[b]`` in every batched leaf but the work counters."""
    take = functools.partial(jnp.take, indices=idx, axis=0)
    d = s.dec
    dec = d.replace(tokens=take(d.tokens), length=take(d.length), prompt_len=take(d.prompt_len),
                    cache=jax.tree.map(take, d.cache), logits=take(d.logits),
                    logprob=take(d.logprob), done=take(d.done))
    rew = s.rew.replace(cache=jax.tree.map(take, s.rew.cache), length=take(s.rew.length))
    return s.replace(dec=dec, rew=rew, last=take(s.last), min=take(s.min),
                     logprod=take(s.logprod), sum=take(s.sum), count=take(s.count),
                     logw=take(s.logw), logit_sum=take(s.logit_sum), valid=take(s.valid),
                     moved=take(s.moved))


def final_weights(s: SearchState, how: str) -> Float[Array, " B"]:
    return {
        "last": lambda: s.last,
        "min": lambda: s.min,
        "prod": lambda: jnp.exp(s.logprod),
        "mean": lambda: s.sum / jnp.maximum(s.count, 1),
    }[how]()


def _rollout_score(policy, reward, task, s: SearchState, k: int, *, score: bool = True):
    """Greedy ``k``-step rollout from every row (lookahead search): the state with the
    rollout's work counted, the reward at the rollout's end (``score=False``: the rows'
    current scores) and the rolled-out decode state."""
    _, _, rparams, gold_rows = policy
    greedy = SamplingParams.make(0.0)

    def one(_, carry):
        dec, rew, score_ = carry
        before = dec.length
        dec, rew = _decode_step(policy, reward, task, dec, rew, greedy)
        if not score:  # a text scorer reads the rollout's end outside the loop
            return dec, rew, score_
        rew, r = R.score_new_tokens(reward, rparams, task, rew, dec.tokens, dec.prompt_len,
                                    dec.length, gold_rows, dec.key)
        return dec, rew, jnp.where(dec.length > before, r, score_)

    dec, rew, end_score = jax.lax.fori_loop(0, k, one, (s.dec, s.rew, s.last))
    s = s.replace(
        look_tokens=s.look_tokens + dec.useful_tokens - s.dec.useful_tokens,
        look_ctx=s.look_ctx + dec.useful_ctx - s.dec.useful_ctx,
        look_steps=s.look_steps + dec.executed_steps - s.dec.executed_steps,
        look_rew_tokens=s.look_rew_tokens + rew.useful_tokens - s.rew.useful_tokens,
        look_rew_ctx=s.look_rew_ctx + rew.useful_ctx - s.rew.useful_ctx,
        look_rew_calls=s.look_rew_calls + rew.calls - s.rew.calls,
    )
    return s, end_score, dec


def _decode_step(policy, reward, task, dec: DecodeState, rew: R.RewardState, sp, forced=None):
    """One step of every unfinished row; a per-token reward model consumes each token as it
    is sampled (:func:`ttc.rewards.consume_token`); ``forced`` rows replay given tokens."""
    graphdef, params, rparams, _ = policy
    tok = task.tokenizer
    hook = functools.partial(R.consume_token, reward, rparams) if reward.per_token else None
    return decode_with(graphdef, params, dec, sp, rew, hook, stops=stop_rule(tok),
                       pad_id=tok.PAD, max_steps=task.max_step_len, forced=forced)


def propose(policy, reward, task, s: SearchState, sp):
    """Every unfinished row decodes one reasoning step (a step longer than
    ``task.max_step_len`` ends the row as malformed).

    Returns ``(s, advanced, key)``: the new state, the rows that produced tokens and a key for
    this step's scoring."""
    tok = task.tokenizer
    before = s.dec.length
    stops = stop_rule(tok)
    forced = None if s.forced is None else (s.ref_tokens, s.forced)
    dec, rew = _decode_step(policy, reward, task, s.dec, s.rew, sp, forced)
    advanced = dec.length > before
    at = lambda i: jnp.take_along_axis(dec.tokens, jnp.maximum(i, 0)[:, None], 1)[:, 0]  # noqa: E731
    last = dec.length - 1
    ended = stops.is_step_end(at(last), at(last - 1), last - 1 >= dec.prompt_len)
    malformed = advanced & ~dec.done & ~ended
    dec = dec.replace(done=dec.done | malformed)
    key, sub = jax.random.split(dec.key)
    return s.replace(dec=dec.replace(key=key), rew=rew), advanced, sub


def record(s: SearchState, r: Float[Array, " B"], advanced: Bool[Array, " B"]) -> SearchState:
    """Takes ``r`` as the newest step score of the rows that ``advanced`` (the others keep
    theirs) and updates the score aggregates."""
    r = jnp.where(advanced, r, s.last)
    adv = advanced.astype(jnp.float32)
    return s.replace(
        last=r,
        min=jnp.where(advanced, jnp.minimum(s.min, r), s.min),
        logprod=s.logprod + adv * jnp.log(r),
        sum=s.sum + adv * r,
        logit_sum=s.logit_sum + adv * (jnp.log(r) - jnp.log1p(-r)),
        count=s.count + advanced.astype(jnp.int32),
        moved=advanced,
        step=s.step + 1,
    )


def propose_and_score(policy, reward, task, cfg: SearchConfig, s: SearchState, sp) -> SearchState:
    """One reasoning step for every unfinished row, then its score (updates aggregates)."""
    _, _, rparams, gold_rows = policy
    s, advanced, sub = propose(policy, reward, task, s, sp)
    dec = s.dec
    rew, r = R.score_new_tokens(reward, rparams, task, s.rew, dec.tokens, dec.prompt_len,
                                dec.length, gold_rows, sub)
    s = s.replace(rew=rew)
    if cfg.method == "lookahead" and cfg.lookahead > 0:
        s2, r_look, _ = _rollout_score(policy, reward, task, s, cfg.lookahead)
        s = s2.replace(dec=s.dec, rew=s.rew)  # the rollout itself is discarded
        r = jnp.where(dec.done, r, r_look)
    return record(s, r, advanced)


def select(cfg: SearchConfig, s: SearchState, hp: SearchParams, n: int):
    """Ancestor indices ``[B]`` (global rows) for every row; identity for finished problems."""
    b = s.last.shape[0]
    p = b // n
    done = s.dec.done.reshape(p, n)
    problem_done = jnp.all(done, axis=1, keepdims=True)
    base = (jnp.arange(p) * n)[:, None]
    ident = jnp.broadcast_to(jnp.arange(n)[None, :], (p, n))
    if cfg.method in PARTICLE_METHODS:
        return _particle_select(cfg, s, hp, n, problem_done=problem_done)
    if cfg.method == "rebase":
        return s, *_rebase_select(s, hp, n, problem_done=problem_done)
    m = cfg.width(n)
    score = jnp.where(s.valid, s.last, -jnp.inf).reshape(p, n)
    if cfg.method == "dvts":
        g = score.reshape(p, n // m, m)
        best = jnp.argmax(g, axis=-1)  # [P, n/m], first index on ties
        top = best + (jnp.arange(n // m) * m)[None, :]
    else:  # beam, lookahead
        top = jnp.argsort(-score, axis=-1, stable=True)[:, : n // m]
    anc = jnp.repeat(top, m, axis=-1)  # each kept row expanded m times
    anc = jnp.where(problem_done, ident, anc)
    first = (jnp.arange(n) % m == 0)[None, :] | problem_done
    idx = (anc + base).reshape(b)
    return s, idx, first.reshape(b)


PARTICLE_METHODS = ("particle", "pgibbs", "tempering")
"""The methods whose selection is particle resampling (:func:`_particle_select`)."""


def _particle_select(cfg: SearchConfig, s: SearchState, hp: SearchParams, n: int, *,
                     problem_done):
    """Particle resampling within each of a problem's chains (one chain but for parallel
    tempering, whose chain ``c`` weighs by ``T * ladder**c``), then tempering's swaps."""
    b = s.last.shape[0]
    c = cfg.n_chains(n)
    m = n // c  # particles per chain
    g = b // m  # chains in the batch
    chain = jnp.arange(g) % c
    temps = jnp.where(chain == 0, hp.temperature, hp.temperature * hp.ladder ** chain)
    logit = jnp.log(s.last) - jnp.log1p(-s.last)
    step_lw = logit.reshape(g, m) / temps[:, None]
    if cfg.incremental:  # a finished particle receives no new evidence: weight factor 1
        lw = s.logw.reshape(g, m) + jnp.where(s.moved.reshape(g, m), step_lw, 0.0)
    else:  # Puri et al.: the weight is the latest step score (finished ones keep theirs)
        lw = step_lw
    key, sub = jax.random.split(s.dec.key)
    need = (ess(lw) < hp.ess_threshold * m)[:, None] | (hp.ess_threshold >= 1.0)
    # resample after every iteration in which some particle of the chain moved, the last one
    # included (its weights matter); a settled chain is left alone
    moved_any = jnp.any(s.moved.reshape(g, m), axis=1, keepdims=True)
    need = need & moved_any
    ident = jnp.broadcast_to(jnp.arange(m)[None, :], (g, m))
    anc = jnp.where(need, resample(sub, lw, cfg.scheme), ident)
    if s.forced is not None:  # conditional SMC: the reference keeps its slot
        anc = jnp.where(s.forced.reshape(g, m), ident, anc)
    # after resampling the offspring carry equal weight; otherwise weights accumulate
    new_lw = jnp.where(need, 0.0, lw) if cfg.incremental else jnp.zeros_like(lw)
    idx = (anc + (jnp.arange(g) * m)[:, None]).reshape(b)
    if c > 1:
        key, sub = jax.random.split(key)
        idx, new_lw = _swap(cfg, s, idx, new_lw, logit, sub, temps[:c], c, m,
                            settled=problem_done[:, 0], resampled=need.reshape(-1, c))
    s = s.replace(dec=s.dec.replace(key=key), logw=new_lw.reshape(b))
    return s, idx, jnp.ones((b,), bool)  # particle copies all stay valid


def _swap(cfg: SearchConfig, s: SearchState, idx, lw, logit, key, temps, c: int, m: int, *,
          settled, resampled):
    """Parallel tempering's swap round (:func:`ttc.search.tempering.swap_slots`) on the
    resampled population: slot ``(chain, j)`` takes the state of slot ``(source, j)``. The
    energy is the particle's summed step logits (incremental weights) or its latest step's;
    with incremental weights a problem swaps only when all its chains have just resampled
    (equal weights within each chain)."""
    p = idx.shape[0] // (c * m)
    energy = s.logit_sum if cfg.incremental else logit
    e = jnp.take(energy, idx).reshape(p, c, m)
    active = ~settled & (jnp.all(resampled, axis=1) if cfg.incremental else True)
    source, _ = swap_slots(key, e, 1.0 / temps, s.step % 2, active)
    idx = jnp.take_along_axis(idx.reshape(p, c, m), source, axis=1).reshape(-1)
    lw = jnp.take_along_axis(lw.reshape(p, c, m), source, axis=1)
    return idx, lw


def _rebase_select(s: SearchState, hp: SearchParams, n: int, *, problem_done):
    """REBASE (:mod:`ttc.search.rebase`): each counted finished row keeps one slot, every
    unfinished row gets children in proportion to ``softmax(last / T_b)``."""
    b = s.last.shape[0]
    p = b // n
    done = s.dec.done.reshape(p, n)
    kept = done & s.valid.reshape(p, n)
    width = n - kept.sum(axis=1)
    counts = balanced_counts(s.last.reshape(p, n), ~done, width, hp.balance_temperature)
    anc = ancestors(counts + kept.astype(jnp.int32))
    anc = jnp.where(problem_done, jnp.arange(n)[None, :], anc)
    first = jnp.concatenate([jnp.ones((p, 1), bool), anc[:, 1:] != anc[:, :-1]], axis=1)
    idx = (anc + (jnp.arange(p) * n)[:, None]).reshape(b)
    return idx, (first | problem_done).reshape(b)


GATHER_SLOTS = 8
"""Cache slots per piece of the selection gather's loop (:func:`gather_rows_window`)."""


def gather_rows_window(s: SearchState, idx: Int[Array, " B"]) -> SearchState:
    """:func:`gather_rows`, with the same observable result at a fraction of the cost.

    The policy's KV cache is most of the state, and only its slots ``[lo, hi)`` need to move,
    ``lo`` the shortest prompt and ``hi`` the longest row: below ``lo`` every row holds its
    problem's prompt, identical in all rows of the problem (ancestors are always rows of the same
    problem), and slots at or past a row's ``length`` are never read before they are written
    (the causal mask; :mod:`ttc.decode`). The window is copied in pieces of ``GATHER_SLOTS``
    slots by a loop whose trip count is the window's (in place; a ``lax.switch`` over static
    widths copies the whole state on XLA:CPU), and not at all when ``idx`` keeps every row in
    place. Every other leaf (the reward state included) is gathered whole, as in
    :func:`gather_rows`.
    """
    b = idx.shape[0]
    t = s.dec.cache_len
    w = min(GATHER_SLOTS, t)
    lo = jnp.clip(jnp.min(s.dec.prompt_len), 0, t)
    hi = jnp.clip(jnp.max(s.dec.length), lo, t)
    moves = jnp.any(idx != jnp.arange(b))
    pieces = jnp.where(moves, -(-(hi - lo) // w), 0)
    slot = jnp.arange(w)[None, None, :, None]

    def is_kv(c):
        return c.ndim == 4 and c.shape[0] == b and c.shape[2] == t  # [B, H, T, Dh]

    def piece(k, cache):
        nominal = lo + k * w
        start = jnp.minimum(nominal, t - w)  # the last piece may overlap the one before it:
        # its slots before ``nominal`` are already gathered and must not be gathered twice

        def one(c):
            if not is_kv(c):
                return c
            win = jax.lax.dynamic_slice_in_dim(c, start, w, axis=2)
            new = jnp.where(start + slot >= nominal, jnp.take(win, idx, axis=0), win)
            return jax.lax.dynamic_update_slice_in_dim(c, new, start, axis=2)

        return jax.tree.map(one, cache)

    cache = jax.lax.fori_loop(0, pieces, piece, s.dec.cache)
    cache = jax.tree.map(lambda c: c if is_kv(c) else jnp.take(c, idx, axis=0), cache)
    rest = gather_rows(s.replace(dec=s.dec.replace(cache=None)), idx)
    return rest.replace(dec=rest.dec.replace(cache=cache))


def apply_selection(s: SearchState, idx, first) -> SearchState:
    s = gather_rows_window(s, idx)
    # a finished row's extra copies carry no new information: drop them from the final vote
    return s.replace(valid=s.valid & (first | ~s.dec.done))


def init_search(policy, reward, task, prompts, prompt_len, key, *, n: int, cache_len: int):
    graphdef, params, rparams, _ = policy
    dec = prefill(graphdef, params, prompts, prompt_len, key, num_samples=n, cache_len=cache_len)
    rew = R.init_state(reward, rparams, prompts, prompt_len, num_samples=n, cache_len=cache_len)
    b = dec.batch
    zf, zi = jnp.zeros((b,), jnp.float32), jnp.zeros((b,), jnp.int32)
    return SearchState(
        dec=dec, rew=rew, last=jnp.full((b,), 0.5), min=jnp.ones((b,)), logprod=zf, sum=zf,
        count=zi, logw=zf, logit_sum=zf, valid=jnp.ones((b,), bool), moved=jnp.zeros((b,), bool),
        look_tokens=zi, look_ctx=zf,
        look_rew_tokens=zi, look_rew_ctx=zf, look_steps=jnp.zeros((), jnp.int32),
        look_rew_calls=jnp.zeros((), jnp.int32), step=jnp.zeros((), jnp.int32),
    )


def finish(task, cfg: SearchConfig, s: SearchState, n: int):
    """Final pick per problem and the per-row answers/weights."""
    b = s.last.shape[0]
    p = b // n
    answers = traced_answers(task, s.dec.tokens, s.dec.prompt_len).reshape(p, n)
    w = final_weights(s, cfg.aggregation).reshape(p, n)
    valid = s.valid.reshape(p, n)
    if cfg.method == "tempering":  # the answer comes from the temperature-T chain
        valid = valid & (jnp.arange(n) < n // cfg.n_chains(n))[None, :]
    return pick(cfg, answers, w, valid), answers, w, valid


def pick(cfg: SearchConfig, answers: Int[Array, "P N"], w: Float[Array, "P N"],
         valid: Bool[Array, "P N"]) -> Int[Array, " P"]:
    """The final answer of each problem among its valid rows (``cfg.final``)."""
    if cfg.final == "weighted_majority":
        return majority_vote(answers, w, valid)
    best = best_of_n(jnp.where(answers >= 0, w, -jnp.inf), valid & (answers >= 0))
    return jnp.take_along_axis(answers, best[:, None], 1)[:, 0]


EXECUTED_COUNTERS = ("dec_steps", "rew_calls", "look_steps", "look_rew_calls")
"""The :class:`SearchWork` fields that count executed work (batched loop iterations)."""


@struct.dataclass(kw_only=True)
class SearchWork:
    """Work counters of a search run.

    In :class:`SearchResult` every field is ``[P]``: per problem, summed over the problem's
    ``N`` rows. Useful counts follow the rows' slots, not their ancestry: a step generated in a
    slot stays counted when selection replaces the slot's row. Executed counts are loop
    iterations of the problem's chunk times its ``N`` rows, plus its share of the chunk's padding
    problems and of spare devices' repeats (:func:`run_search`). Inside the jitted chunk
    (:func:`_search_chunk`) the useful counters are ``[B]`` per row and the
    :data:`EXECUTED_COUNTERS` and ``iterations`` are ``[1]``.

    Attributes:
        dec_tokens: policy tokens generated for the problem's proposed steps (useful).
        dec_ctx: sum of those tokens' context lengths (positions attended), for the ledger.
        dec_steps: executed policy decode row-iterations (each over the whole cache).
        rew_tokens: tokens the reward model scored incrementally (useful).
        rew_ctx: sum of those tokens' context lengths.
        rew_calls: executed incremental reward-scoring row-calls (each reads ``window`` slots).
        look_tokens: policy tokens of the lookahead rollouts (useful; lookahead search only).
        look_ctx: sum of those tokens' context lengths.
        look_steps: executed rollout decode row-iterations.
        look_rew_tokens: rollout tokens the reward model scored (useful).
        look_rew_ctx: sum of those tokens' context lengths.
        look_rew_calls: executed reward-scoring row-calls of the rollouts.
        iterations: outer-loop iterations (reasoning steps) of the problem's chunk; not work.
    """

    dec_tokens: np.ndarray
    dec_ctx: np.ndarray
    dec_steps: np.ndarray
    rew_tokens: np.ndarray
    rew_ctx: np.ndarray
    rew_calls: np.ndarray
    look_tokens: np.ndarray
    look_ctx: np.ndarray
    look_steps: np.ndarray
    look_rew_tokens: np.ndarray
    look_rew_ctx: np.ndarray
    look_rew_calls: np.ndarray
    iterations: np.ndarray

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The field names, in declaration order."""
        return tuple(f.name for f in dataclasses.fields(cls))

    @property
    def tokens(self) -> np.ndarray:
        """Policy tokens generated per problem: proposed steps plus lookahead rollouts."""
        return self.dec_tokens + self.look_tokens

    def mean(self) -> SearchWork:
        """Every counter's mean over problems (0-d arrays)."""
        return jax.tree.map(lambda v: np.asarray(np.mean(v)), self)

    def total(self) -> SearchWork:
        """Every counter's sum over problems (0-d arrays)."""
        return jax.tree.map(lambda v: np.asarray(np.sum(v)), self)


@struct.dataclass(kw_only=True)
class _ChunkOut:
    """What one jitted chunk returns (leading axes concatenated over devices)."""

    chosen: Int[Array, " P"]
    answers: Int[Array, "P N"]
    weights: Float[Array, "P N"]
    valid: Bool[Array, "P N"]
    tokens: Int[Array, "P N T"]
    length: Int[Array, "P N"]
    work: SearchWork


@functools.partial(
    jax.jit,
    static_argnames=("graphdef", "reward", "task", "cfg", "num_samples", "cache_len", "devices"),
)
def _search_jit(graphdef, params, rparams, prompts, prompt_len, gold, keys, sp, hp, *, reward,
                task, cfg, num_samples, cache_len, devices) -> _ChunkOut:
    """One chunk of problems per device (``jax.shard_map``; ``keys`` is ``[devices]``, one
    per chunk). Per-problem and per-row outputs are concatenated in chunk order; the loop
    counters are ``[devices]``."""
    TRACE_COUNTS["search"] += 1
    local = functools.partial(_search_chunk, graphdef, reward=reward, task=task, cfg=cfg,
                              num_samples=num_samples, cache_len=cache_len)
    return over_rows(local, devices, split={"prompts", "prompt_len", "gold", "keys"})(
        params, rparams, prompts, prompt_len, gold, keys, sp, hp)


def _search_chunk(graphdef, params, rparams, prompts, prompt_len, gold, keys, sp, hp, *, reward,
                  task, cfg, num_samples, cache_len) -> _ChunkOut:
    """Searches one chunk of problems (``keys`` is ``[1]``) on one device."""
    key = keys[0]
    n = cfg.rows(num_samples)
    gold_rows = jnp.repeat(gold, n, axis=0)
    policy = (graphdef, params, rparams, gold_rows)
    s = init_search(policy, reward, task, prompts, prompt_len, key, n=n, cache_len=cache_len)
    if cfg.method == "pgibbs":
        return _particle_gibbs(policy, reward, task, cfg, s, sp, hp, n, key,
                               sweeps=cfg.n_sweeps(num_samples))
    return chunk_outputs(task, cfg, _search_loop(policy, reward, task, cfg, s, sp, hp, n), n)


def _search_loop(policy, reward, task, cfg: SearchConfig, s: SearchState, sp, hp,
                 n: int) -> SearchState:
    """Propose, score and select until every row is done (or ``task.max_steps + 1`` steps)."""
    max_iter = task.max_steps + 1

    def cond(s):
        return jnp.any(~s.dec.done) & (s.step < max_iter)

    def body(s):
        s = propose_and_score(policy, reward, task, cfg, s, sp)
        s, idx, first = select(cfg, s, hp, n)
        return apply_selection(s, idx, first)

    return jax.lax.while_loop(cond, body, s)


def _particle_gibbs(policy, reward, task, cfg: SearchConfig, s0: SearchState, sp, hp, n: int,
                    key, *, sweeps: int) -> _ChunkOut:
    """Particle Gibbs (Puri et al. 2025, after Andrieu, Doucet & Holenstein 2010's conditional
    SMC): ``sweeps`` particle filters of ``n`` particles from the same prefilled prompts.
    In every sweep after the first, slot 0 of each problem replays a reference trajectory, drawn
    from the previous sweep's particles by their importance weights ``softmax(logw)`` (uniform
    after a final resampling), and resampling never replaces it (its slot keeps itself; the
    other slots may copy it). The outputs hold every sweep's particles, sweep-major within each
    problem (``N = sweeps * n`` rows), and the final pick is over all of them."""
    b = s0.last.shape[0]
    p = b // n
    slot0 = jnp.arange(b) % n == 0

    def sweep(ref_tokens, k):
        s = s0.replace(dec=s0.dec.replace(key=jax.random.fold_in(key, k)),
                       ref_tokens=ref_tokens, forced=slot0 & (k > 0))
        s = _search_loop(policy, reward, task, cfg, s, sp, hp, n)
        j = jax.random.categorical(jax.random.fold_in(key, sweeps + k),
                                   s.logw.reshape(p, n), axis=-1)
        ref = jnp.repeat(jnp.take(s.dec.tokens, jnp.arange(p) * n + j, axis=0), n, axis=0)
        return ref, chunk_outputs(task, cfg, s.replace(ref_tokens=None, forced=None), n)

    _, outs = jax.lax.scan(sweep, s0.dec.tokens, jnp.arange(sweeps))
    return _merge_sweeps(cfg, outs, p, sweeps)


def _merge_sweeps(cfg: SearchConfig, outs: _ChunkOut, p: int, sweeps: int) -> _ChunkOut:
    """One chunk's outputs from ``[S, ...]`` per-sweep outputs: rows ``[P, S * n]`` (each
    problem's sweeps in order), useful counters per row, executed counters summed over the
    sweeps and divided by ``S`` (the collector charges them per row of the whole budget)."""

    def rows(x):  # [S, P, n, ...] -> [P, S * n, ...]
        x = jnp.moveaxis(x.reshape(sweeps, p, -1, *x.shape[3:]), 0, 1)
        return x.reshape(p, -1, *x.shape[3:])

    answers, w, valid = rows(outs.answers), rows(outs.weights), rows(outs.valid)
    work = {}
    for name in SearchWork.names():
        v = getattr(outs.work, name)  # [S, B] or [S, 1]
        if name == "iterations":
            work[name] = v.sum(axis=0)
        elif name in EXECUTED_COUNTERS:
            work[name] = v.sum(axis=0).astype(jnp.float32) / sweeps
        else:
            work[name] = rows(v.reshape(sweeps, p, -1)).reshape(-1)
    return _ChunkOut(chosen=pick(cfg, answers, w, valid), answers=answers, weights=w,
                     valid=valid, tokens=rows(outs.tokens), length=rows(outs.length),
                     work=SearchWork(**work))


_pick_jit = jax.jit(pick, static_argnums=0)


def host_answers(task, cfg: SearchConfig, out: _ChunkOut, prompt_len: np.ndarray) -> _ChunkOut:
    """A fetched chunk's answers and picks computed on the host, for a task whose answers are
    host work (:func:`ttc.tasks.base.answers_on_host`; the jitted chunk left placeholders).
    ``prompt_len``: ``[P]`` of the chunk's problems (all devices' chunks, in order)."""
    if not answers_on_host(task):
        return out
    tokens = np.asarray(out.tokens)
    p, n, t = tokens.shape
    answers = np.asarray(task.extract_answer(tokens.reshape(p * n, t),
                                             np.repeat(np.asarray(prompt_len), n)))
    answers = answers.reshape(p, n).astype(np.int32)
    chosen = _pick_jit(cfg, jnp.asarray(answers), jnp.asarray(out.weights),
                       jnp.asarray(out.valid))
    return out.replace(answers=answers, chosen=np.asarray(chosen))


def chunk_outputs(task, cfg: SearchConfig, s: SearchState, n: int) -> _ChunkOut:
    """A finished chunk's final picks, rows and work counters."""
    chosen, answers, w, valid = finish(task, cfg, s, n)
    work = SearchWork(
        dec_tokens=s.dec.useful_tokens, dec_ctx=s.dec.useful_ctx,
        dec_steps=s.dec.executed_steps[None],
        rew_tokens=s.rew.useful_tokens, rew_ctx=s.rew.useful_ctx, rew_calls=s.rew.calls[None],
        look_tokens=s.look_tokens, look_ctx=s.look_ctx, look_steps=s.look_steps[None],
        look_rew_tokens=s.look_rew_tokens, look_rew_ctx=s.look_rew_ctx,
        look_rew_calls=s.look_rew_calls[None], iterations=s.step[None],
    )
    return _ChunkOut(chosen=chosen, answers=answers, weights=w, valid=valid,
                     tokens=s.dec.tokens.reshape(-1, n, s.dec.tokens.shape[1]),
                     length=s.dec.length.reshape(-1, n), work=work)


CHUNK_ROWS = 128
"""Default rows per search call: small chunks of length-sorted problems waste few iterations on
finished rows, and on this CPU a 128-row batch is as fast per row-step as a 1,024-row one
(``docs/BENCHMARKS.md``, methods section)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class SearchResult:
    """Host arrays of one search run over ``P`` problems.

    Attributes:
        chosen: ``[P]`` final answers.
        answers: ``[P, N]`` answers of the final rows.
        weights: ``[P, N]`` their aggregated scores.
        valid: ``[P, N]`` rows that count in the final pick.
        work: per-problem work counters (:class:`SearchWork`).
        cache_len: slots of the policy's KV cache.
        window: slots read per row by one reward-scoring call (1 for per-token scoring).
        reward_cache_len: slots of the reward model's KV cache.
        scorer: a text scorer's work per problem (``reward=hf``; ``None`` otherwise).
    """

    chosen: np.ndarray
    answers: np.ndarray
    weights: np.ndarray
    valid: np.ndarray
    work: SearchWork
    cache_len: int
    window: int
    reward_cache_len: int
    scorer: ScorerWork | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class ScorerWork:
    """FLOPs of a text scorer (:class:`ttc.hub.session.ScoringSession`) in a search run, ``[P]``
    per problem: each chunk's totals shared equally by its problems (padding included).

    Attributes:
        useful: the scored steps' new tokens at their own context, plus the prefix prefills.
        executed: what the padded batches computed.
        look_useful: the same for lookahead rollouts' ends (scored, not kept).
        look_executed: their executed FLOPs.
        rescored: rows re-scored from before their first step (tokens merged across it).
    """

    useful: np.ndarray
    executed: np.ndarray
    look_useful: np.ndarray
    look_executed: np.ndarray
    rescored: np.ndarray


def run_search(
    graphdef: nnx.GraphDef,
    params: nnx.State,
    reward: R.RewardSpec,
    reward_params,
    task,
    prompts: np.ndarray,
    prompt_len: np.ndarray,
    gold: np.ndarray,
    *,
    cfg: SearchConfig,
    num_samples: int,
    sampling: SamplingParams,
    key,
    hp: SearchParams | None = None,
    max_rows: int = 4096,
    chunk_rows: int = CHUNK_ROWS,
    devices: int | Layout | None = None,
    scorer=None,
    questions: Sequence[str] | None = None,
) -> SearchResult:
    """Runs ``cfg`` with ``num_samples`` rows per problem, in fixed-size chunks of problems.

    A chunk's ``while_loop`` runs until its slowest row has finished, and every row of the chunk
    is computed at every iteration (finished rows included: executed, not useful work). So
    problems are queued longest prompt first, ties by content (on the default task the prompt
    length fixes the number of steps, so a chunk's problems finish together), in small chunks
    of ``min(max_rows, max(chunk_rows, num_samples))`` rows (at least one problem; fewer where
    the devices' free memory cannot hold them, :func:`ttc.memory.plan_rows`, and a policy that
    cannot fit one problem's rows raises :class:`ttc.errors.ConfigError` before anything
    compiles). Each chunk
    draws from its own split of ``key``, so a problem's result depends on the problems sorted
    into its chunk, not on the caller's order of the problem set. The last chunk is padded with
    copies of its last problem; the padding rows' executed work is charged to its problems.

    With several ``data`` slices in ``devices`` (a device count or a
    :class:`~ttc.parallel.Layout`; default: the policy layout of :func:`ttc.parallel.use_layouts`,
    else every device of :func:`ttc.parallel.sampler_devices`) consecutive chunks run side by
    side, one per slice, in one call; policy and reward parameters are moved onto the layout's
    mesh (:func:`ttc.parallel.on_layout`). A chunk's result is the same for any layout
    (same problems, same key). Where the chunks do not fill the last call, its spare devices
    re-run that call's last chunk; their executed work is charged to its problems.

    With a text ``scorer`` (:class:`ttc.hub.reward.HubReward`, ``reward=hf``; ``reward`` then
    has ``external`` set and ``questions`` holds each problem's text) the steps are scored on
    the host between jitted steps (:func:`ttc.search.scored.search_chunk`), one chunk at a time
    on one device; so is the oracle of a task whose answers are host work
    (:func:`ttc.tasks.base.answers_on_host`: a text task's outcome oracle).
    """
    hp = SearchParams.make() if hp is None else hp
    if cfg.method in ("beam", "dvts", "lookahead"):
        cfg.width(num_samples)  # validates N vs M early
    cfg.rows(num_samples)  # and N vs sweeps
    p = prompts.shape[0]
    cache_len = task.max_prompt_len + task.max_solution_len
    rows_per_call = min(max_rows, max(chunk_rows, num_samples))
    check_chunk_fits(nnx.merge(graphdef, params).cfg, rows=rows_per_call, cache_len=cache_len,
                     min_rows=cfg.rows(num_samples), layout=fit_layout(devices, "policy", 1))
    per_chunk = max(1, min(p, rows_per_call // num_samples))
    # longest prompt first, ties by prompt content: chunks do not depend on the caller's order
    order = np.lexsort((*np.asarray(prompts).T[::-1], -np.asarray(prompt_len)))
    chunks = []
    for start in range(0, p, per_chunk):
        ids = order[start:start + per_chunk]
        key, sub = jax.random.split(key)
        chunks.append((ids, np.concatenate([ids, np.full(per_chunk - len(ids), ids[-1])]), sub))
    if scorer is not None or (answers_on_host(task) and reward.kind == "oracle"):
        from ttc.search import scored

        if scorer is None:  # the oracle's verdicts are host work: scored between jitted steps
            reward = dataclasses.replace(reward, external=True)
        return scored.run_chunks(
            graphdef, params, reward, scorer, task, prompts, prompt_len, gold, questions, chunks,
            cfg=cfg, num_samples=num_samples, sampling=sampling, hp=hp, cache_len=cache_len,
            collector=_Collector(p=p, per_chunk=per_chunk, num_samples=num_samples))
    layout = fit_layout(devices, "policy", len(chunks))
    d = layout.data
    params, reward_params = on_layout(params, layout), on_layout(reward_params, layout)
    pending, calls = [], []
    for group, padded in device_groups(chunks, d):  # dispatch every call, then wait
        idx = np.concatenate([c[1] for c in padded])
        calls.append(idx)
        pending.append(([c[0] for c in group], _search_jit(
            graphdef, params, reward_params, jnp.asarray(prompts[idx]),
            jnp.asarray(prompt_len[idx]), jnp.asarray(gold[idx]),
            jnp.stack([c[2] for c in padded]), sampling, hp, reward=reward, task=task, cfg=cfg,
            num_samples=num_samples, cache_len=cache_len, devices=layout)))
    col = _Collector(p=p, per_chunk=per_chunk, num_samples=num_samples)
    for (group_ids, out), idx in zip(pending, calls, strict=True):
        out = host_answers(task, cfg, fetch(out), prompt_len[idx])
        for j, ids in enumerate(group_ids):  # the repeats' executed work goes to the last chunk
            col.add(out, j, d, ids, repeats=d - j if j == len(group_ids) - 1 else 1)
    return col.result(cache_len=cache_len, window=reward.slots,
                      reward_cache_len=reward.cache_len(cache_len))


_PER_PROBLEM = ("chosen", "answers", "weights", "valid")


class _Collector:
    """Per-problem host arrays of a search run, filled chunk by chunk (problems ``ids``)."""

    def __init__(self, *, p: int, per_chunk: int, num_samples: int):
        self.p, self.per_chunk, self.n = p, per_chunk, num_samples
        self.cat: dict[str, np.ndarray] = {}

    def add(self, out: _ChunkOut, j: int, d: int, ids: np.ndarray, *, repeats: int) -> None:
        """Adds chunk ``j`` of a ``d``-chunk call; its executed counters are summed over it and
        the ``repeats - 1`` chunks after it (spare devices' copies of it)."""
        n_valid = len(ids)
        pad = self.per_chunk / n_valid  # padding problems' executed work, charged to the chunk's
        for name in _PER_PROBLEM:
            v = np.asarray(getattr(out, name))
            self._put(name, ids, v.reshape(d, -1, *v.shape[1:])[j][:n_valid])
        for name in SearchWork.names():
            v = np.asarray(getattr(out.work, name))
            if name == "iterations":  # every row of the chunk ran each one
                rows = np.full((n_valid,), float(v[j]))
            elif name in EXECUTED_COUNTERS:  # batched loop iterations, all rows computed
                rows = np.full((n_valid,), float(np.sum(v[j:j + repeats]))
                               * (self.n * pad))
            else:  # per-row work counters, summed per problem
                rows = v.reshape(d, -1)[j].reshape(self.per_chunk, self.n)[:n_valid].sum(axis=1)
            self._put(name, ids, rows)

    def _put(self, name: str, ids: np.ndarray, rows: np.ndarray) -> None:
        if name not in self.cat:
            self.cat[name] = np.zeros((self.p, *rows.shape[1:]), rows.dtype)
        self.cat[name][ids] = rows

    def result(self, *, cache_len: int, window: int, reward_cache_len: int,
               scorer: ScorerWork | None = None) -> SearchResult:
        work = SearchWork(**{k: self.cat[k] for k in SearchWork.names()})
        return SearchResult(work=work, cache_len=cache_len, window=window,
                            reward_cache_len=reward_cache_len, scorer=scorer,
                            **{k: self.cat[k] for k in _PER_PROBLEM})
