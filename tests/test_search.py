"""Step-level search: jitted loops against slow obvious references; determinism; retraces;
particle filtering recovers the target posterior."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ttc import rewards as R
from ttc.decode import TRACE_COUNTS, SamplingParams, generate_solutions
from ttc.search.aggregate import majority_vote
from ttc.search.loop import (
    EXECUTED_COUNTERS,
    SearchConfig,
    SearchParams,
    SearchWork,
    _search_jit,
    finish,
    gather_rows,
    gather_rows_window,
    init_search,
    propose_and_score,
    run_search,
)

SP = SamplingParams.make(1.0)


def _oracle(task, **kw):
    return R.RewardSpec(kind="oracle", window=task.max_step_len, **kw)


def ref_select(cfg, last, valid, done, n):
    """NumPy beam/DVTS selection, written the obvious way (loops over problems/subtrees)."""
    b = len(last)
    idx, first = np.arange(b), np.ones(b, bool)
    m = cfg.width(n)
    for p in range(b // n):
        rows = list(range(p * n, (p + 1) * n))
        if all(done[r] for r in rows):
            continue
        score = [last[r] if valid[r] else -np.inf for r in rows]
        if cfg.method == "dvts":
            kept = []
            for g in range(n // m):
                sub = score[g * m : (g + 1) * m]
                kept.append(g * m + int(np.argmax(sub)))
        else:
            kept = sorted(range(n), key=lambda j: (-score[j], j))[: n // m]
        for j, k in enumerate(kept):
            for c in range(m):
                idx[p * n + j * m + c] = p * n + k
                first[p * n + j * m + c] = c == 0
    return idx, first


def ref_rebase(last, valid, done, n, t_b):
    """NumPy REBASE selection, written the obvious way: per problem, each counted finished row
    keeps one slot and the rest of the width goes to the unfinished rows by softmax(r / T_b),
    rounded by largest remainder (ties to the lower index); children follow their parent."""
    b = len(last)
    idx, first = np.arange(b), np.ones(b, bool)
    for p in range(b // n):
        rows = list(range(p * n, (p + 1) * n))
        if all(done[r] for r in rows):
            continue
        open_ = [r for r in rows if not done[r]]
        width = n - sum(1 for r in rows if done[r] and valid[r])
        z = np.array([np.float32(last[r]) / np.float32(t_b) for r in open_], np.float64)
        quota = width * np.exp(z - z.max()) / np.exp(z - z.max()).sum()
        count = {r: int(np.floor(q)) for r, q in zip(open_, quota, strict=True)}
        frac = sorted(open_, key=lambda r: (-(quota[open_.index(r)] - count[r]), r))
        for r in frac[: width - sum(count.values())]:
            count[r] += 1
        slots = []
        for r in rows:
            slots += [r] * (count.get(r, 0) + (1 if done[r] and valid[r] else 0))
        for k, r in enumerate(slots):
            idx[p * n + k] = r
            first[p * n + k] = k == 0 or slots[k - 1] != r
    return idx, first


@pytest.mark.parametrize("method", ["beam", "dvts", "rebase"])
def test_search_matches_python_reference(small_task, trained_policy, method):
    task, pol = small_task, trained_policy
    n = 8
    cfg = SearchConfig(method=method, beam_width=4)
    spec = _oracle(task, noise=0.3)  # noisy scores: no ties, selection matters
    ps = task.problems(5, seed=3, split="test")
    key = jax.random.key(11)
    cache_len = task.max_prompt_len + task.max_solution_len
    args = (jnp.asarray(ps.prompts), jnp.asarray(ps.prompt_len))
    out = _search_jit(pol.graphdef, pol.params, None, *args, jnp.asarray(ps.gold), key[None],
                      SP, SearchParams.make(), reward=spec, task=task, cfg=cfg, num_samples=n,
                      cache_len=cache_len, devices=1)
    # reference: the same propose/score step, Python loop, NumPy selection
    gold_rows = jnp.repeat(jnp.asarray(ps.gold), n, axis=0)
    p4 = (pol.graphdef, pol.params, None, gold_rows)
    s = init_search(p4, spec, task, *args, key, n=n, cache_len=cache_len)
    step = jax.jit(functools.partial(propose_and_score, p4, spec, task, cfg))
    while np.any(~np.asarray(s.dec.done)) and int(s.step) < task.max_steps + 1:
        s = step(s, SP)
        sel = (functools.partial(ref_rebase, t_b=SearchParams.make().balance_temperature)
               if method == "rebase" else functools.partial(ref_select, cfg))
        idx, first = sel(np.asarray(s.last), np.asarray(s.valid), np.asarray(s.dec.done), n)
        s = gather_rows(s, jnp.asarray(idx))
        s = s.replace(valid=s.valid & (jnp.asarray(first) | ~s.dec.done))
    chosen, answers, w, valid = finish(task, cfg, s, n)
    np.testing.assert_array_equal(out.tokens, np.asarray(s.dec.tokens).reshape(5, n, -1))
    np.testing.assert_array_equal(out.chosen, chosen)
    np.testing.assert_array_equal(out.valid, valid)
    # and the final pick is the weighted vote over valid rows
    np.testing.assert_array_equal(chosen, majority_vote(answers, w, valid))


@pytest.mark.parametrize("method", ["beam", "dvts", "lookahead", "particle", "rebase", "pgibbs",
                                    "tempering"])
def test_same_seed_same_result_and_no_retrace(small_task, trained_policy, method):
    task, pol = small_task, trained_policy
    ps = task.problems(6, seed=4, split="test")
    cfg = SearchConfig(method=method, beam_width=2)

    def go(n, seed, problems=ps, temp=1.0, hp=None):
        return run_search(pol.graphdef, pol.params, _oracle(task), None, task, problems.prompts,
                          problems.prompt_len, problems.gold, cfg=cfg, num_samples=n,
                          sampling=SamplingParams.make(temp), key=jax.random.key(seed),
                          hp=hp, max_rows=24)

    a, b = go(4, 0), go(4, 0)
    np.testing.assert_array_equal(a.chosen, b.chosen)
    np.testing.assert_array_equal(a.answers, b.answers)
    for k in SearchWork.names():
        np.testing.assert_array_equal(getattr(a.work, k), getattr(b.work, k))
    go(2, 0)
    before = TRACE_COUNTS["search"]
    go(4, 1, task.problems(6, seed=5, split="test"), temp=0.7,
       hp=SearchParams.make(temperature=0.5, ess_threshold=0.5, balance_temperature=0.7))
    go(2, 3)
    assert TRACE_COUNTS["search"] == before


@pytest.mark.parametrize("method", ["beam", "particle"])
def test_search_is_independent_of_device_count(small_task, trained_policy, method):
    """Chunks side by side on 2 devices give each problem the result it gets on one; with an odd
    number of chunks the spare device repeats the last one, and that work is charged to it."""
    task, pol = small_task, trained_policy
    ps = task.problems(6, seed=4, split="test")
    cfg = SearchConfig(method=method, beam_width=2)

    def go(devices):  # 2 problems per chunk: 3 chunks
        return run_search(pol.graphdef, pol.params, _oracle(task, noise=0.3), None, task,
                          ps.prompts, ps.prompt_len, ps.gold, cfg=cfg, num_samples=4,
                          sampling=SP, key=jax.random.key(3), chunk_rows=8, devices=devices)

    a, b = go(1), go(2)
    for f in ("chosen", "answers", "weights", "valid"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
    last = np.zeros(6, bool)  # the problems of the third chunk (longest prompts first)
    last[np.lexsort((*ps.prompts.T[::-1], -ps.prompt_len))[4:]] = True
    assert EXECUTED_COUNTERS == ("dec_steps", "rew_calls", "look_steps", "look_rew_calls")
    for k in SearchWork.names():
        wa, wb = getattr(a.work, k), getattr(b.work, k)
        if k in EXECUTED_COUNTERS:  # executed work
            np.testing.assert_array_equal(wa[~last], wb[~last])
            np.testing.assert_array_equal(2 * wa[last], wb[last])
        else:  # useful work and iteration counts
            np.testing.assert_array_equal(wa, wb)
    assert a.work.dec_steps.min() > 0


def test_nan_rewards_never_crash(small_task, trained_policy):
    """A PRM that outputs NaN everywhere: scores fall back to 0.5, accuracy stays finite."""
    import dataclasses

    from ttc.checkpoint import LoadedModel
    from ttc.models.transformer import create

    task, pol = small_task, trained_policy
    prm = LoadedModel.from_module(create(dataclasses.replace(pol.cfg, head="scalar"), 1))
    nan_params = jax.tree.map(lambda x: jnp.full_like(x, jnp.nan), prm.params)
    spec = R.RewardSpec(kind="prm", graphdef=prm.graphdef, window=task.max_step_len)
    ps = task.problems(4, seed=0, split="test")
    for method in ("beam", "particle"):
        res = run_search(pol.graphdef, pol.params, spec, nan_params, task, ps.prompts,
                         ps.prompt_len, ps.gold, cfg=SearchConfig(method=method), num_samples=4,
                         sampling=SP, key=jax.random.key(0))
        assert np.all(np.isfinite(res.weights))
        assert np.isfinite(np.mean(res.chosen == ps.answers))


def test_particle_filter_recovers_target_posterior(small_task, trained_policy):
    """With incremental weights G_t = exp(logit(r_t)/T) and resampling every step, the particle
    system targets pi(x) ∝ p(x) prod_t G_t(x). Its pooled answer distribution must match a
    self-normalised importance-sampling estimate of pi from many independent policy samples."""
    task, pol = small_task, trained_policy
    temp = float(np.log((1 - R.EPS) / R.EPS))  # logit(r)/T = ±1 per step for the exact oracle
    spec = _oracle(task)
    ps = task.problems(4, seed=6, split="test")
    n, seeds = 64, 24
    cfg = SearchConfig(method="particle", incremental=True, scheme="multinomial")
    hp = SearchParams.make(temperature=temp, ess_threshold=1.0)
    k = task.num_answers + 1  # answers + invalid
    hist = np.zeros((seeds, len(ps), k))
    for seed in range(seeds):
        res = run_search(pol.graphdef, pol.params, spec, None, task, ps.prompts, ps.prompt_len,
                         ps.gold, cfg=cfg, num_samples=n, sampling=SP,
                         key=jax.random.key(100 + seed), hp=hp)
        for i in range(len(ps)):
            hist[seed, i] = np.bincount(res.answers[i] + 1, minlength=k) / n
    pf = hist.mean(0)
    se_pf = hist.std(0, ddof=1) / np.sqrt(seeds)  # particles within a run are correlated
    # reference: importance sampling from a large independent pool
    ref, se_ref, prior = _posterior_reference(task, pol, ps, spec, temp)
    tv = 0.5 * np.abs(pf - ref).sum(1)
    # the target differs clearly from the policy's own answer distribution ...
    assert np.max(0.5 * np.abs(prior - ref).sum(1)) > 0.1
    # ... and the particle system recovers it: every answer's probability within 4 standard
    # errors (PF seed-to-seed spread and the reference's importance-sampling error) plus 0.01
    # for the O(1/N) bias of a 64-particle filter; and a coarse total-variation bound
    z = np.abs(pf - ref) / np.sqrt(se_pf**2 + se_ref**2 + 1e-12)
    assert np.all(np.abs(pf - ref) <= 4 * np.sqrt(se_pf**2 + se_ref**2) + 0.01), (z.round(1), tv)
    assert np.all(tv < 0.1), tv


def test_particle_gibbs_keeps_each_sweeps_reference(small_task, trained_policy):
    """In every sweep after the first, slot 0 of each problem replays, token for token, a
    particle of the previous sweep (its reference), and survives every resampling; the work of
    all sweeps is counted."""
    task, pol = small_task, trained_policy
    n, sweeps = 4, 3
    cfg = SearchConfig(method="pgibbs", sweeps=sweeps, scheme="multinomial")
    spec = _oracle(task, noise=0.3)
    ps = task.problems(5, seed=3, split="test")
    cache_len = task.max_prompt_len + task.max_solution_len
    out = _search_jit(pol.graphdef, pol.params, None, jnp.asarray(ps.prompts),
                      jnp.asarray(ps.prompt_len), jnp.asarray(ps.gold), jax.random.key(5)[None],
                      SP, SearchParams.make(), reward=spec, task=task, cfg=cfg,
                      num_samples=n * sweeps, cache_len=cache_len, devices=1)
    tokens = np.asarray(out.tokens).reshape(5, sweeps, n, -1)
    assert out.answers.shape == (5, n * sweeps) and np.asarray(out.valid).all()
    for i in range(5):
        for k in range(1, sweeps):
            ref = tokens[i, k, 0]
            assert any((ref == tokens[i, k - 1, j]).all() for j in range(n)), (i, k)
    # every row of every sweep generated, and every sweep's tokens are charged
    plen = np.asarray(ps.prompt_len)
    assert (np.asarray(out.length).reshape(5, -1) > plen[:, None]).all()
    per_sweep = np.asarray(out.work.dec_tokens).reshape(5, sweeps, n).sum(axis=2)
    assert (per_sweep > 0).all()
    assert int(np.asarray(out.work.iterations).sum()) >= sweeps


def test_particle_gibbs_targets_the_posterior(small_task, trained_policy):
    """Particle Gibbs with the weights and resampling of the particle-filter posterior test:
    the pooled answer distribution of every sweep's particles matches the importance-sampling
    estimate of the target within 4 standard errors plus 0.015 (the finite-N bias of 16
    particles per sweep), and within total variation 0.1."""
    task, pol = small_task, trained_policy
    temp = float(np.log((1 - R.EPS) / R.EPS))
    spec = _oracle(task)
    ps = task.problems(4, seed=6, split="test")
    sweeps, n, seeds = 4, 16, 24
    cfg = SearchConfig(method="pgibbs", incremental=True, scheme="multinomial", sweeps=sweeps)
    hp = SearchParams.make(temperature=temp, ess_threshold=1.0)
    k = task.num_answers + 1
    hist = np.zeros((seeds, len(ps), k))
    for seed in range(seeds):
        res = run_search(pol.graphdef, pol.params, spec, None, task, ps.prompts, ps.prompt_len,
                         ps.gold, cfg=cfg, num_samples=n * sweeps, sampling=SP,
                         key=jax.random.key(300 + seed), hp=hp)
        for i in range(len(ps)):
            hist[seed, i] = np.bincount(res.answers[i] + 1, minlength=k) / (n * sweeps)
    pg, se_pg = hist.mean(0), hist.std(0, ddof=1) / np.sqrt(seeds)
    ref, se_ref, prior = _posterior_reference(task, pol, ps, spec, temp)
    assert np.max(0.5 * np.abs(prior - ref).sum(1)) > 0.1
    z = np.abs(pg - ref) / np.sqrt(se_pg**2 + se_ref**2 + 1e-12)
    tv = 0.5 * np.abs(pg - ref).sum(1)
    assert np.all(np.abs(pg - ref) <= 4 * np.sqrt(se_pg**2 + se_ref**2) + 0.015), (z.round(1), tv)
    assert np.all(tv < 0.1), tv


def test_tempering_answers_from_its_temperature_one_chain(small_task, trained_policy):
    """Parallel tempering: only the first chain's particles count in the final pick, which is
    their weighted vote; every chain's work is charged; the chains are not copies."""
    task, pol = small_task, trained_policy
    n, chains = 8, 2
    cfg = SearchConfig(method="tempering", chains=chains)
    ps = task.problems(6, seed=4, split="test")
    hp = SearchParams.make(ladder=4.0)
    res = run_search(pol.graphdef, pol.params, _oracle(task, noise=0.3), None, task,
                     ps.prompts, ps.prompt_len, ps.gold, cfg=cfg, num_samples=n * chains,
                     sampling=SP, key=jax.random.key(2), hp=hp)
    m = n
    assert res.valid[:, :m].all() and not res.valid[:, m:].any()
    np.testing.assert_array_equal(
        res.chosen, np.asarray(majority_vote(jnp.asarray(res.answers), jnp.asarray(res.weights),
                                             jnp.asarray(res.valid))))
    assert (res.work.dec_tokens > 0).all()
    # the hot chain's answers are not a copy of the cold chain's
    assert (res.answers[:, :m] != res.answers[:, m:]).any()


def _posterior_reference(task, pol, ps, spec, temp):
    """Self-normalised importance sampling of the target answer distribution from 8,192
    independent policy samples: its estimate, standard errors and the policy's own answer
    distribution."""
    big = 8192
    k = task.num_answers + 1
    s = generate_solutions(pol.graphdef, pol.params, task, ps.prompts, ps.prompt_len,
                           num_samples=big, sampling=SP, key=jax.random.key(7))
    p, nn_, t = s.tokens.shape
    steps, mask = R.score_solutions(
        spec, None, task, jnp.asarray(s.tokens.reshape(-1, t)),
        jnp.asarray(np.repeat(ps.prompt_len, nn_)), jnp.asarray(s.length.reshape(-1)),
        jnp.asarray(np.repeat(ps.gold, nn_, axis=0)), jax.random.key(0))
    steps, mask = np.asarray(steps), np.asarray(mask)
    logit = np.log(steps) - np.log1p(-steps)
    logw = (np.where(mask, logit, 0.0).sum(1) / temp).reshape(p, nn_)
    ref, se_ref = np.zeros((len(ps), k)), np.zeros((len(ps), k))
    for i in range(len(ps)):
        w = np.exp(logw[i] - logw[i].max())
        ref[i] = np.bincount(s.answers[i] + 1, weights=w, minlength=k) / w.sum()
        ess_i = w.sum() ** 2 / (w**2).sum()
        se_ref[i] = np.sqrt(ref[i] * (1 - ref[i]) / ess_i)
    prior = np.stack([np.bincount(s.answers[i] + 1, minlength=k) / nn_ for i in range(len(ps))])
    return ref, se_ref, prior


def _observable_equal(a, b, lo=0):
    """Two search states agree on everything a later step can read: every leaf but the policy's
    KV cache exactly, the cache on each row's slots ``[lo, length)`` (``lo`` > 0: below it, the
    caller's synthetic caches are not the same in all rows of a problem as real prompts are)."""
    length = np.asarray(a.dec.length)
    flat_a = jax.tree_util.tree_leaves_with_path(a.replace(dec=a.dec.replace(cache=None)))
    flat_b = jax.tree_util.tree_leaves(b.replace(dec=b.dec.replace(cache=None)))
    for (path, x), y in zip(flat_a, flat_b, strict=True):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=str(path))
    for x, y in zip(jax.tree.leaves(a.dec.cache), jax.tree.leaves(b.dec.cache), strict=True):
        x, y = np.asarray(x), np.asarray(y)
        for r, n in enumerate(length):
            np.testing.assert_array_equal(x[r, :, lo:n], y[r, :, lo:n])


def test_windowed_selection_gather_matches_full_gather(small_task, trained_policy):
    """The selection's windowed cache gather is observably the full gather: on a real
    mid-search state (random ancestors within each problem, the identity), and on synthetic
    lengths whose window ends at the last slot (its last piece overlaps the one before)."""
    task, pol = small_task, trained_policy
    n, ps = 4, task.problems(3, seed=2, split="test")
    cache_len = task.max_prompt_len + task.max_solution_len
    gold_rows = jnp.repeat(jnp.asarray(ps.gold), n, axis=0)
    p4 = (pol.graphdef, pol.params, None, gold_rows)
    s = init_search(p4, _oracle(task), task, jnp.asarray(ps.prompts), jnp.asarray(ps.prompt_len),
                    jax.random.key(0), n=n, cache_len=cache_len)
    step = jax.jit(functools.partial(propose_and_score, p4, _oracle(task), task,
                                     SearchConfig(method="beam")))
    rng = np.random.default_rng(0)
    gather = jax.jit(gather_rows_window)
    for _ in range(2):
        s = step(s, SP)
        anc = (np.arange(3)[:, None] * n + rng.integers(0, n, (3, n))).reshape(-1)
        for idx in (anc, np.arange(3 * n)):
            _observable_equal(gather_rows(s, jnp.asarray(idx)), gather(s, jnp.asarray(idx)))
    # synthetic: random caches, a window [t - 13, t) (pieces of 8 slots: the last overlaps)
    t = s.dec.cache_len
    cache = jax.tree.map(lambda c: jnp.asarray(rng.normal(size=c.shape), c.dtype), s.dec.cache)
    length = jnp.asarray(rng.integers(t - 13, t + 1, 3 * n), jnp.int32)
    synth = s.replace(dec=s.dec.replace(cache=cache, prompt_len=jnp.full((3 * n,), t - 13),
                                        length=length))
    _observable_equal(gather_rows(synth, jnp.asarray(anc)), gather(synth, jnp.asarray(anc)), t - 13)


def test_chunking_sorts_problems_and_keeps_caller_order(small_task, trained_policy):
    """run_search queues problems by prompt length in chunks: a problem's result does not
    depend on the caller's order of the problem set, and chunk sizes are accounted right."""
    task, pol = small_task, trained_policy
    ps = task.problems(7, seed=8, split="test")
    perm = np.random.default_rng(1).permutation(len(ps))

    def go(order, chunk_rows):
        return run_search(pol.graphdef, pol.params, _oracle(task), None, task,
                          ps.prompts[order], ps.prompt_len[order], ps.gold[order],
                          cfg=SearchConfig(method="beam", beam_width=2), num_samples=4,
                          sampling=SP, key=jax.random.key(3), chunk_rows=chunk_rows)

    a, b = go(np.arange(len(ps)), 8), go(perm, 8)
    np.testing.assert_array_equal(a.answers[perm], b.answers)
    np.testing.assert_array_equal(a.chosen[perm], b.chosen)
    for k in SearchWork.names():
        np.testing.assert_array_equal(getattr(a.work, k)[perm], getattr(b.work, k))
    # executed decode row-steps: each chunk's loop iterations times all its rows (padding of
    # the last chunk included), spread over its problems
    c = go(np.arange(len(ps)), 12)  # 3 problems per chunk: 3 chunks, the last one padded
    assert np.all(c.work.dec_steps >= c.work.dec_tokens)
