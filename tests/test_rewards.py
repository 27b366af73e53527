"""Reward sources: aggregation, incremental scoring == full scoring, oracle == exact checker."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from ttc import rewards as R
from ttc.checkpoint import LoadedModel
from ttc.models.transformer import create
from ttc.testing import check_step_scores, run_search_steps


def ref_aggregate(scores, mask, how):
    out = []
    for s, m in zip(scores, mask, strict=True):
        v = s[m]
        if len(v) == 0:
            out.append(0.0)
        else:
            out.append({"last": v[-1], "min": v.min(), "prod": np.prod(v), "mean": v.mean()}[how])
    return np.array(out)


@pytest.mark.parametrize("how", R.AGGREGATIONS)
def test_aggregate_matches_reference(how):
    rng = np.random.default_rng(0)
    scores = rng.random((50, 6)).astype(np.float32)
    lens = rng.integers(0, 7, 50)
    mask = np.arange(6)[None] < lens[:, None]
    np.testing.assert_allclose(R.aggregate(jnp.asarray(scores), jnp.asarray(mask), how),
                               ref_aggregate(scores, mask, how), rtol=1e-5, atol=1e-6)


def _prm(policy_cfg, seed=3):
    import dataclasses

    return LoadedModel.from_module(create(dataclasses.replace(policy_cfg, head="scalar"), seed))


@pytest.mark.parametrize("fused", [True, False], ids=["per_token", "window"])
def test_incremental_prm_equals_full_forward(small_task, trained_policy, fused):
    """In-search scoring, token by token inside the decode loop or a window per step, gives the
    full forward's score at every step end."""
    task = small_task
    prm = _prm(trained_policy.cfg)
    spec = R.RewardSpec(kind="prm", graphdef=prm.graphdef, window=task.max_step_len,
                        fused=fused)
    assert spec.per_token == fused and spec.slots == (1 if fused else task.max_step_len)
    ps = task.problems(6, seed=0, split="test")
    s, seen = run_search_steps(trained_policy, spec, prm.params, task, ps, 4, jax.random.key(0),
                               task.max_steps + 1)
    tokens = s.dec.tokens
    full = np.asarray(jax.nn.sigmoid(nnx.merge(prm.graphdef, prm.params)(tokens)[0][..., 0]))
    checked = check_step_scores(seen, tokens, full, task.tokenizer)
    assert checked >= 24


def test_oracle_scores_match_step_checker(small_task, trained_policy):
    task = small_task
    spec = R.RewardSpec(kind="oracle", window=task.max_step_len)
    ps = task.problems(8, seed=1, split="test")
    n = 4
    s, seen = run_search_steps(trained_policy, spec, None, task, ps, n, jax.random.key(2),
                               task.max_steps + 1)
    tokens = np.asarray(s.dec.tokens)
    tok = task.tokenizer
    checked = 0
    for b in range(tokens.shape[0]):
        i = b // n
        text = tok.decode(tokens[b, ps.prompt_len[i]:])
        verdicts = task.check_steps(i, ps, text)
        k = 0
        for moved, last, length in seen:
            if moved[b] and int(tokens[b, length[b] - 1]) in (tok.step_id, tok.EOS) \
                    and k < len(verdicts):
                assert (last[b] > 0.5) == verdicts[k], (text, k)
                k += 1
                checked += 1
    assert checked >= 30


def test_score_solutions_orm_reads_eos_only(small_task, trained_policy):
    task = small_task
    orm = _prm(trained_policy.cfg, seed=5)
    spec = R.RewardSpec(kind="orm", graphdef=orm.graphdef, window=task.max_step_len)
    ps = task.problems(4, seed=0, split="test")
    rows = []
    for i in range(4):
        rows.append(list(ps.prompts[i, : ps.prompt_len[i]]) + list(ps.gold[i][ps.gold[i] > 0]))
    from ttc.tasks.base import pad_to

    t = task.max_prompt_len + task.max_solution_len
    tokens = jnp.asarray(pad_to(rows, t))
    length = jnp.asarray([len(r) for r in rows])
    _, mask = R.score_solutions(spec, orm.params, task, tokens, jnp.asarray(ps.prompt_len),
                                     length, jnp.asarray(ps.gold), jax.random.key(0))
    assert np.all(np.asarray(mask).sum(1) == 1)
    with pytest.raises(ValueError):
        R.RewardSpec(kind="prm")


@pytest.fixture(scope="module")
def pool_of_12(small_task, trained_policy):
    """12 test problems with 16 sampled solutions each."""
    from ttc.decode import SamplingParams, generate_solutions

    ps = small_task.problems(12, seed=3, split="test")
    s = generate_solutions(trained_policy.graphdef, trained_policy.params, small_task,
                           ps.prompts, ps.prompt_len, num_samples=16,
                           sampling=SamplingParams.make(1.0), key=jax.random.key(1))
    return ps, s


@pytest.mark.parametrize("kind,head", [("prm", "scalar"), ("prm", "lm_value"), ("orm", "scalar")])
def test_pool_scoring_equals_full_forward(small_task, trained_policy, pool_of_12, kind, head):
    """score_pool (prompts once, length-sorted chunks of solution tokens only) gives the plain
    full-forward scores of score_solutions, and executes at most 1/0.8 of its useful FLOPs."""
    import dataclasses

    from ttc import flops as F
    from ttc.evaluate import RewardSource, score_pool

    task = small_task
    rm = LoadedModel.from_module(create(dataclasses.replace(trained_policy.cfg, head=head), 4))
    spec = R.RewardSpec(kind=kind, graphdef=rm.graphdef, window=task.max_step_len)
    ps, s = pool_of_12
    p, n, t = s.tokens.shape
    got = score_pool(RewardSource(spec=spec, params=rm.params, cfg=rm.cfg), task, s, ps, seed=0,
                     chunk=32, devices=1)
    ref, ref_mask = R.score_solutions(
        spec, rm.params, task, jnp.asarray(s.tokens.reshape(-1, t)),
        jnp.asarray(np.repeat(ps.prompt_len, n)), jnp.asarray(s.length.reshape(-1)),
        jnp.asarray(np.repeat(ps.gold, n, axis=0)), jax.random.key(0))
    np.testing.assert_array_equal(got.mask.reshape(p * n, -1), np.asarray(ref_mask))
    assert got.mask.any()
    np.testing.assert_allclose(got.steps.reshape(p * n, -1), np.asarray(ref), rtol=0, atol=1e-5)
    useful = (F.prefill_useful(rm.cfg, ps.prompt_len).sum()
              + F.decode_useful(rm.cfg, s.useful_tokens, s.useful_ctx).sum())
    executed = got.prefill_executed.sum() + got.executed.sum()
    assert useful / executed >= 0.8, useful / executed
