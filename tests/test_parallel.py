"""Data parallelism over local devices (tests/conftest.py splits the CPU into 2 JAX devices)."""

import dataclasses
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
    resolve_devices,
    sampler_devices,
)


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
    y, s = jax.jit(over_rows(f, 2, (True, False)))(x, w)
    np.testing.assert_array_equal(y, x * 10)
    np.testing.assert_array_equal(s, [x[:4].sum(), x[4:].sum()])
    assert over_rows(f, 1, (True, False)) is f
    groups = list(device_groups([1, 2, 3], 2))
    assert groups == [([1, 2], [1, 2]), ([3], [3, 3])]


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
