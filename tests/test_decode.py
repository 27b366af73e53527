"""Cached decoding equals the full forward pass; sampling strategies; no retraces."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from ttc.decode import (
    TRACE_COUNTS,
    SamplingParams,
    decode,
    generate_solutions,
    prefill,
    select_tokens,
)
from ttc.parallel import sampler_devices
from ttc.tasks.stops import StopRule


def _full_logits(model, tokens):
    m = nnx.merge(model.graphdef, model.params)
    out, _ = m(jnp.asarray(tokens))
    return np.asarray(out)


def test_cached_forward_equals_full_forward(tiny_policy):
    from ttc.models.transformer import init_cache

    m = nnx.merge(tiny_policy.graphdef, tiny_policy.params)
    toks = jax.random.randint(jax.random.key(0), (3, 20), 0, tiny_policy.cfg.vocab_size)
    full, _ = m(toks)
    cache = init_cache(tiny_policy.cfg, 3, 24)
    outs = []
    o, cache = m(toks[:, :7], cache=cache, write_pos=jnp.zeros(3, jnp.int32))
    outs.append(o)
    for t in range(7, 20):
        o, cache = m(toks[:, t : t + 1], cache=cache, write_pos=jnp.full(3, t, jnp.int32))
        outs.append(o)
    np.testing.assert_allclose(np.concatenate(outs, 1), full, atol=1e-5, rtol=0)


@functools.partial(jax.jit, static_argnames=("graphdef", "n", "cache_len", "stop_ids"))
def _run(graphdef, params, prompts, plen, key, sp, *, n, cache_len, stop_ids):
    st = prefill(graphdef, params, prompts, plen, key, num_samples=n, cache_len=cache_len)
    steps = tuple(i for i in stop_ids if i != 2)
    return decode(graphdef, params, st, sp, stops=StopRule(step_ids=steps, eos_ids=(2,)),
                  one_step=bool(steps))


def test_decode_logprobs_match_full_forward(task, tiny_policy):
    """Right-padded prompts of different lengths, then sampling: every stored log-prob equals
    log_softmax of a full (uncached) forward over the final sequence."""
    ps = task.problems(4, seed=0, split="test")
    t = task.max_prompt_len + task.max_solution_len
    st = _run(tiny_policy.graphdef, tiny_policy.params, jnp.asarray(ps.prompts),
              jnp.asarray(ps.prompt_len), jax.random.key(1), SamplingParams.make(1.0),
              n=3, cache_len=t, stop_ids=(2,))
    tokens, length = np.asarray(st.tokens), np.asarray(st.length)
    logp = jax.nn.log_softmax(jnp.asarray(_full_logits(tiny_policy, tokens)), -1)
    for b in range(tokens.shape[0]):
        lp = int(ps.prompt_len[b // 3])
        for pos in range(lp, length[b]):
            ref = float(logp[b, pos - 1, tokens[b, pos]])
            assert abs(float(st.logprob[b, pos]) - ref) < 1e-4
        assert int(st.useful_tokens[b]) == length[b] - lp
        assert float(st.useful_ctx[b]) == sum(range(lp + 1, length[b] + 1))


def test_greedy_is_deterministic_and_matches_reference(task, tiny_policy):
    ps = task.problems(3, seed=0, split="test")
    t = task.max_prompt_len + task.max_solution_len
    args = (tiny_policy.graphdef, tiny_policy.params, jnp.asarray(ps.prompts),
            jnp.asarray(ps.prompt_len))
    kw = dict(n=2, cache_len=t, stop_ids=(2,))
    a = _run(*args, jax.random.key(0), SamplingParams.make(0.0), **kw)
    b = _run(*args, jax.random.key(5), SamplingParams.make(0.0), **kw)
    np.testing.assert_array_equal(a.tokens, b.tokens)
    # slow obvious reference: full forward, argmax, append, repeat. The forward runs on the
    # sequence right-padded to t (causal: the padding never reaches earlier positions), so one
    # compiled function serves every length.
    forward = jax.jit(lambda x: nnx.merge(tiny_policy.graphdef, tiny_policy.params)(x)[0])
    for i in range(3):
        seq = list(ps.prompts[i, : ps.prompt_len[i]])
        while len(seq) < t:
            padded = np.zeros((1, t), np.int32)
            padded[0, : len(seq)] = seq
            nxt = int(np.argmax(np.asarray(forward(jnp.asarray(padded)))[0, len(seq) - 1]))
            seq.append(nxt)
            if nxt == 2:
                break
        row = np.asarray(a.tokens[2 * i])
        assert row[: len(seq)].tolist() == seq
        assert int(a.length[2 * i]) == len(seq)


def test_step_stop_and_done(task, tiny_policy):
    step = task.tokenizer.step_id
    ps = task.problems(4, seed=0, split="test")
    t = task.max_prompt_len + task.max_solution_len
    st = _run(tiny_policy.graphdef, tiny_policy.params, jnp.asarray(ps.prompts),
              jnp.asarray(ps.prompt_len), jax.random.key(3), SamplingParams.make(1.0),
              n=8, cache_len=t, stop_ids=(step, 2))
    tokens, length = np.asarray(st.tokens), np.asarray(st.length)
    for b in range(tokens.shape[0]):
        gen = tokens[b, ps.prompt_len[b // 8] : length[b]].tolist()
        # stopped exactly at its first stop token (or ran out of slots)
        stops = [j for j, x in enumerate(gen) if x in (step, 2)]
        assert (stops and stops[0] == len(gen) - 1) or length[b] == t
        assert bool(st.done[b]) == (gen[-1] == 2 or length[b] == t)
        assert (tokens[b, length[b] :] == 0).all()


def test_select_tokens_distribution():
    """top-k / top-p / temperature sampling matches the exactly filtered distribution."""
    logits = jnp.log(jnp.array([[0.4, 0.3, 0.15, 0.1, 0.05]]))
    n = 20000
    keys = jax.random.split(jax.random.key(0), n)

    def freq(sp):
        toks = jax.vmap(lambda k: select_tokens(k, logits, sp)[0])(keys)
        return np.bincount(np.asarray(toks), minlength=5) / n

    p = np.array([0.4, 0.3, 0.15, 0.1, 0.05])
    cases = [
        (SamplingParams.make(1.0), p),
        (SamplingParams.make(1.0, top_k=2), np.r_[p[:2] / p[:2].sum(), 0, 0, 0]),
        (SamplingParams.make(1.0, top_p=0.8), np.r_[p[:3] / p[:3].sum(), 0, 0]),
        (SamplingParams.make(0.5), p**2 / (p**2).sum()),
    ]
    for sp, expect in cases:
        got = freq(sp)
        # 4 standard errors of a proportion at n=20000 is < 0.015
        np.testing.assert_allclose(got, expect, atol=0.015)
    assert int(select_tokens(keys[0], logits, SamplingParams.make(0.0))[0]) == 0


def test_sampling_params_validation():
    with pytest.raises(ValueError):
        SamplingParams.make(-1.0)
    with pytest.raises(ValueError):
        SamplingParams.make(1.0, top_p=0.0)


def test_no_retrace_when_only_data_changes(task, tiny_policy):
    ps = task.problems(6, seed=0, split="test")

    def go(temp, seed, problems):
        generate_solutions(tiny_policy.graphdef, tiny_policy.params, task, problems.prompts,
                           problems.prompt_len, num_samples=4, sampling=SamplingParams.make(temp),
                           key=jax.random.key(seed), max_rows=8)

    go(1.0, 0, ps)
    before = TRACE_COUNTS["generate"]
    go(0.7, 1, ps)
    go(0.0, 2, task.problems(6, seed=9, split="test"))
    assert TRACE_COUNTS["generate"] == before
    go(1.0, 0, ps.take(np.arange(3)))  # fewer problems: same chunk shape, still no retrace
    assert TRACE_COUNTS["generate"] == before


def _plain(task, policy, ps, n, sp, key):
    """The plain path: one prefill + decode over all P * N rows, in the caller's order."""
    t = task.max_prompt_len + task.max_solution_len
    st = _run(policy.graphdef, policy.params, jnp.asarray(ps.prompts), jnp.asarray(ps.prompt_len),
              key, sp, n=n, cache_len=t, stop_ids=(2,))
    return np.asarray(st.tokens).reshape(len(ps.prompt_len), n, t), np.asarray(st.length)


def test_continuous_batching_greedy_equals_plain_path(task, tiny_policy):
    """Greedy decoding is deterministic: the sorted, bucket-prefilled, slot-refilling sampler
    gives exactly the plain path's tokens, in the caller's problem order, for any slot count."""
    ps = task.problems(7, seed=3, split="test")
    assert len(set(ps.prompt_len.tolist())) > 1  # mixed prompt lengths: sorting is exercised
    sp = SamplingParams.make(0.0)
    ref, ref_len = _plain(task, tiny_policy, ps, 2, sp, jax.random.key(0))
    for kw in (dict(slots=3, queue_rows=6), dict(max_rows=64)):
        s = generate_solutions(tiny_policy.graphdef, tiny_policy.params, task, ps.prompts,
                               ps.prompt_len, num_samples=2, sampling=sp, key=jax.random.key(1),
                               **kw)
        np.testing.assert_array_equal(s.tokens, ref)
        np.testing.assert_array_equal(s.length.reshape(-1), ref_len)


def test_continuous_batching_is_independent_of_batching(task, tiny_policy):
    """Each sample draws from its own key: same key, same tokens, whatever the slot count, the
    chunking or which other problems are sampled alongside."""
    ps = task.problems(9, seed=4, split="test")
    sp = SamplingParams.make(1.0)

    def go(problems, **kw):
        return generate_solutions(tiny_policy.graphdef, tiny_policy.params, task,
                                  problems.prompts, problems.prompt_len, num_samples=3,
                                  sampling=sp, key=jax.random.key(7), **kw)

    a = go(ps, slots=4, queue_rows=9, devices=1)
    b = go(ps, max_rows=64)
    c = go(ps.take(np.arange(5)), slots=5, queue_rows=30)
    assert sampler_devices() == 2  # tests/conftest.py: so b and c are sharded over 2 devices
    e = go(ps, slots=6, devices=2)  # 5 problems on one device and 4 on the other
    for other in (b, e):
        np.testing.assert_array_equal(a.tokens, other.tokens)
        np.testing.assert_array_equal(a.length, other.length)
        np.testing.assert_array_equal(a.useful_tokens, other.useful_tokens)
        np.testing.assert_allclose(a.loglik, other.loglik, atol=1e-5)
    np.testing.assert_array_equal(a.tokens[:5], c.tokens)
    for s in (a, e):  # every problem is charged at least its own prompt's prefill
        assert (s.prefill_tokens >= ps.prompt_len).all()
    assert not (a.tokens[:, 0] == a.tokens[:, 1]).all()  # samples of a problem differ
    # every computed row-iteration is charged, at least one per generated token
    assert (a.executed_row_steps >= a.useful_tokens).all()
    assert a.executed_row_steps.sum() % 4 == 0  # loop iterations x 4 slots, per chunk


def test_continuous_batching_samples_the_policy(task, tiny_policy):
    """Same distribution as the plain path: every stored log-likelihood is the full forward's,
    and first tokens follow the exact next-token distribution (4 standard errors)."""
    ps = task.problems(3, seed=5, split="test")
    n = 1500
    s = generate_solutions(tiny_policy.graphdef, tiny_policy.params, task, ps.prompts,
                           ps.prompt_len, num_samples=n, sampling=SamplingParams.make(1.0),
                           key=jax.random.key(2), max_rows=512)
    v = tiny_policy.cfg.vocab_size
    for i in range(3):
        lp = int(ps.prompt_len[i])
        logits = _full_logits(tiny_policy, ps.prompts[i : i + 1, :lp])[0, -1]
        p = np.asarray(jax.nn.softmax(jnp.asarray(logits)))
        freq = np.bincount(s.tokens[i, :, lp], minlength=v) / n
        np.testing.assert_allclose(freq, p, atol=4 * np.sqrt(0.25 / n))
        np.testing.assert_array_equal(s.useful_tokens[i], s.length[i] - lp)
    rows = s.tokens[:, :8].reshape(24, -1)
    logp = np.asarray(jax.nn.log_softmax(jnp.asarray(_full_logits(tiny_policy, rows)), -1))
    for r in range(24):
        lp, end = int(ps.prompt_len[r // 8]), int(s.length[r // 8, r % 8])
        ref = sum(logp[r, j - 1, rows[r, j]] for j in range(lp, end))
        assert abs(float(s.loglik[r // 8, r % 8]) - ref) < 1e-4 * max(1, end - lp)
        assert float(s.useful_ctx[r // 8, r % 8]) == sum(range(lp + 1, end + 1))


def _awkward_logits(key, b: int, v: int) -> jax.Array:
    """Float32 logits with ties, ``-inf`` entries (as top-k/top-p leave them), one all-``-inf``
    row and one row with a NaN."""
    logits = jax.random.normal(key, (b, v), jnp.float32) * 3.0
    logits = jnp.where(jax.random.uniform(jax.random.fold_in(key, 1), (b, v)) < 0.3,
                       -jnp.inf, logits)
    logits = logits.at[0].set(-jnp.inf).at[1, v // 2].set(jnp.nan)
    return logits.at[2, :4].set(7.0)


@pytest.mark.parametrize("shape", [(1, 5), (7, 33), (64, 4099)])
def test_fast_categorical_draws_exactly_jax_random_categorical(shape):
    """``select_tokens``' sampler reproduces ``jax.random.categorical`` bit for bit, one key
    for the batch and one key per row, over many keys."""
    from ttc.decode import _categorical, _categorical_rows

    b, v = shape
    fast = jax.jit(_categorical)
    ref = jax.jit(lambda k, x: jax.random.categorical(k, x, axis=-1))
    fast_rows = jax.jit(_categorical_rows)
    ref_rows = jax.jit(jax.vmap(lambda k, x: jax.random.categorical(k, x)))
    for seed in range(20):
        key = jax.random.key(seed)
        logits = _awkward_logits(jax.random.fold_in(key, 99), b, v) if b > 2 else (
            jax.random.normal(key, shape))
        np.testing.assert_array_equal(np.asarray(fast(key, logits)),
                                      np.asarray(ref(key, logits)))
        keys = jax.random.split(key, b)
        np.testing.assert_array_equal(np.asarray(fast_rows(keys, logits)),
                                      np.asarray(ref_rows(keys, logits)))


def test_fast_argmax_is_the_first_maximum():
    from ttc.decode import _first_argmax

    z = _awkward_logits(jax.random.key(3), 9, 50)
    np.testing.assert_array_equal(np.asarray(_first_argmax(z)), np.asarray(jnp.argmax(z, -1)))
