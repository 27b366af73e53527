"""The analytic FLOP ledger against XLA's cost analysis of one decode step."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ttc import flops as F
from ttc.decode import Samples
from ttc.ledger import pool_ledger
from ttc.models import TransformerConfig, create, init_cache


def test_one_decode_step_matches_cost_analysis():
    # matmul-dominated size so that the ledger's 2N + 4·L·d·c is the whole story within 10%
    cfg = TransformerConfig(vocab_size=32, d_model=256, n_layers=2, n_heads=4, d_ff=1024,
                            max_len=128)
    graphdef, params = nnx.split(create(cfg))
    b, t = 8, 128
    cache = init_cache(cfg, b, t)

    def step(params, cache, tok, pos):
        return nnx.merge(graphdef, params)(tok, cache=cache, write_pos=pos)

    lowered = jax.jit(step).lower(params, cache, jnp.zeros((b, 1), jnp.int32),
                                  jnp.zeros((b,), jnp.int32))
    cost = lowered.compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    xla = float(cost["flops"])
    # executed: every row attends over the whole cache of t slots
    analytic = b * cfg.flops_per_token(t)
    assert abs(xla / analytic - 1) < 0.10, (xla, analytic)


def test_ledger_components_and_linearity():
    cfg = TransformerConfig(vocab_size=19, d_model=32, n_layers=2, n_heads=4, d_ff=64, max_len=40)
    assert cfg.matmul_params == 2 * (4 * 32 * 32 + 2 * 32 * 64) + 32 * 19
    assert F.prefill_useful(cfg, 3) == sum(cfg.flops_per_token(c) for c in (1, 2, 3))
    assert F.decode_useful(cfg, 2, 9) == cfg.flops_per_token(4) + cfg.flops_per_token(5)

    class P:  # minimal problem set
        prompts = np.zeros((2, 6), np.int32)
        prompt_len = np.array([4, 6])

    s = Samples(tokens=np.zeros((2, 4, 40)), length=np.zeros((2, 4)), answers=np.zeros((2, 4)),
                loglik=np.zeros((2, 4)), useful_tokens=np.full((2, 4), 10),
                useful_ctx=np.full((2, 4), 100.0), executed_row_steps=np.full((2, 4), 12),
                cache_len=40)
    totals = [pool_ledger(cfg, s, P, k) for k in (1, 2, 4)]
    dec = [t.useful["policy_decode"] for t in totals]
    assert dec[1] == 2 * dec[0] and dec[2] == 4 * dec[0]
    assert totals[0].useful["policy_prefill"] == totals[2].useful["policy_prefill"]
    assert all(t.total_executed >= t.total_useful for t in totals)


def test_bucketed_prefill_matches_cost_analysis():
    """A prompt run at a static length L into an L-slot cache costs L * flops_per_token(L):
    what the sampler charges to a prefill bucket (``Samples.prefill_tokens/prefill_ctx``)."""
    cfg = TransformerConfig(vocab_size=32, d_model=256, n_layers=2, n_heads=4, d_ff=1024,
                            max_len=128)
    graphdef, params = nnx.split(create(cfg))
    b, length = 8, 48

    def run(params, tok):
        cache = init_cache(cfg, b, length)
        return nnx.merge(graphdef, params)(tok, cache=cache, write_pos=jnp.zeros((b,), jnp.int32))

    cost = jax.jit(run).lower(params, jnp.zeros((b, length), jnp.int32)).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    analytic = float(F.forward_flops(cfg, b * length, b * length * length))
    assert abs(float(cost["flops"]) / analytic - 1) < 0.10, (cost["flops"], analytic)


def test_pool_ledger_of_the_sampler(task, tiny_policy):
    """The ledger of a real pool: executed covers useful in every component, the prefill is
    charged at its bucket length (not the whole cache), and the decode's executed row-steps
    add up to whole loop iterations of every slot."""
    from ttc.decode import SamplingParams, generate_solutions, prefill_buckets

    ps = task.problems(12, seed=0, split="test")  # 3 whole chunks of 4 problems: no padding
    s = generate_solutions(tiny_policy.graphdef, tiny_policy.params, task, ps.prompts,
                           ps.prompt_len, num_samples=4, sampling=SamplingParams.make(1.0),
                           key=jax.random.key(0), slots=8, queue_rows=16)
    assert set(s.prefill_tokens.tolist()) <= set(prefill_buckets(ps.prompts.shape[1]))
    assert (s.prefill_tokens >= ps.prompt_len).all()
    np.testing.assert_allclose(s.prefill_ctx, s.prefill_tokens.astype(float) ** 2)
    assert s.executed_row_steps.sum() % 8 == 0
    # the sampler's context counter is the closed form of the ledger (no windows here), so the
    # verifier's pool ledger, which recomputes it for its own windows, charges the same
    plen = np.repeat(ps.prompt_len[:, None], 4, 1)
    np.testing.assert_array_equal(
        np.asarray(F.context_sum(tiny_policy.cfg, plen, s.useful_tokens), np.float32),
        s.useful_ctx)
    for k in (1, 4):
        led = pool_ledger(tiny_policy.cfg, s, ps, k)
        for c in led.useful:
            assert led.executed[c] >= led.useful[c] * (1 - 1e-9), c
    old = F.prefill_executed(tiny_policy.cfg, ps.prompts.shape[1], s.cache_len)
    assert led.executed["policy_prefill"] < old
