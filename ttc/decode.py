"""Prefill and generate-until-stop, each inside one ``jax.jit`` (gemma-style sampler loop).

Conventions:

* A batch has ``B = P * N`` rows: ``P`` problems, each tiled to ``N`` samples (row ``p * N + i``).
  The shared prompt is prefilled once per problem and its cache broadcast to its ``N`` rows.
* ``DecodeState.tokens`` is ``[B, T]``: the prompt, then generated tokens, then ``PAD``; ``T`` is
  the cache length (prompt + maximum new tokens, sized to need). ``length[b]`` is the number of
  valid tokens of row ``b`` and the slot its next token is written to.
* ``logits`` always holds the next-token logits of each row: the cache covers ``tokens[:length]``.
* A decode call continues every row until it emits a stop token (the step delimiter and/or
  ``EOS``), runs out of slots, or the call's ``max_steps`` is reached. Rows that are stopped do not
  advance, but the batched loop still computes them: that is *executed* work, not *useful* work.
* Sampling parameters are traced data (changing them does not recompile).
* The model is any :class:`ttc.models.interface.Policy` (its cache, positions and ``write_pos``
  follow that module's conventions); nothing here depends on its family.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, struct
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray
from tqdm.auto import tqdm

from ttc import flops as F
from ttc.memory import plan_rows
from ttc.models.interface import Cache
from ttc.parallel import Layout, fetch, fit_layout, on_layout, over_rows
from ttc.tasks.base import answers_on_host, traced_answers
from ttc.tasks.stops import StopRule, stop_rule


@struct.dataclass
class SamplingParams:
    """Token-selection strategy as traced data.

    Attributes:
        temperature: softmax temperature; ``<= 0`` means greedy (argmax).
        top_k: keep the ``k`` most likely tokens; ``0`` disables the filter.
        top_p: nucleus mass to keep; ``1.0`` disables the filter.
    """

    temperature: Float[Array, ""]
    top_k: Int[Array, ""]
    top_p: Float[Array, ""]

    @classmethod
    def make(cls, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0) -> SamplingParams:
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        if top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {top_k}")
        if not 0.0 < top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        return cls(
            temperature=jnp.asarray(temperature, jnp.float32),
            top_k=jnp.asarray(top_k, jnp.int32),
            top_p=jnp.asarray(top_p, jnp.float32),
        )


def _scaled_logits(logits: Float[Array, "B V"], sp: SamplingParams) -> Float[Array, "B V"]:
    """Logits divided by the temperature, with top-k then top-p filtered to the float minimum."""
    logits = logits.astype(jnp.float32)
    v = logits.shape[-1]
    neg = jnp.finfo(jnp.float32).min

    def filtered(logits):
        desc = -jnp.sort(-logits, axis=-1)
        k = jnp.where(sp.top_k > 0, jnp.minimum(sp.top_k, v), v)
        kth = jax.lax.dynamic_index_in_dim(desc, k - 1, axis=-1, keepdims=True)
        scaled = jnp.where(logits >= kth, logits, neg) / jnp.maximum(sp.temperature, 1e-6)
        # nucleus: keep the smallest prefix of the sorted distribution with mass >= top_p
        sdesc = -jnp.sort(-scaled, axis=-1)
        probs = jax.nn.softmax(sdesc, axis=-1)
        keep = jnp.cumsum(probs, axis=-1) - probs < sp.top_p
        cutoff = jnp.min(jnp.where(keep, sdesc, jnp.inf), axis=-1, keepdims=True)
        return jnp.where(scaled >= cutoff, scaled, neg)

    def plain(logits):
        return logits / jnp.maximum(sp.temperature, 1e-6)

    # the sorts cost more than the rest of sampling: skip them (at run time) when unused
    use_filter = (sp.top_k > 0) | (sp.top_p < 1.0)
    return jax.lax.cond(use_filter, filtered, plain, logits)


def _threefry2x32(k1: Array, k2: Array, x1: Array, x2: Array) -> tuple[Array, Array]:
    """The Threefry-2x32 hash (20 rounds) of counters ``(x1, x2)`` under key ``(k1, k2)``, all
    ``uint32`` and broadcast together: JAX's own ``threefry2x32``, written out unrolled.

    JAX lowers it on CPU as a 5-iteration loop whose every iteration reads and writes both
    whole counter arrays; unrolled, XLA fuses the 20 rounds into one elementwise kernel (about
    5x faster for a ``[64, 49152]`` draw). Integer arithmetic: the bits are identical."""
    rotations = ((13, 15, 26, 6), (17, 29, 16, 24))
    ks = (k1, k2, k1 ^ k2 ^ np.uint32(0x1BD11BDA))
    x1, x2 = x1 + ks[0], x2 + ks[1]
    for i in range(5):
        for r in rotations[i % 2]:
            x1 = x1 + x2
            x2 = jax.lax.shift_left(x2, np.uint32(r)) | jax.lax.shift_right_logical(
                x2, np.uint32(32 - r))
            x2 = x1 ^ x2
        x1 = x1 + ks[(i + 1) % 3]
        x2 = x2 + ks[(i + 2) % 3] + np.uint32(i + 1)
    return x1, x2


def _gumbel_max(k1: Array, k2: Array, counter: Int[Array, "B V"],
                logits: Float[Array, "B V"]) -> Int[Array, " B"]:
    """``argmax(logits + gumbel)`` along the last axis, the Gumbel noise of element ``i`` drawn
    from counter ``counter[i]`` under key ``(k1, k2)`` exactly as ``jax.random.gumbel`` draws it
    (32 random bits, a uniform in ``[tiny, 1)``, ``-log(-log(u))``; ``mode='low'``).

    The noisy logits are materialised (an argmax fused with the noise runs as scalar code on
    XLA:CPU) before :func:`_first_argmax`."""
    hi = jnp.zeros_like(counter)
    b1, b2 = _threefry2x32(k1, k2, hi, counter)
    mantissa = jax.lax.shift_right_logical(b1 ^ b2, np.uint32(9)) | np.uint32(0x3F800000)
    floats = jax.lax.bitcast_convert_type(mantissa, jnp.float32) - np.float32(1.0)
    tiny, one = np.float32(np.finfo(np.float32).tiny), np.float32(1.0)
    u = jax.lax.max(tiny, floats * (one - tiny) + tiny)
    return _first_argmax(jax.lax.optimization_barrier(-jnp.log(-jnp.log(u)) + logits))


def _first_argmax(z: Float[Array, "B V"]) -> Int[Array, " B"]:
    """``jnp.argmax(z, axis=-1)`` (the first maximum, or the first NaN) as a max and a min
    reduction: XLA:CPU runs argmax's variadic reduce as scalar code, several times slower."""
    v = z.shape[-1]
    best = jnp.max(z, axis=-1, keepdims=True)  # NaN or not: XLA:CPU's vector max may drop it
    idx = jax.lax.broadcasted_iota(jnp.int32, z.shape, z.ndim - 1)
    # a NaN at i ranks as i - v, before every maximum; no NaN and no maximum ranks as v
    first = jnp.min(jnp.where(jnp.isnan(z), idx - v, jnp.where(z == best, idx, v)), axis=-1)
    return jnp.where(first < 0, first + v, first)


def _threefry_key_data(keys: PRNGKeyArray) -> Array | None:
    """``[..., 2]`` uint32 key data of typed threefry keys when JAX draws them the way
    :func:`_gumbel_max` reproduces (partitionable threefry, low-range Gumbel: the defaults),
    else ``None``."""
    if not jax.config.jax_threefry_partitionable or jax.config.jax_high_dynamic_range_gumbel:
        return None
    if jnp.issubdtype(keys.dtype, jax.dtypes.prng_key):
        if str(jax.random.key_impl(keys)) != "threefry2x32":
            return None
        return jax.random.key_data(keys)
    return None


def _categorical(key: PRNGKeyArray, logits: Float[Array, "B V"]) -> Int[Array, " B"]:
    """``jax.random.categorical(key, logits, axis=-1)`` (the same samples, bit for bit)."""
    data = _threefry_key_data(key)
    b, v = logits.shape
    if data is None or b * v > 2**32 or logits.dtype != jnp.float32:
        return jax.random.categorical(key, logits, axis=-1)
    # partitionable threefry counts the flat index (its high word is 0 below 2**32 draws)
    counter = (jax.lax.broadcasted_iota(jnp.uint32, (b, v), 0) * np.uint32(v)
               + jax.lax.broadcasted_iota(jnp.uint32, (b, v), 1))
    return _gumbel_max(data[0], data[1], counter, logits)


def _categorical_rows(keys: PRNGKeyArray, logits: Float[Array, "B V"]) -> Int[Array, " B"]:
    """``vmap(jax.random.categorical)(keys, logits)``: row ``b`` drawn with ``keys[b]`` (the
    same samples, bit for bit)."""
    data = _threefry_key_data(keys)
    v = logits.shape[-1]
    if data is None or v > 2**32 or logits.dtype != jnp.float32:
        return jax.vmap(lambda k, s: jax.random.categorical(k, s))(keys, logits)
    counter = jax.lax.broadcasted_iota(jnp.uint32, (1, v), 1)
    return _gumbel_max(data[:, :1], data[:, 1:], counter, logits)


def select_tokens(
    key: PRNGKeyArray, logits: Float[Array, "B V"], sp: SamplingParams
) -> Int[Array, " B"]:
    """Samples one token per row with temperature, top-k and top-p applied (in that order)."""
    sampled = _categorical(key, _scaled_logits(logits, sp))
    return jnp.where(sp.temperature <= 0, _first_argmax(logits), sampled).astype(jnp.int32)


def select_tokens_rows(
    keys: PRNGKeyArray, logits: Float[Array, "B V"], sp: SamplingParams
) -> Int[Array, " B"]:
    """:func:`select_tokens` with one key per row (``keys`` is ``[B]``): a row's token depends on
    its own key only, not on which other rows share the batch."""
    sampled = _categorical_rows(keys, _scaled_logits(logits, sp))
    return jnp.where(sp.temperature <= 0, _first_argmax(logits), sampled).astype(jnp.int32)


@struct.dataclass
class DecodeState:
    """Everything a decode loop carries (a pytree; every leaf has a leading batch axis except
    ``executed_steps`` and ``key``). Resampling gathers every batched leaf but the counters."""

    tokens: Int[Array, "B T"]
    length: Int[Array, " B"]
    prompt_len: Int[Array, " B"]
    cache: Cache
    logits: Float[Array, "B V"]
    logprob: Float[Array, "B T"]
    done: Bool[Array, " B"]
    # Work counters, per slot (not gathered by resampling: work done stays done).
    useful_tokens: Int[Array, " B"]
    useful_ctx: Float[Array, " B"]
    executed_steps: Int[Array, ""]
    key: PRNGKeyArray

    @property
    def batch(self) -> int:
        return self.tokens.shape[0]

    @property
    def cache_len(self) -> int:
        return self.tokens.shape[1]


def _apply(graphdef, params, tokens, write_pos, cache):
    model = nnx.merge(graphdef, params)
    return model(tokens, cache=cache, write_pos=write_pos)


def _attended(graphdef, params) -> Callable[[Array], Array]:
    """``pos -> `` the positions a token written at ``pos`` attends, for the FLOP ledger
    (:func:`ttc.flops.context_sum`: ``pos + 1``, or less in sliding-window layers)."""
    cfg = nnx.merge(graphdef, params).cfg
    return lambda pos: F.context_sum(cfg, pos, 1)


def prefill(
    graphdef: nnx.GraphDef,
    params: nnx.State,
    prompts: Int[Array, "P Lp"],
    prompt_len: Int[Array, " P"],
    key: PRNGKeyArray,
    *,
    num_samples: int,
    cache_len: int,
) -> DecodeState:
    """Runs each prompt once and broadcasts its cache to ``num_samples`` rows (traceable)."""
    p, lp = prompts.shape
    if cache_len < lp:
        raise ValueError(f"cache_len={cache_len} is shorter than the prompts ({lp})")
    model = nnx.merge(graphdef, params)
    cache = model.cfg.init_cache(p, cache_len)
    out, cache = model(prompts, cache=cache, write_pos=jnp.zeros((p,), jnp.int32))
    last = jnp.take_along_axis(out, (prompt_len - 1)[:, None, None], axis=1)[:, 0]
    tokens = jnp.zeros((p, cache_len), jnp.int32).at[:, :lp].set(prompts)
    rep = functools.partial(jnp.repeat, repeats=num_samples, axis=0)
    b = p * num_samples
    return DecodeState(
        tokens=rep(tokens),
        length=rep(prompt_len.astype(jnp.int32)),
        prompt_len=rep(prompt_len.astype(jnp.int32)),
        cache=jax.tree.map(rep, cache),
        logits=rep(last),
        logprob=jnp.zeros((b, cache_len), jnp.float32),
        done=jnp.zeros((b,), bool),
        useful_tokens=jnp.zeros((b,), jnp.int32),
        useful_ctx=jnp.zeros((b,), jnp.float32),
        executed_steps=jnp.zeros((), jnp.int32),
        key=key,
    )


def decode(
    graphdef: nnx.GraphDef,
    params: nnx.State,
    state: DecodeState,
    sp: SamplingParams,
    *,
    stops: StopRule,
    one_step: bool = True,
    pad_id: int = 0,
    max_steps: int | None = None,
) -> DecodeState:
    """Decodes until every row has ended a step (``one_step``) or its solution (or is done / out
    of slots): :func:`decode_with` without a side computation."""
    return decode_with(graphdef, params, state, sp, None, None, stops=stops, one_step=one_step,
                       pad_id=pad_id, max_steps=max_steps)[0]


def decode_with(
    graphdef: nnx.GraphDef,
    params: nnx.State,
    state: DecodeState,
    sp: SamplingParams,
    side: Any,
    on_token: Callable[[Any, Array, Array, Array], Any] | None,
    *,
    stops: StopRule,
    one_step: bool = True,
    pad_id: int = 0,
    max_steps: int | None = None,
    forced: tuple[Int[Array, "B T"], Bool[Array, " B"]] | None = None,
) -> tuple[DecodeState, Any]:
    """Decodes until every row has ended a step (``one_step``) or its solution (or is done / out
    of slots), and runs ``side = on_token(side, tok, pos, active)`` on every iteration's new
    tokens ``[B]`` (written at slots ``pos`` ``[B]``; ``active`` ``[B]`` marks the rows that
    advanced), e.g. a reward model consuming each token as it is sampled
    (:func:`ttc.rewards.consume_token`).

    Traceable; wrap the caller in ``jax.jit``. A row is *done* after a solution end
    (``stops.is_eos``) or when its cache is full; a done row never advances again.

    Args:
        graphdef, params: the policy, from ``nnx.split``.
        state: the loop state; its ``logits`` are the next-token logits of each row.
        sp: sampling parameters (traced).
        stops: which tokens end a step and a solution (:func:`ttc.tasks.stops.stop_rule` of the
            task's tokenizer).
        one_step: stop each row at its next step end (else only at the solution's end).
        pad_id: written nowhere; fed to stopped rows.
        max_steps: optional cap on loop iterations of this call (default: free slots).

        side: the side computation's state (a pytree; ``None`` without one).
        on_token: its step function (``None``: none).
        forced: ``(tokens, rows)``: the rows ``rows`` ``[B]`` write ``tokens[b, pos]`` instead
            of a sample (teacher forcing: particle Gibbs' reference trajectory); their
            log-probabilities, cache and stops follow those tokens.

    Returns:
        The advanced state and side state.
    """
    b, t = state.tokens.shape
    rows = jnp.arange(b)
    cap = t if max_steps is None else max_steps
    attended = _attended(graphdef, params)

    def cond(carry):
        _, _, stopped, it = carry
        return jnp.any(~stopped) & (it < cap)

    def body(carry):
        st, side, stopped, it = carry
        key, sub = jax.random.split(st.key)
        active = ~stopped
        tok = select_tokens(sub, st.logits, sp)
        if forced is not None:
            tok = jnp.where(forced[1], forced[0][rows, jnp.minimum(st.length, t - 1)], tok)
        tok = jnp.where(active, tok, pad_id)
        logp = jax.nn.log_softmax(st.logits.astype(jnp.float32))
        lp = jnp.take_along_axis(logp, tok[:, None], 1)[:, 0]
        pos = jnp.minimum(st.length, t - 1)
        tokens = st.tokens.at[rows, pos].set(jnp.where(active, tok, st.tokens[rows, pos]))
        logprob = st.logprob.at[rows, pos].set(jnp.where(active, lp, st.logprob[rows, pos]))
        out, cache = _apply(graphdef, params, tok[:, None], pos, st.cache)
        if on_token is not None:
            side = on_token(side, tok, pos, active)
        logits = jnp.where(active[:, None], out[:, 0], st.logits)
        length = st.length + active.astype(jnp.int32)
        full = length >= t
        eos = stops.is_eos(tok)
        done = st.done | (active & eos) | full
        if one_step:
            prev = st.tokens[rows, jnp.maximum(pos - 1, 0)]
            eos = eos | stops.is_step_end(tok, prev, pos - 1 >= st.prompt_len)
        stopped = stopped | (active & eos) | full
        new = st.replace(
            tokens=tokens,
            length=length,
            cache=cache,
            logits=logits,
            logprob=logprob,
            done=done,
            useful_tokens=st.useful_tokens + active.astype(jnp.int32),
            useful_ctx=st.useful_ctx + jnp.where(active, attended(pos), 0).astype(jnp.float32),
            executed_steps=st.executed_steps + 1,
            key=key,
        )
        return new, side, stopped, it + 1

    stopped0 = state.done | (state.length >= t)
    state, side, _, _ = jax.lax.while_loop(
        cond, body, (state, side, stopped0, jnp.zeros((), jnp.int32)))
    return state, side


def prefill_buckets(prompt_width: int, max_buckets: int = 4) -> tuple[int, ...]:
    """The static padded prompt lengths :func:`_prefill_grouped` chooses among: at most
    ``max_buckets`` evenly spaced lengths ending at the prompt width."""
    step = max(1, -(-prompt_width // max_buckets))
    return tuple(sorted(set(range(step, prompt_width, step)) | {prompt_width}))


def _prefill_grouped(graphdef, params, prompts, prompt_len, *, group: int):
    """Prefills ``P`` prompts in groups of ``group`` (traceable; ``P % group == 0``).

    Each group runs at the smallest static length of :func:`prefill_buckets` that holds its
    longest prompt (``lax.switch`` inside a ``lax.scan``: one compiled copy of every branch), and
    attends over that many slots only. Callers sort prompts by length so that groups are
    homogeneous.

    Returns:
        ``cache`` (per layer ``(k, v)`` of ``[P, H, Lp, Dh]``, zero past each group's length),
        ``last`` (``[P, V]`` next-token logits after each prompt) and ``run_len`` (``[P]``, the
        length each prompt was run at: it was charged ``run_len`` tokens attending over
        ``run_len`` slots).
    """
    p, lp = prompts.shape
    buckets = prefill_buckets(lp)
    cfg = nnx.merge(graphdef, params).cfg

    def branch(length):
        def run(x):
            toks, plen = x
            model = nnx.merge(graphdef, params)
            cache = cfg.init_cache(group, length)
            out, cache = model(toks[:, :length], cache=cache,
                               write_pos=jnp.zeros((group,), jnp.int32))
            last = jnp.take_along_axis(out, (plen - 1)[:, None, None], axis=1)[:, 0]
            pad = ((0, 0), (0, 0), (0, lp - length), (0, 0))
            cache = jax.tree.map(lambda c: jnp.pad(c, pad), cache)
            return cache, last.astype(jnp.float32)
        return run

    branches = [branch(b) for b in buckets]

    def one_group(_, x):
        toks, plen = x
        which = jnp.searchsorted(jnp.asarray(buckets), jnp.max(plen))
        which = jnp.minimum(which, len(buckets) - 1)
        cache, last = jax.lax.switch(which, branches, (toks, plen))
        return None, (cache, last, jnp.full((group,), jnp.asarray(buckets)[which]))

    xs = (prompts.reshape(p // group, group, lp), prompt_len.reshape(p // group, group))
    _, (cache, last, run_len) = jax.lax.scan(one_group, None, xs)
    cache = jax.tree.map(lambda c: c.reshape(p, *c.shape[2:]), cache)
    return cache, last.reshape(p, -1), run_len.reshape(p)


@struct.dataclass
class _Slots:
    """The continuous-batching loop state: ``B`` slots, each holding one sample (or none)."""

    tokens: Int[Array, "B T"]
    length: Int[Array, " B"]
    cache: Cache
    logits: Float[Array, "B V"]
    loglik: Float[Array, " B"]
    done: Bool[Array, " B"]  # finished (EOS / full) or empty: not advanced
    sid: Int[Array, " B"]  # queue index of the sample in the slot; -1: empty
    useful_tokens: Int[Array, " B"]
    useful_ctx: Float[Array, " B"]
    row_steps: Int[Array, " B"]  # loop iterations computed for the sample in the slot
    key: PRNGKeyArray  # [B] per-sample keys
    next_q: Int[Array, ""]
    idle_steps: Int[Array, ""]  # slot-iterations computed for empty slots
    steps: Int[Array, ""]


TRACE_COUNTS: collections.Counter = collections.Counter()
"""How many times each jitted entry point was traced (tests assert on it: no silent retraces)."""


@functools.partial(
    jax.jit, static_argnames=("graphdef", "task", "num_samples", "slots", "group", "devices")
)
def _generate_jit(graphdef, params, prompts, prompt_len, problem_id, n_valid, key, sp, *, task,
                  num_samples, slots, group, devices):
    """:func:`_generate_local` on each of ``devices`` devices (``jax.shard_map``): device ``j``
    samples the ``j``-th contiguous block of ``P / devices`` prompts with ``slots`` rows of its
    own, and ``n_valid[j]`` is its number of valid prompts. Per-sample outputs come back in
    prompt order; ``idle_steps`` and ``steps`` are ``[devices]``."""
    TRACE_COUNTS["generate"] += 1
    local = functools.partial(_generate_local, graphdef, task=task, num_samples=num_samples,
                              slots=slots, group=group)
    return over_rows(local, devices, split={"prompts", "prompt_len", "problem_id", "n_valid"})(
        params, prompts, prompt_len, problem_id, n_valid, key, sp)


def _generate_local(graphdef, params, prompts, prompt_len, problem_id, n_valid, key, sp, *,
                    task, num_samples, slots, group):
    """Samples ``num_samples`` solutions for each of the first ``n_valid[0]`` of ``P`` prompts
    with ``slots`` decode rows on one device (continuous batching; see
    :func:`generate_solutions`)."""
    n_valid = n_valid[0]
    tok = task.tokenizer
    stops = stop_rule(tok)
    n, b = num_samples, slots
    p, lp = prompts.shape
    t = task.max_prompt_len + task.max_solution_len
    q_total, q_valid = p * n, n_valid * n
    pcache, plast, run_len = _prefill_grouped(graphdef, params, prompts, prompt_len, group=group)
    ptokens = jnp.zeros((p, t), jnp.int32).at[:, :lp].set(prompts)
    rows = jnp.arange(b)
    attended = _attended(graphdef, params)

    # one spare row (index q_total) takes the writes of slots that hold no sample
    outs = dict(
        tokens=jnp.full((q_total + 1, t), tok.PAD, jnp.int32),
        length=jnp.zeros((q_total + 1,), jnp.int32),
        loglik=jnp.zeros((q_total + 1,), jnp.float32),
        useful_tokens=jnp.zeros((q_total + 1,), jnp.int32),
        useful_ctx=jnp.zeros((q_total + 1,), jnp.float32),
        row_steps=jnp.zeros((q_total + 1,), jnp.int32),
    )

    def fill(st: _Slots, outs: dict):
        """Writes out every finished sample and loads the next queued samples into its slot.

        A loop over the slots to handle (its trip count is their number), with one small
        ``dynamic_update_slice`` per array: XLA:CPU runs this ~2x faster than a fixed-size
        scatter, and its cost follows the samples loaded, not the batch."""
        need = st.done & ((st.sid >= 0) | (st.next_q < q_valid))
        idx = jnp.nonzero(need, size=b, fill_value=0)[0]

        def one(j, carry):
            st, outs = carry
            i = idx[j]
            dst = jnp.where(st.sid[i] >= 0, st.sid[i], q_total)
            outs = {name: jax.lax.dynamic_update_index_in_dim(
                o, jax.lax.dynamic_index_in_dim(getattr(st, name), i, 0, False), dst, 0)
                for name, o in outs.items()}
            q = st.next_q
            load = q < q_valid
            prob = jnp.minimum(q, q_total - 1) // n

            def row(a, v):  # a[i] = v if load
                old = jax.lax.dynamic_index_in_dim(a, i, 0, False)
                return jax.lax.dynamic_update_index_in_dim(a, jnp.where(load, v, old), i, 0)

            def prompt_kv(c, pc):
                old = jax.lax.dynamic_slice_in_dim(c, i, 1, 0)[:, :, :lp]
                new = jax.lax.dynamic_slice_in_dim(pc, prob, 1, 0)
                return jax.lax.dynamic_update_slice(c, jnp.where(load, new, old), (i, 0, 0, 0))

            zero = jnp.zeros((), jnp.int32)
            st = st.replace(
                tokens=row(st.tokens, ptokens[prob]),
                length=row(st.length, prompt_len[prob]),
                cache=jax.tree.map(prompt_kv, st.cache, pcache),
                logits=row(st.logits, plast[prob]),
                loglik=row(st.loglik, jnp.zeros((), jnp.float32)),
                done=st.done.at[i].set(~load | (prompt_len[prob] >= t)),  # full: no slot
                sid=st.sid.at[i].set(jnp.where(load, q, -1)),
                useful_tokens=row(st.useful_tokens, zero),
                useful_ctx=row(st.useful_ctx, jnp.zeros((), jnp.float32)),
                row_steps=row(st.row_steps, zero),
                key=row(st.key, jax.random.fold_in(key, problem_id[prob] * n + q % n)),
                next_q=q + load.astype(jnp.int32),
            )
            return st, outs

        return jax.lax.fori_loop(0, need.sum(), one, (st, outs))

    def step(st: _Slots) -> _Slots:
        active = ~st.done
        keys = jax.vmap(jax.random.split)(st.key)
        nxt = jnp.where(active, select_tokens_rows(keys[:, 1], st.logits, sp), tok.PAD)
        logp = jax.nn.log_softmax(st.logits.astype(jnp.float32))
        lp_tok = jnp.take_along_axis(logp, nxt[:, None], 1)[:, 0]
        pos = jnp.minimum(st.length, t - 1)
        tokens = st.tokens.at[rows, pos].set(jnp.where(active, nxt, st.tokens[rows, pos]))
        out, cache = _apply(graphdef, params, nxt[:, None], pos, st.cache)
        length = st.length + active.astype(jnp.int32)
        occupied = st.sid >= 0
        return st.replace(
            tokens=tokens,
            length=length,
            cache=cache,
            logits=jnp.where(active[:, None], out[:, 0], st.logits),
            loglik=st.loglik + jnp.where(active, lp_tok, 0.0),
            done=st.done | (active & stops.is_eos(nxt)) | (length >= t),
            useful_tokens=st.useful_tokens + active.astype(jnp.int32),
            useful_ctx=st.useful_ctx + jnp.where(active, attended(pos), 0).astype(jnp.float32),
            row_steps=st.row_steps + occupied.astype(jnp.int32),
            key=keys[:, 0],
            idle_steps=st.idle_steps + (~occupied).sum(),
            steps=st.steps + 1,
        )

    model_cfg = nnx.merge(graphdef, params).cfg
    st = _Slots(
        tokens=jnp.zeros((b, t), jnp.int32),
        length=jnp.zeros((b,), jnp.int32),
        cache=model_cfg.init_cache(b, t),
        logits=jnp.zeros((b, plast.shape[-1]), jnp.float32),
        loglik=jnp.zeros((b,), jnp.float32),
        done=jnp.ones((b,), bool),
        sid=jnp.full((b,), -1, jnp.int32),
        useful_tokens=jnp.zeros((b,), jnp.int32),
        useful_ctx=jnp.zeros((b,), jnp.float32),
        row_steps=jnp.zeros((b,), jnp.int32),
        key=jax.random.split(key, b),
        next_q=jnp.zeros((), jnp.int32),
        idle_steps=jnp.zeros((), jnp.int32),
        steps=jnp.zeros((), jnp.int32),
    )
    st, outs = fill(st, outs)

    def cond(carry):
        st, _ = carry
        return jnp.any(~st.done) | (st.next_q < q_valid)

    def body(carry):
        st, outs = carry
        return fill(step(st), outs)

    st, outs = jax.lax.while_loop(cond, body, (st, outs))
    _, outs = fill(st, outs)  # flush every remaining sample
    outs = {name: o[:q_total] for name, o in outs.items()}
    outs["answers"] = traced_answers(task, outs["tokens"], jnp.repeat(prompt_len, n))
    outs["prefill_run_len"] = run_len
    outs["idle_steps"] = st.idle_steps[None]
    outs["steps"] = st.steps[None]
    return outs


@dataclasses.dataclass(frozen=True, kw_only=True)
class Samples:
    """Complete solutions sampled for ``P`` problems, ``N`` each, as host arrays ``[P, N, ...]``.

    Attributes:
        tokens: ``[P, N, T]`` prompt + solution, ``PAD`` after ``length``.
        length: ``[P, N]`` valid tokens per row.
        answers: ``[P, N]`` answer ids (``INVALID_ANSWER`` = -1 when unparseable).
        loglik: ``[P, N]`` sum of the policy's log-probs of the generated tokens.
        useful_tokens: ``[P, N]`` generated tokens.
        useful_ctx: ``[P, N]`` sum over generated tokens of their context length (FLOP ledger).
        executed_row_steps: ``[P, N]`` decode-loop row-iterations charged to each sample; each
            computes one token attending over all ``cache_len`` slots. They sum to the loop
            iterations times the decode rows (slots), empty slots included.
        cache_len: ``T``.
        prefill_tokens: ``[P]`` prefill token-rows charged to each problem, or ``None`` (pools
            saved before this field: the prompt width at ``cache_len``, see
            :func:`ttc.ledger.pool_ledger`).
        prefill_ctx: ``[P]`` sum over those token-rows of the slots they attended over.
    """

    tokens: np.ndarray
    length: np.ndarray
    answers: np.ndarray
    loglik: np.ndarray
    useful_tokens: np.ndarray
    useful_ctx: np.ndarray
    executed_row_steps: np.ndarray
    cache_len: int
    prefill_tokens: np.ndarray | None = None
    prefill_ctx: np.ndarray | None = None


def _spread(total: int, n: int) -> np.ndarray:
    """``total`` split into ``n`` integers that differ by at most one."""
    out = np.full(n, total // n, np.int64)
    out[: total % n] += 1
    return out


def generate_solutions(
    graphdef: nnx.GraphDef,
    params: nnx.State,
    task,
    prompts: np.ndarray,
    prompt_len: np.ndarray,
    *,
    num_samples: int,
    sampling: SamplingParams,
    key: PRNGKeyArray,
    max_rows: int = 4096,
    slots: int = 1024,
    queue_rows: int | None = None,
    devices: int | Layout | None = None,
    progress: bool = False,
) -> Samples:
    """Samples ``num_samples`` complete solutions per prompt by continuous batching.

    One jitted loop keeps up to ``min(slots, max_rows)`` decode rows busy (fewer, down to 64,
    when a call has under 8 samples per row to run; small batches are as fast per token on this
    CPU; fewer where the devices' free memory cannot hold them, :func:`ttc.memory.plan_rows`,
    and a policy that cannot fit one row raises :class:`ttc.errors.ConfigError` before
    anything compiles): when a row's sample ends (``EOS`` or a full cache) its result is
    written out and the next queued sample takes the row, starting from its prompt's prefilled
    cache (each prompt is prefilled once). So rows that finished early do not idle until the
    longest sample of a batch ends; only the drain at the end of each call (rows whose sample
    ended while the queue is empty) computes rows that produce no token.

    Problems are queued longest prompt first (solution length grows with the prompt on the
    arithmetic task, so the drain runs the shortest samples) and processed up to ``queue_rows``
    sample rows (default ``16 * min(slots, max_rows)``) per call, in fixed-size chunks of
    problems (the last one padded; padded problems are prefilled but never decoded, their
    prefill is charged to the chunk's problems). One compilation serves every chunk of a given
    ``num_samples`` and problem count (problem sets under 256 rows share one shape). Outputs are
    in the caller's problem order.

    Each sample draws from its own key, ``fold_in(key, problem * num_samples + i)`` for the
    caller's problem index, split once per token. Its tokens therefore do not depend on
    ``max_rows``, ``slots``, ``queue_rows`` or which problems are sampled alongside it, and
    the distribution is the one of :func:`decode` (same token selection, same logits).

    ``devices`` is a device count or a :class:`~ttc.parallel.Layout` (default: the policy layout
    of :func:`ttc.parallel.use_layouts`, else every device of
    :func:`ttc.parallel.sampler_devices`; on a CPU host one per core, see :mod:`ttc.parallel`).
    With several ``data`` slices each call's problems are dealt round-robin to them, and each
    slice runs its own loop over its share with ``1 / data`` of the slots, its layers split
    over its ``model`` devices. The samples are the same for any layout; only the executed-work
    counters (``executed_row_steps``, prefill padding) change with it.
    """
    p, lp = prompts.shape
    n = num_samples
    cap = max(1, min(slots, max_rows))
    plan = plan_rows(nnx.merge(graphdef, params).cfg, want_rows=cap,  # before any compile
                     cache_len=task.max_prompt_len + task.max_solution_len,
                     layout=fit_layout(devices, "policy", cap))
    cap = plan.rows
    queue_rows = 16 * cap if queue_rows is None else queue_rows
    # problems per call: all of them up to the queue size, but never fewer than 256 rows' worth
    # (so that small problem sets share one shape), a multiple of the prefill group on every
    # device
    per_chunk = max(1, min(queue_rows // n, max(p, min(queue_rows, 256) // n)))
    layout = fit_layout(devices, "policy", per_chunk)  # no slice without a problem
    d, params = layout.data, on_layout(params, layout)
    group = min(per_chunk // d, 8)
    per_chunk = -(-per_chunk // (group * d)) * group * d
    # at least ~8 waves of samples per slot (the drain is then a small part), 64 slots or more
    b = min(cap, per_chunk * n, max(64, -(-per_chunk * n // 8)))
    b = min(-(-b // d), plan.device_rows)  # slots per device
    # device j takes chunk positions j, j + d, j + 2d, ...: the longest-first order spreads
    # evenly, and each device's valid problems come first (as _generate_local expects)
    deal = np.arange(per_chunk).reshape(-1, d).T.reshape(-1)
    order = np.argsort(-np.asarray(prompt_len), kind="stable")
    t = task.max_prompt_len + task.max_solution_len
    if t < lp:
        raise ValueError(f"cache_len={t} is shorter than the prompts ({lp})")
    fields = ("tokens", "length", "answers", "loglik", "useful_tokens", "useful_ctx",
              "row_steps")
    dtypes = {"tokens": np.int32, "loglik": np.float32, "useful_ctx": np.float32}
    res = {f: np.zeros((p, n, t) if f == "tokens" else (p, n), dtypes.get(f, np.int64))
           for f in fields}
    pre_tok = np.zeros(p, np.int64)
    pre_ctx = np.zeros(p, np.float64)
    starts = range(0, p, per_chunk)
    it = tqdm(starts, desc=f"sample N={n}", leave=False) if progress else starts
    for start in it:
        ids = order[start:start + per_chunk]
        nv = len(ids)
        idx = np.concatenate([ids, np.full(per_chunk - nv, ids[-1])])[deal]
        valid = deal < nv
        n_valid = valid.reshape(d, -1).sum(axis=1)
        o = _generate_jit(
            graphdef, params, jnp.asarray(prompts[idx]), jnp.asarray(prompt_len[idx]),
            jnp.asarray(idx, jnp.int32), jnp.asarray(n_valid, jnp.int32), key, sampling,
            task=task, num_samples=n, slots=b, group=group, devices=layout,
        )
        o = fetch(o)
        for f in fields:
            v = o[f]
            res[f][idx[valid]] = v.reshape(per_chunk, n, *v.shape[1:])[valid]
        # every computed slot-iteration is charged: empty slots' to the chunk's samples
        res["row_steps"][ids] += _spread(int(o["idle_steps"].sum()), nv * n).reshape(nv, n)
        # prefill: each problem its run length; padded problems' share spread over the chunk
        run = o["prefill_run_len"].astype(np.int64)
        pad_tok, pad_ctx = int(run[~valid].sum()), float((run[~valid] ** 2).sum())
        pre_tok[idx[valid]] = run[valid]
        pre_ctx[idx[valid]] = run[valid] ** 2
        pre_tok[ids] += _spread(pad_tok, nv)
        pre_ctx[ids] += pad_ctx / nv
    if answers_on_host(task):  # the jitted loop left placeholders
        ans = task.extract_answer(res["tokens"].reshape(p * n, t), np.repeat(prompt_len, n))
        res["answers"] = np.asarray(ans, np.int64).reshape(p, n)
    return Samples(tokens=res["tokens"], length=res["length"], answers=res["answers"],
                   loglik=res["loglik"], useful_tokens=res["useful_tokens"],
                   useful_ctx=res["useful_ctx"], executed_row_steps=res["row_steps"],
                   cache_len=t, prefill_tokens=pre_tok, prefill_ctx=pre_ctx)
