"""The policy interface: the transformer satisfies it, and a second, independent model family
defined here (one layer, one shared key/value head, no positional table) runs through the
sampler, the search loop, incremental reward scoring, checkpoints and the FLOP ledger."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jaxtyping import Array, Float, Int

from ttc import checkpoint
from ttc import flops as F
from ttc import rewards as R
from ttc.checkpoint import LoadedModel
from ttc.decode import SamplingParams, generate_solutions
from ttc.ledger import pool_ledger
from ttc.models import (
    Cache,
    Policy,
    PolicyConfig,
    Transformer,
    TransformerConfig,
    config_from_dict,
    config_to_dict,
    create,
    family_of,
    register,
)
from ttc.models.interface import ledger_flops_per_token
from ttc.search.loop import SearchConfig, run_search
from ttc.testing import check_step_scores, run_search_steps


@dataclasses.dataclass(frozen=True, kw_only=True)
class ToyConfig:
    """A one-layer multi-query attention model without positional embeddings.

    Attributes:
        vocab_size: number of token ids.
        max_len: most positions (only bounds the cache: the model has no positional table).
        d_model: residual width.
        n_heads: query heads; all share one key/value head of ``head_dim``.
        head_dim: width of each head.
        head: ``'lm'`` or ``'scalar'``.
    """

    vocab_size: int
    max_len: int
    d_model: int = 16
    n_heads: int = 2
    head_dim: int = 8
    head: str = "lm"

    @property
    def n_layers(self) -> int:
        return 1

    @property
    def d_attn(self) -> int:
        return self.n_heads * self.head_dim

    @property
    def out_dim(self) -> int:
        return self.vocab_size if self.head == "lm" else 1

    @property
    def matmul_params(self) -> int:
        d, a = self.d_model, self.d_attn
        return d * a + 2 * d * self.head_dim + a * d + d * self.out_dim

    @property
    def n_params(self) -> int:
        return self.matmul_params + self.vocab_size * self.d_model + 2 * self.d_model

    def flops_per_token(self, context: int | float) -> float:
        return ledger_flops_per_token(self.matmul_params, self.n_layers, self.d_attn, context)

    def init_cache(self, batch: int, length: int, dtype=jnp.float32) -> Cache:
        shape = (batch, 1, length, self.head_dim)  # one key/value head
        return ((jnp.zeros(shape, dtype), jnp.zeros(shape, dtype)),)


class ToyLM(nnx.Module):
    """The :class:`ToyConfig` model: RMSNorm, multi-query attention, RMSNorm, head."""

    def __init__(self, cfg: ToyConfig, *, rngs: nnx.Rngs):
        d, a, h = cfg.d_model, cfg.d_attn, cfg.head_dim
        self.cfg = cfg
        self.embed = nnx.Embed(cfg.vocab_size, d, rngs=rngs)
        self.norm = nnx.RMSNorm(d, rngs=rngs)
        self.q = nnx.Linear(d, a, use_bias=False, rngs=rngs)
        self.kv = nnx.Linear(d, 2 * h, use_bias=False, rngs=rngs)
        self.o = nnx.Linear(a, d, use_bias=False, rngs=rngs)
        self.norm_f = nnx.RMSNorm(d, rngs=rngs)
        self.out = nnx.Linear(d, cfg.out_dim, use_bias=False, rngs=rngs)

    def __call__(
        self,
        tokens: Int[Array, "B S"],
        *,
        positions: Int[Array, "B S"] | None = None,
        cache: Cache | None = None,
        write_pos: Int[Array, " B"] | None = None,
    ) -> tuple[Float[Array, "B S O"], Cache | None]:
        cfg = self.cfg
        b, s = tokens.shape
        if cache is not None and write_pos is None:
            write_pos = jnp.zeros((b,), jnp.int32)
        if positions is None:
            base = write_pos[:, None] if write_pos is not None else 0
            positions = jnp.broadcast_to(base + jnp.arange(s, dtype=jnp.int32)[None], (b, s))
        x = self.embed(tokens)
        h = self.norm(x)
        q = self.q(h).reshape(b, s, cfg.n_heads, cfg.head_dim).transpose(0, 2, 1, 3)
        k, v = (a[:, None] for a in jnp.split(self.kv(h), 2, axis=-1))  # [B, 1, S, Dh]
        if cache is None:
            keys, values, key_pos, new_cache = k, v, positions, None
        else:
            (ck, cv), = cache
            upd = jax.vmap(lambda c, u, i: jax.lax.dynamic_update_slice(c, u, (0, i, 0)))
            keys, values = upd(ck, k, write_pos), upd(cv, v, write_pos)
            new_cache = ((keys, values),)
            key_pos = jnp.broadcast_to(jnp.arange(ck.shape[2])[None], (b, ck.shape[2]))
        scores = jnp.einsum("bhsd,btd->bhst", q, keys[:, 0]) / math.sqrt(cfg.head_dim)
        mask = key_pos[:, None, None, :] <= positions[:, None, :, None]
        probs = jax.nn.softmax(jnp.where(mask, scores, jnp.finfo(scores.dtype).min), axis=-1)
        att = jnp.einsum("bhst,btd->bshd", probs, values[:, 0]).reshape(b, s, cfg.d_attn)
        x = x + self.o(att)
        return self.out(self.norm_f(x)), new_cache


register("toy", ToyConfig, ToyLM)


@pytest.fixture(scope="module")
def toy_cfg(small_task) -> ToyConfig:
    return ToyConfig(vocab_size=small_task.tokenizer.vocab_size,
                     max_len=small_task.max_prompt_len + small_task.max_solution_len)


@pytest.fixture(scope="module")
def toy_policy(toy_cfg) -> LoadedModel:
    return LoadedModel.from_module(create(toy_cfg, seed=0))


def test_transformer_satisfies_the_interface(tiny_cfg, tiny_policy):
    assert isinstance(tiny_cfg, PolicyConfig)
    assert isinstance(nnx.merge(tiny_policy.graphdef, tiny_policy.params), Policy)
    assert isinstance(create(tiny_cfg), Transformer)
    assert family_of(tiny_cfg) == "transformer"
    assert config_from_dict(config_to_dict(tiny_cfg)) == tiny_cfg
    # checkpoints written before families were recorded name none: they are transformers
    assert config_from_dict(dataclasses.asdict(tiny_cfg)) == tiny_cfg
    assert tiny_cfg.d_attn == tiny_cfg.d_model
    assert tiny_cfg.flops_per_token(7) == ledger_flops_per_token(
        tiny_cfg.matmul_params, tiny_cfg.n_layers, tiny_cfg.d_attn, 7)


def test_toy_family_is_registered_and_checkpoints(toy_cfg, toy_policy, tmp_path):
    assert isinstance(toy_cfg, PolicyConfig) and not isinstance(toy_cfg, TransformerConfig)
    module = create(toy_cfg, seed=0)
    assert isinstance(module, ToyLM) and isinstance(module, Policy)
    assert family_of(toy_cfg) == "toy"
    assert config_from_dict(config_to_dict(toy_cfg)) == toy_cfg
    register("toy", ToyConfig, ToyLM)  # idempotent
    with pytest.raises(ValueError):
        register("toy", TransformerConfig, Transformer)
    checkpoint.save(tmp_path / "toy", toy_policy)
    back = checkpoint.load(tmp_path / "toy")
    assert back.cfg == toy_cfg
    toks = jnp.arange(12, dtype=jnp.int32).reshape(2, 6) % toy_cfg.vocab_size
    np.testing.assert_array_equal(nnx.merge(back.graphdef, back.params)(toks)[0],
                                  nnx.merge(toy_policy.graphdef, toy_policy.params)(toks)[0])


def test_toy_cached_forward_equals_full_forward(toy_cfg, toy_policy):
    @jax.jit
    def run(params, toks, cache, write_pos):
        m = nnx.merge(toy_policy.graphdef, params)
        return m(toks, cache=cache, write_pos=write_pos) if cache is not None else m(toks)

    params = toy_policy.params
    toks = jax.random.randint(jax.random.key(0), (3, 20), 0, toy_cfg.vocab_size)
    full, none = run(params, toks, None, None)
    assert none is None
    cache = toy_cfg.init_cache(3, 24)
    outs = []
    o, cache = run(params, toks[:, :7], cache, jnp.zeros(3, jnp.int32))
    outs.append(o)
    for t in range(7, 20):
        o, cache = run(params, toks[:, t : t + 1], cache, jnp.full(3, t, jnp.int32))
        outs.append(o)
    np.testing.assert_allclose(np.concatenate(outs, 1), full, atol=1e-5, rtol=0)
    assert cache[0][0].shape == (3, 1, 24, toy_cfg.head_dim)


def test_toy_family_samples_through_the_sampler(small_task, toy_cfg, toy_policy):
    """Every stored log-likelihood of the continuous-batching sampler is the toy's full
    forward's, and the FLOP ledger charges the toy config's own ``flops_per_token``."""
    task = small_task
    ps = task.problems(5, seed=1, split="test")
    s = generate_solutions(toy_policy.graphdef, toy_policy.params, task, ps.prompts,
                           ps.prompt_len, num_samples=3, sampling=SamplingParams.make(1.0),
                           key=jax.random.key(3), slots=4, devices=1)
    rows = s.tokens.reshape(15, -1)
    full, _ = nnx.merge(toy_policy.graphdef, toy_policy.params)(jnp.asarray(rows))
    logp = np.asarray(jax.nn.log_softmax(full, -1))
    for r in range(15):
        lp, end = int(ps.prompt_len[r // 3]), int(s.length[r // 3, r % 3])
        assert end > lp
        ref = sum(logp[r, j - 1, rows[r, j]] for j in range(lp, end))
        assert abs(float(s.loglik[r // 3, r % 3]) - ref) < 1e-4 * max(1, end - lp)
        assert float(s.useful_ctx[r // 3, r % 3]) == sum(range(lp + 1, end + 1))
    led = pool_ledger(toy_cfg, s, ps, 3)
    assert 0 < led.total_useful <= led.total_executed
    ref_dec = np.mean([sum(toy_cfg.flops_per_token(c) for c in range(
        int(ps.prompt_len[r // 3]) + 1, int(s.length[r // 3, r % 3]) + 1)) for r in range(15)])
    assert led.useful["policy_decode"] == pytest.approx(3 * ref_dec, rel=1e-12)


def test_flop_ledger_reads_the_toy_config(toy_cfg):
    c = toy_cfg
    assert c.matmul_params == 16 * 16 + 2 * 16 * 8 + 16 * 16 + 16 * c.vocab_size
    assert F.decode_useful(c, 1, 9) == c.flops_per_token(9)
    assert F.decode_useful(c, 2, 9) == c.flops_per_token(4) + c.flops_per_token(5)
    assert F.prefill_useful(c, 3) == sum(c.flops_per_token(k) for k in (1, 2, 3))
    assert F.prefill_executed(c, 2, 30) == 2 * c.flops_per_token(30)
    assert F.decode_executed(c, 5, 30) == 5 * c.flops_per_token(30)
    assert c.flops_per_token(10) == 2.0 * c.matmul_params + 4.0 * 1 * 16 * 10


def test_toy_family_runs_search_with_a_toy_prm(small_task, toy_cfg, toy_policy):
    """Beam search with a toy policy and a toy PRM (``head='scalar'``): the incremental step
    scores over the PRM's own cache equal its full forward, and the whole jitted search runs."""
    task = small_task
    prm = LoadedModel.from_module(create(dataclasses.replace(toy_cfg, head="scalar"), seed=4))
    spec = R.RewardSpec(kind="prm", graphdef=prm.graphdef, window=task.max_step_len)
    ps = task.problems(4, seed=2, split="test")
    st, seen = run_search_steps(toy_policy, spec, prm.params, task, ps, 4, jax.random.key(5),
                                task.max_steps + 1)
    tokens = st.dec.tokens
    full = np.asarray(jax.nn.sigmoid(nnx.merge(prm.graphdef, prm.params)(tokens)[0][..., 0]))
    assert check_step_scores(seen, tokens, full, task.tokenizer) >= 4
    res = run_search(toy_policy.graphdef, toy_policy.params, spec, prm.params, task, ps.prompts,
                     ps.prompt_len, ps.gold, cfg=SearchConfig(method="beam", beam_width=2),
                     num_samples=4, sampling=SamplingParams.make(1.0), key=jax.random.key(6),
                     devices=1)
    assert res.chosen.shape == (4,) and res.answers.shape == (4, 4)
    assert (res.work.dec_tokens > 0).all() and (res.work.rew_tokens > 0).all()
