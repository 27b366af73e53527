"""Device meshes (``data x model``): the samplers give the same tokens and results on every
mesh as on one device (8 CPU devices in a subprocess, ``tests/mesh_worker.py``), parameters
split by their family's partition rules, and mistaken layouts refused with the sizes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from ttc.checkpoint import LoadedModel
from ttc.models import LlamaConfig, create
from ttc.parallel import (
    Layout,
    over_rows,
    partition_specs,
    resolve_layout,
    use_layouts,
)

MESHES = ("8x1", "1x8", "2x4", "4x2")
EXACT = ("tokens", "length", "particle/chosen", "particle/answers", "pool_mask")
CLOSE = ("logits", "particle/weights", "pool_scores")


@pytest.fixture(scope="module")
def meshes(tmp_path_factory) -> dict[str, np.ndarray]:
    out = tmp_path_factory.mktemp("mesh") / "mesh.npz"
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_NUM_CPU_DEVICES")}
    worker = Path(__file__).with_name("mesh_worker.py")
    run = subprocess.run([sys.executable, str(worker), str(out)], env=env, capture_output=True,
                         text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-4000:]
    return dict(np.load(out))


@pytest.mark.parametrize("mesh", MESHES)
def test_every_mesh_samples_what_one_device_samples(meshes, mesh):
    for f in EXACT:
        np.testing.assert_array_equal(meshes[f"{mesh}/{f}"], meshes[f"1x1/{f}"], err_msg=f)
    for f in CLOSE:  # a model split sums in another order: last bits only
        np.testing.assert_allclose(meshes[f"{mesh}/{f}"], meshes[f"1x1/{f}"], rtol=0,
                                   atol=1e-5, err_msg=f)
    assert meshes["1x1/tokens"].std() > 0 and meshes["1x1/pool_mask"].any()  # not all padding


def test_model_axis_splits_heads_and_cache_and_all_reduces(meshes):
    assert str(meshes["2x4/q_spec"]) == "P(None, 'model')"
    assert tuple(meshes["2x4/q_shard_shape"]) == (32, 8)  # 8 heads x 4 wide, a quarter each
    assert bool(meshes["2x4/forward_all_reduce"])
    assert bool(meshes["2x4/cache_model_axis"][0])  # the KV cache split like its heads


def test_policy_and_reward_on_disjoint_sub_meshes(meshes):
    assert list(meshes["split/reward_devices"]) == [4, 5, 6, 7]
    np.testing.assert_array_equal(meshes["split/tokens"], meshes["1x1/tokens"])
    np.testing.assert_allclose(meshes["split/pool_scores"], meshes["1x1/pool_scores"], rtol=0,
                               atol=1e-5)


@pytest.mark.parametrize("mesh", ("2x4", "1x8"))
def test_hub_load_onto_a_mesh_reads_only_each_devices_shard(meshes, mesh):
    h = {k.removeprefix(f"hub/{mesh}/"): v for k, v in meshes.items()
         if k.startswith(f"hub/{mesh}/")}
    # every parameter exactly as loaded on one device and placed with on_mesh, same sharding
    assert h["same_values"].size == 21 and h["same_values"].all()
    assert h["same_sharding"].all()
    # split parameters: each distinct shard read once, with one shard's shape (never whole)
    assert h["split_reads_one_shard"].size > 0 and h["split_reads_one_shard"].all()
    model = int(mesh.split("x")[1])
    np.testing.assert_array_equal(h["split_shards"], model)
    np.testing.assert_array_equal(h["split_reads"], h["split_shards"])
    assert h["replicated_read_whole_once"].all()  # norms, embedding, head (and k/v at 1x8)
    assert str(h["q_spec"]) == "P(None, 'model')"
    assert str(h["k_spec"]) == ("P(None, 'model')" if model == 4 else "P()")  # 4 kv heads
    np.testing.assert_allclose(h["logits"], meshes["hub/1x1/logits"], rtol=0, atol=1e-5)
    if mesh == "2x4":
        np.testing.assert_array_equal(h["generate"], meshes["hub/1x1/generate"])
        assert len(set("".join(meshes["hub/1x1/generate"]).split())) > 2  # not one token


def _cfg(**kw) -> LlamaConfig:
    return LlamaConfig(vocab_size=19, d_model=32, n_layers=1, n_heads=8, n_kv_heads=4,
                       d_ff=64, **kw)


def test_partition_rules_split_whole_heads_and_replicate_what_cannot_split():
    from ttc.models import partition_rules

    model = LoadedModel.from_module(create(_cfg(), seed=0))

    def specs(m):
        flat = jax.tree_util.tree_flatten_with_path(
            partition_specs(model.params, partition_rules(model.cfg, m)))[0]
        return {jax.tree_util.keystr(k, simple=True, separator="/"): v for k, v in flat}

    two, eight = specs(2), specs(8)
    assert two["blocks/0/k/kernel/value"] == jax.sharding.PartitionSpec(None, "model")
    assert eight["blocks/0/k/kernel/value"] == jax.sharding.PartitionSpec()  # 4 kv heads
    assert eight["blocks/0/q/kernel/value"] == jax.sharding.PartitionSpec(None, "model")
    assert two["blocks/0/down/kernel/value"] == jax.sharding.PartitionSpec("model", None)
    assert two["embed/embedding/value"] == jax.sharding.PartitionSpec()


def test_layout_errors_name_the_sizes():
    model = LoadedModel.from_module(create(_cfg(), seed=0))
    with pytest.raises(ValueError, match="model=3 does not divide the model's n_heads=8"):
        model.on_mesh(Layout(model=3))
    with pytest.raises(ValueError, match="needs 4 devices, but this process has 2"):
        model.on_mesh(Layout(data=2, model=2))
    with pytest.raises(ValueError, match="needs 3 devices"):
        resolve_layout(Layout(data=2, first=1))
    for bad in (dict(data=0), dict(model=-1), dict(first=-1), dict(data=True), dict(data=1.5)):
        with pytest.raises(ValueError, match="Layout"):
            Layout(**bad)


def test_hub_load_onto_a_mesh_checks_the_split_first_and_places_as_on_mesh(tmp_path):
    from ttc.hub import load, save

    save(LoadedModel.from_module(create(_cfg(), seed=0)), tmp_path)
    with pytest.raises(ValueError, match="model=3 does not divide the model's n_heads=8"):
        load(tmp_path, layout=Layout(model=3))
    with pytest.raises(ValueError, match="needs 4 devices, but this process has 2"):
        load(tmp_path, layout=Layout(data=2, model=2))
    want = load(tmp_path).policy.on_mesh(Layout(model=2)).params
    got = load(tmp_path, layout=Layout(model=2)).policy.params
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        assert a.sharding == b.sharding and a.dtype == b.dtype


def test_use_layouts_sets_each_roles_default():
    a, b = Layout(data=2), Layout(first=1)
    assert resolve_layout(None) == Layout(data=2)  # tests/conftest.py: 2 CPU devices
    with use_layouts(policy=b, reward=a):
        assert resolve_layout(None, "policy") == b and resolve_layout(None, "reward") == a
        assert resolve_layout(1) == Layout()  # an explicit count wins
    assert resolve_layout(None, "reward") == Layout(data=2)


def test_over_rows_on_a_one_device_mesh_runs_there():
    def f(x):
        return x * 2

    fn = jax.jit(over_rows(f, Layout(first=1), split={"x"}))
    y = fn(np.arange(4.0))
    np.testing.assert_array_equal(y, np.arange(4.0) * 2)
    assert {d.id for d in y.sharding.device_set} == {jax.local_devices()[1].id}
