"""The log-probability verifier head (``lm_value``): features against a NumPy reference,
incremental scoring == full forward, frozen-trunk training."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ttc import rewards as R
from ttc.checkpoint import LoadedModel
from ttc.models.reward import score_logits
from ttc.models.transformer import create
from ttc.testing import check_step_scores, run_search_steps
from ttc.train import TrainConfig
from ttc.train_reward import LabelConfig, init_from_policy, monte_carlo_labels, train_reward_model


def _verifier(policy, seed=7):
    rm = LoadedModel.from_module(create(dataclasses.replace(policy.cfg, head="lm_value"), seed))
    rm = init_from_policy(rm, policy)
    # non-trivial head weights, so every term of the logit is exercised
    d = nnx.to_pure_dict(rm.params)
    rng = np.random.default_rng(seed)
    d["value"]["kernel"] = jnp.asarray(rng.normal(0, 0.3, d["value"]["kernel"].shape), jnp.float32)
    d["feat_w"] = jnp.asarray([0.7, 1.3], jnp.float32)
    nnx.replace_by_pure_dict(rm.params, d)
    return rm


def ref_logits(policy, rm, tokens, prompt_len):
    """Slow obvious reference: per-row loops over positions with the policy's own log-probs."""
    logits, _ = nnx.merge(policy.graphdef, policy.params)(jnp.asarray(tokens))
    logp = np.asarray(jax.nn.log_softmax(logits, -1), np.float64)
    out, _ = nnx.merge(rm.graphdef, rm.params)(jnp.asarray(tokens))
    value = np.asarray(out[..., -1], np.float64)
    w = np.asarray(nnx.to_pure_dict(rm.params)["feat_w"], np.float64)
    b, t = tokens.shape
    ref = np.zeros((b, t))
    for i in range(b):
        lps = []
        for j in range(t):
            if j >= prompt_len[i]:
                lps.append(logp[i, j - 1, tokens[i, j]])
            mn = min(lps) if lps else 0.0
            mean = float(np.mean(lps)) if lps else 0.0
            ref[i, j] = value[i, j] + w[0] * mn + w[1] * mean
    return ref


def test_lm_value_logits_match_reference(small_task, trained_policy):
    rm = _verifier(trained_policy)
    ps = small_task.problems(6, seed=3, split="test")
    rows = [list(ps.prompts[i, : ps.prompt_len[i]]) + list(ps.gold[i][ps.gold[i] > 0])
            for i in range(6)]
    rng = np.random.default_rng(0)
    for r in rows[::2]:  # corrupt some solution tokens
        r[-2] = int(rng.integers(3, small_task.tokenizer.vocab_size))
    from ttc.tasks.base import pad_to

    tokens = pad_to(rows, max(map(len, rows)))
    model = nnx.merge(rm.graphdef, rm.params)
    out, _ = model(jnp.asarray(tokens))
    pos = np.arange(tokens.shape[1])[None]
    got, _ = score_logits(model, out, jnp.asarray(tokens),
                          solution=jnp.asarray(pos >= ps.prompt_len[:, None]),
                          consumed=jnp.full((6,), tokens.shape[1]))
    lengths = np.array([len(r) for r in rows])
    ref = ref_logits(trained_policy, rm, tokens, ps.prompt_len)
    valid = pos < lengths[:, None]
    np.testing.assert_allclose(np.asarray(got)[valid], ref[valid], rtol=1e-4, atol=1e-4)


def test_incremental_lm_value_equals_full_forward(small_task, trained_policy):
    task = small_task
    rm = _verifier(trained_policy)
    spec = R.RewardSpec(kind="prm", graphdef=rm.graphdef, window=task.max_step_len)
    ps = task.problems(6, seed=0, split="test")
    n = 4
    s, seen = run_search_steps(trained_policy, spec, rm.params, task, ps, n, jax.random.key(0),
                               task.max_steps + 1)
    tokens = np.asarray(s.dec.tokens)
    plen = np.repeat(ps.prompt_len, n)
    full = 1 / (1 + np.exp(-ref_logits(trained_policy, rm, tokens, plen)))
    checked = check_step_scores(seen, tokens, full, task.tokenizer)
    assert checked >= 24


def test_lm_value_training_freezes_trunk(small_task, trained_policy):
    cfg = LabelConfig(problems=16, samples_per_problem=2, rollouts=2)
    d = monte_carlo_labels(trained_policy, small_task, cfg, progress=False)
    rcfg = dataclasses.replace(trained_policy.cfg, head="lm_value")
    tc = TrainConfig(steps=6, batch_size=8, eval_every=3, warmup=1, lr=1e-2, weight_decay=0.1)
    m = train_reward_model("prm", d, d, small_task, rcfg, tc, init_from=trained_policy,
                           group_size=2, progress=False)
    a, b = nnx.to_pure_dict(m.params), nnx.to_pure_dict(trained_policy.params)
    for k in b:  # every policy parameter (LM head included) is bit-identical
        jax.tree.map(np.testing.assert_array_equal, a[k], b[k])
    assert not np.allclose(a["feat_w"], 1.0)  # the head did learn
    assert "within_auc" in m.meta["quality"]
