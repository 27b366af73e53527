"""Runs the samplers on several device meshes in one process with 8 CPU devices, for
``tests/test_mesh.py`` (a subprocess: the device count is fixed when JAX starts).

Usage: ``python tests/mesh_worker.py OUT.npz``. Writes, per layout ``DxM`` (data x model),
the forward logits, the sampled tokens, a particle filter's results with a learned PRM, the
PRM's pool scores, and facts about the placement (parameter and KV-cache shardings, whether the
compiled forward all-reduces over ``model``); and, under ``hub/DxM``, how a Hugging Face
checkpoint loaded straight onto a mesh (``ttc.hub.load(..., layout=...)``) compares with the
same checkpoint loaded and then placed (``on_mesh``), and which slices its loading read.
"""

from __future__ import annotations

import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import dataclasses
import tempfile
from pathlib import Path

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
    with tempfile.TemporaryDirectory() as tmp:
        res |= hub_loads(Path(tmp))
    np.savez(out, **res)


class _Recorded:
    """A memory-mapped tensor whose slices are recorded as ``(name, shape read)``; it has no
    ``__array__``, so reading it whole any other way fails."""

    def __init__(self, view: np.ndarray, name: str, reads: list) -> None:
        self.view, self.name, self.reads = view, name, reads
        self.shape, self.dtype = view.shape, view.dtype

    def __getitem__(self, index):
        part = self.view[index]
        self.reads.append((self.name, part.shape))
        return part


def _hub_checkpoint(d: Path) -> None:
    """A random 2-layer Llama (8 query, 4 key/value heads; untied head) and a word-level
    tokenizer, saved with ``save_pretrained``."""
    import torch
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = ["<eos>", "<unk>", *"abcdefghijklmnopqrstuvwxyz0123456789"]
    raw = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(
        vocab_size=len(words), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=64,
        tie_word_embeddings=False, eos_token_id=0, bos_token_id=None, pad_token_id=None)
    transformers.LlamaForCausalLM(cfg).float().save_pretrained(d)
    transformers.PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<eos>",
                                         unk_token="<unk>").save_pretrained(d)


def _flat(params: nnx.State) -> dict[str, jax.Array]:
    """``{dotted path: array}`` of a parameter state."""
    from ttc.hub import names

    return {names.path_str(k): v.value for k, v in nnx.to_flat_state(params)}


def hub_loads(tmp: Path) -> dict[str, np.ndarray]:
    """``hub/DxM/...`` for ``2x4`` and ``1x8`` (:func:`_compare`), the specs of a q and a k
    kernel, and the logits (and on ``2x4`` a greedy generation) of the model loaded on the
    mesh, next to ``hub/1x1/...`` of the one-device load."""
    import ttc.hub.hf as hf
    from ttc.hub import load

    _hub_checkpoint(tmp)
    plain = load(tmp)
    ids = np.random.default_rng(0).integers(0, plain.cfg.vocab_size, (2, 7))
    prompt = ["a b c", "x 1"]
    res = {"hub/1x1/logits": plain.logits(ids),
           "hub/1x1/generate": np.asarray(plain.generate(prompt, max_new_tokens=6))}
    read_views = hf.read_safetensors
    for name in ("2x4", "1x8"):
        layout, reads = LAYOUTS[name], []
        hf.read_safetensors = lambda path, reads=reads: {
            k: _Recorded(v, k, reads) for k, v in read_views(path).items()}
        try:
            got = load(tmp, layout=layout)
        finally:
            hf.read_safetensors = read_views
        flat = _flat(got.policy.params)
        res |= {f"hub/{name}/{k}": v for k, v in _compare(
            flat, _flat(plain.policy.on_mesh(layout).params), reads, plain.cfg).items()}
        res |= {f"hub/{name}/q_spec": np.asarray(str(flat["blocks.0.q.kernel"].sharding.spec)),
                f"hub/{name}/k_spec": np.asarray(str(flat["blocks.0.k.kernel"].sharding.spec)),
                f"hub/{name}/logits": got.logits(ids)}
        if name == "2x4":  # one mesh suffices: a compile of prefill + decode takes seconds
            res["hub/2x4/generate"] = np.asarray(got.generate(prompt, max_new_tokens=6))
    return res


def _compare(flat: dict, ref: dict, reads: list, cfg) -> dict[str, np.ndarray]:
    """Per parameter: ``same_values`` (exactly, and the dtype) and ``same_sharding`` as the
    placed ``ref``; per split parameter: ``split_reads_one_shard`` (every slice read of its
    tensor had one shard's shape, in the checkpoint's axes), ``split_reads`` (slices read) and
    ``split_shards`` (distinct shards); per replicated one: ``replicated_read_whole_once``."""
    from ttc.hub import names

    rules = names.param_names(cfg.hf_family, flat, cfg.n_layers)
    out: dict[str, list] = {k: [] for k in (
        "same_values", "same_sharding", "split_reads_one_shard", "split_reads", "split_shards",
        "replicated_read_whole_once")}
    for path, a in flat.items():
        hf_name, transpose = rules[path]
        out["same_values"].append(np.array_equal(np.asarray(a), np.asarray(ref[path]))
                                  and a.dtype == ref[path].dtype)
        out["same_sharding"].append(a.sharding == ref[path].sharding)
        shapes = [shape for n, shape in reads if n == hf_name]
        if a.sharding.is_fully_replicated:
            out["replicated_read_whole_once"].append(
                shapes == [a.shape[::-1] if transpose else a.shape])
            continue
        shard = a.sharding.shard_shape(a.shape)
        out["split_reads_one_shard"].append(
            all(r == (shard[::-1] if transpose else shard) for r in shapes))
        out["split_reads"].append(len(shapes))
        axis = a.sharding.spec.index(MODEL)
        out["split_shards"].append(a.shape[axis] // shard[axis])
    return {k: np.asarray(v) for k, v in out.items()}


if __name__ == "__main__":
    main(sys.argv[1])
