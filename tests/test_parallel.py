"""Data parallelism over local devices (tests/conftest.py splits the CPU into 2 JAX devices)."""

import dataclasses
import functools
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ttc import rewards as R
from ttc.checkpoint import LoadedModel
from ttc.decode import SamplingParams, generate_solutions
from ttc.evaluate import RewardSource, score_pool
from ttc.models.transformer import create
from ttc.parallel import (
    configure_host_devices,
    device_groups,
    over_rows,
    pinned,
    resolve_devices,
    sampler_devices,
    side_by_side,
)
from ttc.train import TrainConfig, train_policy


def test_configure_host_devices_checks_its_input(caplog):
    for bad in (0, -1, "two", "1.5", True):
        with pytest.raises(ValueError, match="host_devices"):
            configure_host_devices(bad)
    assert len(jax.devices()) == 2  # initialises JAX: from now on the split is fixed
    # a different request is logged, not applied
    with caplog.at_level(logging.WARNING, logger="ttc.parallel"):
        assert configure_host_devices(3) == 2
    assert "ignored" in caplog.text
    assert configure_host_devices("auto") == 2  # XLA_FLAGS names a count: it wins
    assert resolve_devices(None) == 2 and resolve_devices(1) == 1
    with pytest.raises(ValueError, match="devices=3"):
        resolve_devices(3)


def test_over_rows_splits_marked_arguments_and_concatenates_outputs():
    def f(x, w):  # one block of x per device, w whole; a per-device scalar as [1]
        return x * w, jnp.sum(x)[None]

    x, w = jnp.arange(8.0), jnp.asarray(10.0)
    y, s = jax.jit(over_rows(f, 2, split={"x"}))(x, w)
    np.testing.assert_array_equal(y, x * 10)
    np.testing.assert_array_equal(s, [x[:4].sum(), x[4:].sum()])
    assert over_rows(f, 1, split={"x"}) is f
    groups = list(device_groups([1, 2, 3], 2))
    assert groups == [([1, 2], [1, 2]), ([3], [3, 3])]


def test_over_rows_names_arguments_of_a_partial_and_refuses_unknown_names():
    def g(scale, w, x, *, offset):  # ``scale`` bound positionally, ``offset`` by keyword
        return x * w * scale + offset

    local = functools.partial(g, 2.0, offset=1.0)
    x, w = jnp.arange(4.0), jnp.asarray(3.0)
    np.testing.assert_array_equal(jax.jit(over_rows(local, 2, split=("x",)))(w, x), x * 6 + 1)
    for bad in ({"scale"}, {"offset"}, {"nope"}):
        with pytest.raises(ValueError, match="positional parameters"):
            over_rows(local, 2, split=bad)
    with pytest.raises(ValueError, match="positional parameters"):
        over_rows(local, 1, split={"nope"})  # checked with one device too
    with pytest.raises(TypeError, match="collection"):
        over_rows(local, 2, split="x")


def test_score_pool_is_independent_of_device_count(small_task, trained_policy):
    """3 chunks of solutions: the 2-device run scores two side by side, then the third (and a
    repeat of it); every score equals the one-device run's (a PRM and the noisy oracle)."""
    task = small_task
    ps = task.problems(6, seed=2, split="test")
    s = generate_solutions(trained_policy.graphdef, trained_policy.params, task, ps.prompts,
                           ps.prompt_len, num_samples=4, sampling=SamplingParams.make(1.0),
                           key=jax.random.key(0))
    prm = LoadedModel.from_module(create(dataclasses.replace(trained_policy.cfg, head="scalar"), 3))
    sources = [
        RewardSource(spec=R.RewardSpec(kind="prm", graphdef=prm.graphdef,
                                       window=task.max_step_len), params=prm.params, cfg=prm.cfg),
        RewardSource(spec=R.RewardSpec(kind="oracle", window=task.max_step_len, noise=0.3),
                     params=None, cfg=None),
    ]
    assert sampler_devices() == 2
    for src in sources:
        a = score_pool(src, task, s, ps, seed=0, chunk=10, devices=1)
        b = score_pool(src, task, s, ps, seed=0, chunk=10, devices=2)
        np.testing.assert_array_equal(a[1], b[1])
        np.testing.assert_allclose(a[0], b[0], atol=1e-5)
        assert a[1].any() and (a[0][a[1]] > 0).all()


def _params_bytes(model: LoadedModel) -> list[bytes]:
    return [np.asarray(x).tobytes() for x in jax.tree.leaves(model.params)]


def test_side_by_side_training_equals_training_in_turn(small_task, tiny_cfg):
    """Two policies (other seeds, so other data) trained at once, one per device, are
    bit-for-bit the models trained one after the other, validation sampling included; each
    job's arrays live on its own device and its samplers do not shard."""
    cfg = dataclasses.replace(tiny_cfg, vocab_size=small_task.tokenizer.vocab_size,
                              max_len=small_task.max_prompt_len + small_task.max_solution_len)
    tcs = [TrainConfig(steps=12, batch_size=16, warmup=2, eval_every=6, eval_problems=8,
                       stop_accuracy=1.01, seed=s) for s in (3, 4)]
    alone = [train_policy(small_task, cfg, tc, progress=False) for tc in tcs]

    def job(tc):
        def run():
            m = train_policy(small_task, cfg, tc, progress=False)
            return m, sampler_devices(), {d.id for x in jax.tree.leaves(m.params)
                                          for d in x.devices()}
        return run

    together = side_by_side([job(tc) for tc in tcs])
    assert [t[1] for t in together] == [1, 1]
    assert [t[2] for t in together] == [{0}, {1}]
    for a, (b, _, _) in zip(alone, together, strict=True):
        assert _params_bytes(a) == _params_bytes(b)
        assert ([h["val_accuracy"] for h in a.meta["train"]["history"]]
                == [h["val_accuracy"] for h in b.meta["train"]["history"]])
    on_host = together[1][0].on_host()
    assert all(isinstance(x, np.ndarray) for x in jax.tree.leaves(on_host.params))
    assert _params_bytes(on_host) == _params_bytes(alone[1])


def test_side_by_side_orders_results_and_raises_the_first_failure():
    def fail(msg):
        def run():
            raise RuntimeError(msg)
        return run

    def device_id():
        return next(iter(jnp.zeros(2).devices())).id

    # 3 jobs on 2 devices: a thread takes the next job when its first ends
    assert sorted(side_by_side([device_id] * 3)) in ([0, 0, 1], [0, 1, 1])
    assert side_by_side([lambda: 1, lambda: 2, lambda: 3]) == [1, 2, 3]
    with pytest.raises(RuntimeError, match="first"):
        side_by_side([lambda: 0, fail("first"), fail("second")])
    assert side_by_side([device_id], devices=2) == [0]  # one job: this thread, unpinned
    assert side_by_side([sampler_devices, sampler_devices], devices=1) == [2, 2]
    with pinned(jax.devices()[1]):
        assert sampler_devices() == 1 and device_id() == 1
        with pinned():
            assert device_id() == 0
        assert device_id() == 1
    assert sampler_devices() == 2
