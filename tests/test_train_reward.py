"""Monte-Carlo step labels and reward-model training on the tiny fixture policy."""

import dataclasses

import jax
import numpy as np

from ttc.decode import SamplingParams, generate_solutions
from ttc.train import TrainConfig
from ttc.train_reward import LabelConfig, init_from_policy, monte_carlo_labels, train_reward_model


def test_monte_carlo_labels_are_consistent(small_task, trained_policy):
    cfg = LabelConfig(problems=24, samples_per_problem=2, rollouts=8)
    d = monte_carlo_labels(trained_policy, small_task, cfg, progress=False)
    assert d.tokens.shape[0] == 48
    lab, m = d.labels[d.mask], d.mask
    assert np.all((lab >= 0) & (lab <= 1))
    last = m.sum(1) - 1
    ok = last >= 0
    np.testing.assert_array_equal(d.labels[np.flatnonzero(ok), last[ok]], d.final[ok])
    # labels are unbiased value estimates: re-estimate every inner prefix's value with 256
    # fresh rollouts and compare the mean difference with its standard error (K=8 per label)
    inner = m & (np.arange(m.shape[1])[None] < last[:, None])
    rr, kk = np.nonzero(inner)
    assert len(rr) >= 10
    pre_len = d.ends[rr, kk] + 1
    t = d.tokens.shape[1]
    prefixes = np.where(np.arange(t)[None] < pre_len[:, None], d.tokens[rr], 0)
    ref = generate_solutions(trained_policy.graphdef, trained_policy.params, small_task,
                             prefixes, pre_len, num_samples=256,
                             sampling=SamplingParams.make(1.0), key=jax.random.key(99))
    gold = small_task.problems(cfg.problems, seed=20_000 + cfg.seed, split="train").answers
    v = (ref.answers == np.repeat(gold, cfg.samples_per_problem)[rr][:, None]).mean(1)
    diff = d.labels[rr, kk] - v
    se = np.sqrt(np.sum(v * (1 - v) / cfg.rollouts + v * (1 - v) / 256)) / len(rr)
    assert abs(diff.mean()) < 4 * se + 0.02, (diff.mean(), se)
    hard = monte_carlo_labels(trained_policy, small_task, dataclasses.replace(cfg, hard=True),
                              progress=False)
    assert set(np.unique(hard.labels[hard.mask])) <= {0.0, 1.0}


def test_reward_model_trains_and_reports_quality(small_task, trained_policy):
    cfg = LabelConfig(problems=16, samples_per_problem=2, rollouts=2)
    d = monte_carlo_labels(trained_policy, small_task, cfg, progress=False)
    rcfg = dataclasses.replace(trained_policy.cfg, head="scalar")
    tc = TrainConfig(steps=4, batch_size=8, eval_every=2, warmup=1)
    for kind in ("prm", "orm"):
        m = train_reward_model(kind, d, d, small_task, rcfg, tc, init_from=trained_policy,
                               progress=False)
        hist = m.meta["train"]["history"]
        assert len(hist) == 2 and all(np.isfinite(h["loss"]) for h in hist)
        assert "final_auc" in m.meta["quality"]
        assert ("step_accuracy" in m.meta["quality"]) == (kind == "prm")


def test_init_from_policy_copies_trunk(trained_policy):
    from flax import nnx

    from ttc.checkpoint import LoadedModel
    from ttc.models.transformer import create

    rm = LoadedModel.from_module(create(dataclasses.replace(trained_policy.cfg, head="scalar")))
    rm = init_from_policy(rm, trained_policy)
    a, b = nnx.to_pure_dict(rm.params), nnx.to_pure_dict(trained_policy.params)
    np.testing.assert_array_equal(a["embed"]["embedding"], b["embed"]["embedding"])
    assert a["head"]["kernel"].shape[-1] == 1


def test_interrupted_reward_training_resumes_exactly(small_task, trained_policy, tmp_path,
                                                     monkeypatch):
    import jax.tree_util as jtu
    import pytest

    import ttc.train_reward as TR
    from ttc import checkpoint

    cfg = LabelConfig(problems=12, samples_per_problem=2, rollouts=2)
    d = monte_carlo_labels(trained_policy, small_task, cfg, progress=False)
    tc = TrainConfig(steps=6, batch_size=8, eval_every=2, warmup=1, lr=1e-2)
    for head in ("lm_value", "scalar"):
        rcfg = dataclasses.replace(trained_policy.cfg, head=head)
        kw = dict(init_from=trained_policy, group_size=2, progress=False)
        whole = train_reward_model("prm", d, d, small_task, rcfg, tc, out_dir=tmp_path / head,
                                   **kw)
        real = TR.reward_quality
        calls = []

        def crash_on_third(*a, _real=real, **k):
            calls.append(1)
            if len(calls) == 3:
                raise KeyboardInterrupt  # killed after the step-4 snapshot was written
            return _real(*a, **k)

        monkeypatch.setattr(TR, "reward_quality", crash_on_third)
        out = tmp_path / f"{head}-b"
        with pytest.raises(KeyboardInterrupt):
            train_reward_model("prm", d, d, small_task, rcfg, tc, out_dir=out, **kw)
        snap = tmp_path / f"{head}-b.resume.npz"
        assert snap.exists() and not checkpoint.exists(out)
        monkeypatch.setattr(TR, "reward_quality", real)
        resumed = train_reward_model("prm", d, d, small_task, rcfg, tc, out_dir=out, **kw)
        assert not snap.exists() and checkpoint.exists(out)
        assert [h["step"] for h in resumed.meta["train"]["history"]] == [2, 4, 6]
        assert resumed.meta["train"]["selected_step"] == whole.meta["train"]["selected_step"]
        for x, y in zip(jtu.tree_leaves(whole.params), jtu.tree_leaves(resumed.params),
                        strict=True):
            np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-6)
