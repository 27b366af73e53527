"""The host path of tasks whose answers are host work (text tasks,
:func:`ttc.tasks.base.answers_on_host`): answers, oracle verdicts and picks computed outside jit,
between or after the jitted samplers. Each piece is checked against the jitted path on the
arithmetic task flagged as host work, which must give exactly the same results."""

import dataclasses
from typing import ClassVar

import jax
import numpy as np
import pytest

from ttc import rewards as R
from ttc.decode import SamplingParams, generate_solutions
from ttc.evaluate.sources import RewardSource, score_pool
from ttc.search.loop import SearchConfig, run_search
from ttc.tasks.base import answers_on_host

SP = SamplingParams.make(1.0)
# the host path and the jitted loop are different programs that must agree bit for bit
pytestmark = pytest.mark.usefixtures("product_compile")


@pytest.fixture(scope="module")
def host_task(small_task):
    """``small_task`` with ``answers_on_host`` set: the callers take the host path."""

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class HostArithmetic(type(small_task)):
        answers_on_host: ClassVar[bool] = True

    host = HostArithmetic(**{f.name: getattr(small_task, f.name)
                             for f in dataclasses.fields(small_task)})
    assert answers_on_host(host) and not answers_on_host(small_task)
    return host


def _oracle(task, **kw):
    return R.RewardSpec(kind="oracle", window=task.max_step_len, **kw)


@pytest.fixture(scope="module")
def pool(small_task, trained_policy):
    ps = small_task.problems(6, seed=4, split="test")

    def sample(task):
        return generate_solutions(trained_policy.graphdef, trained_policy.params, task,
                                  ps.prompts, ps.prompt_len, num_samples=4, sampling=SP,
                                  key=jax.random.key(2), progress=False)

    return ps, sample


def test_sampled_answers_on_the_host(small_task, host_task, pool):
    _, sample = pool
    a, b = sample(small_task), sample(host_task)
    np.testing.assert_array_equal(a.tokens, b.tokens)
    np.testing.assert_array_equal(a.answers, b.answers)
    assert (a.answers >= 0).any() and len(set(a.answers.ravel().tolist())) > 1


def test_oracle_verdicts_and_pool_scores_on_the_host(small_task, host_task, pool):
    ps, sample = pool
    s = sample(small_task)
    p, n, t = s.tokens.shape
    tokens, length = s.tokens.reshape(p * n, t), s.length.reshape(-1)
    plen, gold = np.repeat(ps.prompt_len, n), np.repeat(ps.gold, n, axis=0)
    ends, mask = map(np.asarray, R.step_ends(small_task, tokens, plen, length,
                                             max_steps=small_task.max_steps + 1))
    want = R.step_verdicts(small_task, tokens, plen, ends, mask, gold)
    np.testing.assert_array_equal(R.step_verdicts(host_task, tokens, plen, ends, mask, gold), want)
    assert want.any() and (mask & ~want).any()
    src = RewardSource(spec=_oracle(small_task, flip=0.2, noise=0.2), params=None, cfg=None)
    a = score_pool(src, small_task, s, ps, seed=3, chunk=8, devices=1)
    b = score_pool(src, host_task, s, ps, seed=3, chunk=8)
    np.testing.assert_array_equal(a.mask, b.mask)
    np.testing.assert_allclose(a.steps, b.steps, rtol=0, atol=1e-6)


@pytest.mark.parametrize("method", ["beam", "dvts", "particle", "rebase", "tempering"])
def test_host_scored_oracle_equals_the_jitted_loop(small_task, host_task, trained_policy,
                                                   method):
    """Search with the oracle read on the host between jitted steps
    (:class:`ttc.search.scored.OracleSteps`), then answers and picks on the host: the jitted
    loop's rows, flips and noise, answers, picks and decode work."""
    pol = trained_policy
    ps = small_task.problems(6, seed=4, split="test")
    cfg = SearchConfig(method=method, beam_width=2)

    def go(t):
        return run_search(pol.graphdef, pol.params, _oracle(small_task, flip=0.2, noise=0.2),
                          None, t, ps.prompts, ps.prompt_len, ps.gold, cfg=cfg, num_samples=4,
                          sampling=SP, key=jax.random.key(7), chunk_rows=8, devices=1)

    a, b = go(small_task), go(host_task)  # one device: no spare devices' repeats charged
    assert len(set(a.chosen.tolist())) > 1
    for f in ("chosen", "answers", "weights", "valid"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f), err_msg=f)
    for k in ("dec_tokens", "dec_ctx", "dec_steps", "iterations"):
        np.testing.assert_array_equal(getattr(a.work, k), getattr(b.work, k), err_msg=k)
    assert b.scorer is None  # the oracle costs nothing


def test_particle_gibbs_refuses_host_scores(host_task, trained_policy):
    ps = host_task.problems(2, seed=4, split="test")
    with pytest.raises(ValueError, match="particle Gibbs"):
        run_search(trained_policy.graphdef, trained_policy.params, _oracle(host_task), None,
                   host_task, ps.prompts, ps.prompt_len, ps.gold,
                   cfg=SearchConfig(method="pgibbs"), num_samples=4, sampling=SP,
                   key=jax.random.key(0))
