"""Policy SFT: an interrupted training resumes from its snapshot to the same result."""

import dataclasses

import jax
import numpy as np
import pytest

import ttc.train as T
from ttc import checkpoint


def test_interrupted_training_resumes_exactly(small_task, tiny_cfg, tmp_path, monkeypatch):
    cfg = dataclasses.replace(tiny_cfg, max_len=small_task.max_prompt_len
                              + small_task.max_solution_len)
    tc = T.TrainConfig(steps=12, batch_size=8, lr=3e-3, warmup=2, eval_every=4,
                       eval_problems=8, stop_accuracy=1.01)
    whole = T.train_policy(small_task, cfg, tc, out_dir=tmp_path / "a", progress=False)

    real_eval = T.evaluate_policy
    calls = []

    def crash_on_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # killed after the step-8 snapshot was written
        return real_eval(*args, **kwargs)

    monkeypatch.setattr(T, "evaluate_policy", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        T.train_policy(small_task, cfg, tc, out_dir=tmp_path / "b", progress=False)
    snap = tmp_path / "b.resume.npz"
    assert snap.exists() and not checkpoint.exists(tmp_path / "b")
    monkeypatch.setattr(T, "evaluate_policy", real_eval)
    resumed = T.train_policy(small_task, cfg, tc, out_dir=tmp_path / "b", progress=False)
    assert not snap.exists() and checkpoint.exists(tmp_path / "b")
    assert [h["step"] for h in resumed.meta["train"]["history"]] == [4, 8, 12]
    for x, y in zip(jax.tree.leaves(whole.params), jax.tree.leaves(resumed.params), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-6)
    # a snapshot of a different configuration is ignored (training starts over)
    other = dataclasses.replace(tc, lr=1e-3)
    monkeypatch.setattr(T, "evaluate_policy", crash_on_third)
    calls.clear()
    with pytest.raises(KeyboardInterrupt):
        T.train_policy(small_task, cfg, tc, out_dir=tmp_path / "c", progress=False)
    monkeypatch.setattr(T, "evaluate_policy", real_eval)
    fresh = T.train_policy(small_task, cfg, other, out_dir=tmp_path / "c", progress=False)
    assert [h["step"] for h in fresh.meta["train"]["history"]] == [4, 8, 12]
    assert fresh.meta["train"]["history"][0]["loss"] != whole.meta["train"]["history"][0]["loss"]
