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
"""

from __future__ import annotations

import collections
import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, struct
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray
from tqdm.auto import tqdm

from ttc.models.transformer import Cache, init_cache


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


def select_tokens(
    key: PRNGKeyArray, logits: Float[Array, "B V"], sp: SamplingParams
) -> Int[Array, " B"]:
    """Samples one token per row with temperature, top-k and top-p applied (in that order)."""
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
    scaled = jax.lax.cond(use_filter, filtered, plain, logits)
    sampled = jax.random.categorical(key, scaled, axis=-1)
    return jnp.where(sp.temperature <= 0, jnp.argmax(logits, axis=-1), sampled).astype(jnp.int32)


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
    cache = init_cache(model.cfg, p, cache_len)
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
    stop_ids: tuple[int, ...],
    eos_id: int,
    pad_id: int = 0,
    max_steps: int | None = None,
) -> DecodeState:
    """Decodes until every row has emitted one of ``stop_ids`` (or is done / out of slots).

    Traceable; wrap the caller in ``jax.jit``. A row is *done* after ``EOS`` or when its cache is
    full; a done row never advances again. ``stop_ids`` should contain ``eos_id``.

    Args:
        graphdef, params: the policy, from ``nnx.split``.
        state: the loop state; its ``logits`` are the next-token logits of each row.
        sp: sampling parameters (traced).
        stop_ids: tokens that end this call for a row (e.g. ``(step_id, eos_id)`` for one step).
        eos_id: the end-of-solution token.
        pad_id: written nowhere; fed to stopped rows.
        max_steps: optional cap on loop iterations of this call (default: free slots).

    Returns:
        The advanced state.
    """
    b, t = state.tokens.shape
    rows = jnp.arange(b)
    cap = t if max_steps is None else max_steps
    stop = jnp.asarray(stop_ids, jnp.int32)

    def cond(carry):
        _, stopped, it = carry
        return jnp.any(~stopped) & (it < cap)

    def body(carry):
        st, stopped, it = carry
        key, sub = jax.random.split(st.key)
        active = ~stopped
        tok = jnp.where(active, select_tokens(sub, st.logits, sp), pad_id)
        logp = jax.nn.log_softmax(st.logits.astype(jnp.float32))
        lp = jnp.take_along_axis(logp, tok[:, None], 1)[:, 0]
        pos = jnp.minimum(st.length, t - 1)
        tokens = st.tokens.at[rows, pos].set(jnp.where(active, tok, st.tokens[rows, pos]))
        logprob = st.logprob.at[rows, pos].set(jnp.where(active, lp, st.logprob[rows, pos]))
        out, cache = _apply(graphdef, params, tok[:, None], pos, st.cache)
        logits = jnp.where(active[:, None], out[:, 0], st.logits)
        length = st.length + active.astype(jnp.int32)
        full = length >= t
        done = st.done | (active & (tok == eos_id)) | full
        stopped = stopped | (active & jnp.isin(tok, stop)) | full
        new = st.replace(
            tokens=tokens,
            length=length,
            cache=cache,
            logits=logits,
            logprob=logprob,
            done=done,
            useful_tokens=st.useful_tokens + active.astype(jnp.int32),
            useful_ctx=st.useful_ctx + jnp.where(active, pos + 1, 0).astype(jnp.float32),
            executed_steps=st.executed_steps + 1,
            key=key,
        )
        return new, stopped, it + 1

    stopped0 = state.done | (state.length >= t)
    state, _, _ = jax.lax.while_loop(cond, body, (state, stopped0, jnp.zeros((), jnp.int32)))
    return state


TRACE_COUNTS: collections.Counter = collections.Counter()
"""How many times each jitted entry point was traced (tests assert on it: no silent retraces)."""


@functools.partial(
    jax.jit, static_argnames=("graphdef", "task", "num_samples", "cache_len")
)
def _generate_jit(graphdef, params, prompts, prompt_len, key, sp, *, task, num_samples, cache_len):
    TRACE_COUNTS["generate"] += 1
    tok = task.tokenizer
    st = prefill(graphdef, params, prompts, prompt_len, key, num_samples=num_samples,
                 cache_len=cache_len)
    st = decode(graphdef, params, st, sp, stop_ids=(tok.EOS,), eos_id=tok.EOS, pad_id=tok.PAD)
    answers = task.extract_answer(st.tokens, st.prompt_len)
    return dict(
        tokens=st.tokens,
        length=st.length,
        answers=answers,
        loglik=st.logprob.sum(axis=1),
        useful_tokens=st.useful_tokens,
        useful_ctx=st.useful_ctx,
        executed_steps=st.executed_steps,
    )


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
        executed_row_steps: ``[P, N]`` loop iterations the batch ran, charged to every row
            (each iteration computes every row at the full cache length).
        cache_len: ``T``.
    """

    tokens: np.ndarray
    length: np.ndarray
    answers: np.ndarray
    loglik: np.ndarray
    useful_tokens: np.ndarray
    useful_ctx: np.ndarray
    executed_row_steps: np.ndarray
    cache_len: int


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
    progress: bool = False,
) -> Samples:
    """Samples ``num_samples`` complete solutions per prompt, ``max_rows`` rows per jit call.

    Problems are processed in fixed-size chunks (the last one padded by repeating its first
    problem, results dropped) so one compilation serves every chunk of a given ``num_samples``.
    """
    p = prompts.shape[0]
    per_chunk = max(1, min(p, max_rows // num_samples))
    cache_len = task.max_prompt_len + task.max_solution_len
    outs = []
    starts = range(0, p, per_chunk)
    it = tqdm(starts, desc=f"sample N={num_samples}", leave=False) if progress else starts
    for start in it:
        idx = np.arange(start, start + per_chunk)
        idx = np.where(idx < p, idx, start)
        key, sub = jax.random.split(key)
        o = _generate_jit(
            graphdef, params, jnp.asarray(prompts[idx]), jnp.asarray(prompt_len[idx]), sub,
            sampling, task=task, num_samples=num_samples, cache_len=cache_len,
        )
        o = jax.device_get(o)
        n_valid = min(per_chunk, p - start)
        steps = int(o.pop("executed_steps"))
        o = {k: v.reshape(per_chunk, num_samples, *v.shape[1:])[:n_valid] for k, v in o.items()}
        o["executed_row_steps"] = np.full((n_valid, num_samples), steps, np.int64)
        outs.append(o)
    cat = {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}
    return Samples(cache_len=cache_len, **cat)
