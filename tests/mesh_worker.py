"""Runs the samplers on several device meshes in one process with 8 CPU devices, for
``tests/test_mesh.py`` (a subprocess: the device count is fixed when JAX starts).

Usage: ``python tests/mesh_worker.py OUT.npz``. Writes, per layout ``DxM`` (data x model),
the forward logits, the sampled tokens, a particle filter's results with a learned PRM, the
PRM's pool scores, and facts about the placement (parameter and KV-cache shardings, whether the
compiled forward all-reduces over ``model``).
"""

from __future__ import annotations

import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ttc import rewards as R
from ttc.checkpoint import LoadedModel
from ttc.decode import SamplingParams, generate_solutions
from ttc.evaluate.sources import RewardSource, score_pool
from ttc.models import LlamaConfig, create
from ttc.parallel import MODEL, Layout, use_layouts
from ttc.search.loop import SearchConfig, run_search
from ttc.tasks.arithmetic import ArithmeticTask

LAYOUTS = {"1x1": Layout(), "8x1": Layout(data=8), "1x8": Layout(model=8),
           "2x4": Layout(data=2, model=4), "4x2": Layout(data=4, model=2)}
"""The meshes compared (``1x1``: one device, the reference)."""


def main(out: str) -> None:
    assert jax.local_device_count() == 8, jax.devices()
    task = ArithmeticTask(min_ops=1, max_ops=2, modulus=5)
    t = task.max_prompt_len + task.max_solution_len
    # GQA with 8 query and 4 key/value heads: model=8 replicates k/v, model=2 and 4 split them
    cfg = LlamaConfig(vocab_size=task.tokenizer.vocab_size, d_model=32, n_layers=2, n_heads=8,
                      n_kv_heads=4, d_ff=64, max_len=t)
    policy = LoadedModel.from_module(create(cfg, seed=0))
    prm = LoadedModel.from_module(create(dataclasses.replace(cfg, head="scalar"), seed=1))
    spec = R.RewardSpec(kind="prm", graphdef=prm.graphdef, window=task.max_step_len)
    ps = task.problems(12, seed=0, split="test")
    sp = SamplingParams.make(1.0)
    x = jnp.asarray(np.random.default_rng(0).integers(0, cfg.vocab_size, (4, 9)), jnp.int32)
    res: dict[str, np.ndarray] = {}
    for name, layout in LAYOUTS.items():
        pol, rm = policy.on_mesh(layout), prm.on_mesh(layout)
        fwd = jax.jit(lambda p, x: nnx.merge(policy.graphdef, p)(x)[0])
        res[f"{name}/logits"] = np.asarray(fwd(pol.params, x))
        if name == "2x4":
            res[f"{name}/forward_all_reduce"] = np.asarray(
                "all-reduce" in fwd.lower(pol.params, x).compile().as_text())
            q = pol.params["blocks"][0]["q"]["kernel"][...]
            res[f"{name}/q_spec"] = np.asarray(str(q.sharding.spec))
            res[f"{name}/q_shard_shape"] = np.asarray(q.addressable_shards[0].data.shape)
            step = jax.jit(lambda p, tok, c: nnx.merge(policy.graphdef, p)(
                tok, cache=c, write_pos=jnp.zeros((4,), jnp.int32))[1])
            cache = step(pol.params, x, cfg.init_cache(4, 16))
            res[f"{name}/cache_model_axis"] = np.asarray(
                [MODEL in (cache[0][0].sharding.spec[1] or ()) if
                 len(cache[0][0].sharding.spec) > 1 else False])
        s = generate_solutions(policy.graphdef, pol.params, task, ps.prompts, ps.prompt_len,
                               num_samples=4, sampling=sp, key=jax.random.key(3),
                               devices=layout)
        res[f"{name}/tokens"], res[f"{name}/length"] = s.tokens, s.length
        with use_layouts(policy=layout, reward=layout):  # the context the main job sets
            r = run_search(policy.graphdef, pol.params, spec, rm.params, task, ps.prompts,
                           ps.prompt_len, ps.gold, cfg=SearchConfig(method="particle"),
                           num_samples=4, sampling=sp, key=jax.random.key(5))
            for f in ("chosen", "answers", "weights"):
                res[f"{name}/particle/{f}"] = getattr(r, f)
            src = RewardSource(spec=spec, params=rm.params, cfg=rm.cfg)
            sc = score_pool(src, task, s, ps, seed=0)
            res[f"{name}/pool_scores"], res[f"{name}/pool_mask"] = sc.steps, sc.mask
    # disjoint sub-meshes: the policy samples on devices 0-3, the PRM scores on devices 4-7
    pol_l, rm_l = Layout(data=2, model=2), Layout(data=1, model=4, first=4)
    pol, rm = policy.on_mesh(pol_l), prm.on_mesh(rm_l)
    with use_layouts(policy=pol_l, reward=rm_l):
        s = generate_solutions(policy.graphdef, pol.params, task, ps.prompts, ps.prompt_len,
                               num_samples=4, sampling=sp, key=jax.random.key(3))
        sc = score_pool(RewardSource(spec=spec, params=rm.params, cfg=rm.cfg), task, s, ps,
                        seed=0)
    res["split/tokens"], res["split/pool_scores"] = s.tokens, sc.steps
    res["split/reward_devices"] = np.asarray(sorted(
        d.id for d in jax.tree.leaves(rm.params)[0].sharding.device_set))
    np.savez(out, **res)


if __name__ == "__main__":
    main(sys.argv[1])
