"""The Llama-family decoder against ``transformers``: tiny random Llama (tied, biases, Llama-3
RoPE scaling; and untied), Qwen2 (biases, one sliding layer), Qwen3 (q/k norm, explicit
head_dim), Mistral (sliding window shorter than the sequences) and Gemma 3 (local/global layers,
final soft-capping, linear RoPE scaling on global layers) give the same logits (full forward),
the same logits step by step through the KV cache, and the same greedy tokens; the FLOP ledger
and parameter counts match HF's and XLA's counts.

Every case runs at one batch and length (3 rows, a 13-token prompt and 32 new tokens), so each
compiles three programs only: the full forward, the 13-token prefill and the one-token step."""

from __future__ import annotations

import dataclasses
import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers as T
from flax import nnx

from ttc.checkpoint import LoadedModel
from ttc.hub.hf import load_hf
from ttc.models import Policy, PolicyConfig, config_from_dict, config_to_dict, create, family_of
from ttc.models.llama import Llama, LlamaConfig, rope_inv_freq

TOL = 1e-4  # float32 logits against transformers (the DESIGN.md contract)
# LLVM without its optimisation passes: half the compile time of these tiny programs, same
# IEEE arithmetic (no fast-math either way), so the same logits
FAST_COMPILE = {"xla_backend_optimization_level": 0}
CACHE_TOL = 1e-5  # cached decoding against the full forward
B, PROMPT, NEW = 3, 13, 32
LENGTH = PROMPT + NEW

BASE = dict(vocab_size=160, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
LLAMA3_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 16}
GEMMA_ROPE = {"full_attention": {"rope_type": "linear", "factor": 4.0, "rope_theta": 1e6},
              "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}}
CASES = {
    "llama": (T.LlamaConfig, T.LlamaForCausalLM,
              dict(tie_word_embeddings=True, attention_bias=True, mlp_bias=True,
                   rope_scaling=LLAMA3_ROPE)),
    "qwen2": (T.Qwen2Config, T.Qwen2ForCausalLM,
              dict(use_sliding_window=True, sliding_window=8, max_window_layers=1)),
    "qwen3": (T.Qwen3Config, T.Qwen3ForCausalLM, dict(head_dim=16)),
    "mistral": (T.MistralConfig, T.MistralForCausalLM, dict(sliding_window=8)),
    # attn_logit_softcapping is set to show that it is ignored, as HF's Gemma3Attention does
    "gemma3": (T.Gemma3TextConfig, T.Gemma3ForCausalLM,
               dict(head_dim=16, sliding_window=6,
                    layer_types=["sliding_attention", "full_attention"],
                    query_pre_attn_scalar=12, attn_logit_softcapping=4.0,
                    final_logit_softcapping=5.0, rope_parameters=GEMMA_ROPE)),
}
EXTRA = {"llama_untied": (T.LlamaConfig, T.LlamaForCausalLM, dict(tie_word_embeddings=False))}


def make_hf(case: str, seed: int = 0) -> torch.nn.Module:
    """A tiny HF model with every weight random (norms around their identity: 1 + noise, or
    noise for Gemma's ``1 + w``), scaled so that logits are O(1) and argmaxes well separated."""
    config_cls, model_cls, kw = (CASES | EXTRA)[case]
    torch.manual_seed(seed)
    model = model_cls(config_cls(**BASE | kw, attn_implementation="eager")).eval()
    offset = 0.0 if case == "gemma3" else 1.0
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(offset + 0.3 * torch.randn_like(p))
            else:
                p.copy_(0.15 * torch.randn_like(p))
    model.generation_config.eos_token_id = None  # generate exactly max_new_tokens
    return model


@pytest.fixture(scope="module", autouse=True)
def _torch_float32_one_thread():
    """float32 references; one torch thread (its pool spins against XLA's on 2 shared cores:
    HF's 32-token generate takes 0.1 s on one thread and 1-4 s on two here)."""
    dtype, threads = torch.get_default_dtype(), torch.get_num_threads()
    torch.set_default_dtype(torch.float32)
    torch.set_num_threads(1)
    yield
    torch.set_default_dtype(dtype)
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict:
    """``case -> (hf_model, directory)``: each case saved once with ``save_pretrained``."""
    out = {}
    for case in CASES | EXTRA:
        d = tmp_path_factory.mktemp(case)
        model = make_hf(case)
        model.save_pretrained(d, safe_serialization=True)
        out[case] = (model, d)
    return out


@pytest.fixture(scope="module")
def loaded(saved) -> dict:
    """``case -> (cfg, graphdef, params)`` of :func:`load_hf` in float32."""
    out = {}
    for case, (_, d) in saved.items():
        cfg, model = load_hf(d)
        out[case] = (cfg, *nnx.split(model))
    return out


def hf_logits(model: torch.nn.Module, tokens: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor(tokens)).logits.float().numpy()


@functools.partial(jax.jit, static_argnames=("graphdef",), compiler_options=FAST_COMPILE)
def forward(graphdef, params, tokens):
    return nnx.merge(graphdef, params)(tokens)[0]


@functools.partial(jax.jit, static_argnames=("graphdef",), compiler_options=FAST_COMPILE)
def cached_step(graphdef, params, tokens, cache, write_pos):
    return nnx.merge(graphdef, params)(tokens, cache=cache, write_pos=write_pos)


def greedy(cfg, graphdef, params, prompt: np.ndarray, n_new: int) -> np.ndarray:
    """Greedy decoding of ``n_new`` tokens after ``prompt`` ``[B, P]``: one jitted prefill,
    then jitted one-token cached steps (the same programs as the cached-decode test)."""
    b, p = prompt.shape
    cache = cfg.init_cache(b, p + n_new)
    logits, cache = cached_step(graphdef, params, prompt, cache, jnp.zeros((b,), jnp.int32))
    out = [jnp.argmax(logits[:, -1], -1).astype(jnp.int32)]
    for i in range(1, n_new):
        logits, cache = cached_step(graphdef, params, out[-1][:, None], cache,
                                    jnp.full((b,), p + i - 1, jnp.int32))
        out.append(jnp.argmax(logits[:, 0], -1).astype(jnp.int32))
    return np.stack([np.asarray(o) for o in out], axis=1)


def tokens(b: int, s: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, BASE["vocab_size"], (b, s)).astype(np.int32)


@pytest.mark.parametrize("case", list(CASES | EXTRA))
def test_full_forward_matches_transformers(case, saved, loaded):
    _, graphdef, params = loaded[case]
    toks = tokens(B, LENGTH)
    diff = np.abs(np.asarray(forward(graphdef, params, toks)) - hf_logits(saved[case][0], toks))
    assert diff.max() <= TOL, (case, diff.max())


@pytest.mark.parametrize("case", list(CASES))
def test_cached_decode_matches_full_forward(case, loaded):
    """Rows with prompts of 5, 9 and 13 tokens are prefilled together (shorter rows padded
    with other tokens), then decoded one token at a time, each from its own ``write_pos``."""
    cfg, graphdef, params = loaded[case]
    lens = np.array([5, 9, PROMPT])
    true = tokens(B, LENGTH, seed=2)
    full = np.asarray(forward(graphdef, params, true))
    prompt = np.where(np.arange(PROMPT)[None] < lens[:, None], true[:, :PROMPT],
                      tokens(B, PROMPT, seed=3))
    cache = cfg.init_cache(B, LENGTH)
    out, cache = cached_step(graphdef, params, prompt, cache, jnp.zeros(B, jnp.int32))
    got = [[np.asarray(out)[b, : lens[b]]] for b in range(B)]
    rows = np.arange(B)
    for j in range(NEW):
        pos = np.minimum(lens + j, LENGTH - 1)  # the longest row ends first
        out, cache = cached_step(graphdef, params, true[rows, pos][:, None], cache,
                                 jnp.asarray(pos, jnp.int32))
        for b in range(B):
            if lens[b] + j < LENGTH:
                got[b].append(np.asarray(out)[b])
    for b in range(B):
        row = np.concatenate(got[b])
        assert len(row) == min(lens[b] + NEW, LENGTH)
        diff = np.abs(row - full[b, : len(row)]).max()
        assert diff <= CACHE_TOL, (case, b, diff)
    assert cache[0][0].shape == (B, cfg.n_kv_heads, LENGTH, cfg.head_dim)


@pytest.mark.parametrize("case", list(CASES))
def test_greedy_generation_matches_transformers(case, saved, loaded):
    cfg, graphdef, params = loaded[case]
    prompt = tokens(B, PROMPT, seed=5)
    ours = greedy(cfg, graphdef, params, prompt, NEW)
    with torch.no_grad():
        ref = saved[case][0].generate(torch.tensor(prompt), attention_mask=torch.ones(B, PROMPT),
                                      do_sample=False, max_new_tokens=NEW, pad_token_id=0)
    np.testing.assert_array_equal(ours, ref[:, PROMPT:].numpy())
    # not a coincidence of near-ties: every chosen token wins by more than twice the logit
    # tolerance, so any two models within TOL of each other must pick it
    logits = np.asarray(forward(graphdef, params, np.concatenate([prompt, ours], 1)))
    top2 = np.sort(logits[:, PROMPT - 1 : -1], axis=-1)[..., -2:]
    assert (top2[..., 1] - top2[..., 0]).min() > 2 * TOL


@pytest.mark.parametrize("case", list(CASES | EXTRA))
def test_parameter_counts_match_transformers(case, saved, loaded):
    cfg, _, params = loaded[case]
    hf = saved[case][0]
    assert cfg.n_params == sum(p.numel() for p in hf.parameters())
    assert cfg.n_params == sum(x.size for x in jax.tree.leaves(params))


def test_config_fields_read_from_hf(loaded):
    cfg = {case: loaded[case][0] for case in CASES | EXTRA}
    assert cfg["llama"].tie_embeddings and cfg["llama"].o_bias and cfg["llama"].qkv_bias
    assert cfg["llama"].mlp_bias and not cfg["llama_untied"].tie_embeddings
    assert cfg["qwen2"].qkv_bias and not cfg["qwen2"].o_bias
    assert cfg["qwen2"].windows == (None, 8)
    assert cfg["qwen3"].qk_norm and cfg["qwen3"].head_dim == 16 and cfg["qwen3"].d_attn == 64
    assert cfg["mistral"].windows == (8, 8) and cfg["mistral"].n_kv_heads == 2
    g = cfg["gemma3"]
    assert g.windows == (6, None) and g.family == "gemma3" and g.tie_embeddings
    assert (g.rope_type, g.rope_factor, g.rope_theta, g.rope_local_theta) == (
        "linear", 4.0, 1e6, 1e4)
    assert (g.query_pre_attn_scalar, g.final_softcap, g.attn_softcap) == (12, 5.0, None)
    # the Llama-3 scaling bites on this tiny head (original context 16): no frequency is kept
    scaled = rope_inv_freq(cfg["llama"])
    plain = rope_inv_freq(dataclasses.replace(cfg["llama"], rope_type="default"))
    assert (scaled < plain).all()


def test_flop_ledger_and_windows():
    cfg = LlamaConfig(vocab_size=100, d_model=32, n_layers=3, n_heads=4, n_kv_heads=2,
                      head_dim=16, d_ff=48, sliding_window=8,
                      layer_types=("sliding_attention", "full_attention", "sliding_attention"))
    d, a, kv = 32, 64, 32  # d_model, n_heads * head_dim, n_kv_heads * head_dim
    per_layer = d * a + 2 * d * kv + a * d + 3 * d * 48  # q, k, v, o, gate, up, down
    assert cfg.matmul_params == 3 * per_layer + d * 100
    assert cfg.windows == (8, None, 8)
    assert cfg.flops_per_token(5) == 2 * cfg.matmul_params + 4 * a * 3 * 5
    assert cfg.flops_per_token(20) == 2 * cfg.matmul_params + 4 * a * (8 + 20 + 8)
    tied = dataclasses.replace(cfg, tie_embeddings=True)
    assert tied.matmul_params == cfg.matmul_params  # the tied head still multiplies
    assert tied.n_params == cfg.n_params - d * 100  # ... but is stored once
    shapes = nnx.state(nnx.eval_shape(lambda: create(cfg)), nnx.Param)
    assert cfg.n_params == sum(x.size for x in jax.tree.leaves(shapes))


def test_one_decode_step_matches_cost_analysis():
    """As tests/test_flops.py for the transformer: a matmul-dominated size, so that
    ``2N + 4 * L * d_attn * c`` is the whole story within 10% (RoPE, norms and softmax are the
    rest); GQA does not change the attention FLOPs (queries are grouped, keys not repeated)."""
    cfg = LlamaConfig(vocab_size=32, d_model=256, n_layers=2, n_heads=4, n_kv_heads=2,
                      d_ff=1024, max_len=128)
    graphdef, params = nnx.split(nnx.eval_shape(lambda: create(cfg)))  # shapes suffice
    b, t = 8, 128
    cache = jax.eval_shape(lambda: cfg.init_cache(b, t))

    def step(params, cache, tok, pos):
        return nnx.merge(graphdef, params)(tok, cache=cache, write_pos=pos)

    lowered = jax.jit(step).lower(params, cache, jnp.zeros((b, 1), jnp.int32),
                                  jnp.zeros((b,), jnp.int32))
    cost = lowered.compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    analytic = b * cfg.flops_per_token(t)  # every row attends over the whole cache
    assert abs(float(cost["flops"]) / analytic - 1) < 0.10, (cost["flops"], analytic)


def test_registered_family_and_config_round_trip():
    cfg = LlamaConfig(vocab_size=50, d_model=32, n_heads=4, n_kv_heads=1, d_ff=64,
                      hf_family="gemma3", norm_offset=True, sandwich_norm=True, qk_norm=True,
                      embed_scale=True, sliding_window=4,
                      layer_types=("sliding_attention", "full_attention"), head="lm_value")
    assert isinstance(cfg, PolicyConfig) and family_of(cfg) == "llama"
    hash(cfg)
    d = json.loads(json.dumps(config_to_dict(cfg)))  # JSON turns tuples into lists
    assert config_from_dict(d) == cfg
    model = nnx.eval_shape(lambda: create(cfg))  # shapes only: no eager compute
    assert isinstance(model, Llama) and isinstance(model, Policy)
    assert model.feat_w.value.shape == (2,) and model.value.kernel.value.shape == (32, 1)
    toks = jnp.zeros((2, 5), jnp.int32)
    graphdef, params = nnx.split(model)

    def out_shape(graphdef, params):
        return jax.eval_shape(lambda p: nnx.merge(graphdef, p)(toks)[0], params).shape

    assert out_shape(graphdef, params) == (2, 5, 51)
    scalar = nnx.split(nnx.eval_shape(lambda: create(dataclasses.replace(cfg, head="scalar"))))
    assert out_shape(*scalar) == (2, 5, 1)
    for bad in (dict(n_kv_heads=3), dict(layer_types=("full_attention",)), dict(head="x"),
                dict(sliding_window=None), dict(dtype="float16")):
        with pytest.raises(ValueError):
            dataclasses.replace(cfg, **bad)


def test_attention_softcap():
    """``attn_softcap`` (Gemma-2 style; HF's Gemma 3 never applies it, so no HF family sets
    it): a cap far above the scores changes nothing, a small one changes the logits."""
    cfg = LlamaConfig(vocab_size=40, d_model=16, n_layers=1, n_heads=2, d_ff=32)
    _, state = nnx.split(nnx.eval_shape(lambda: create(cfg)))
    rng = np.random.default_rng(0)
    state = jax.tree.map(lambda x: jnp.asarray(rng.standard_normal(x.shape), x.dtype), state)
    toks = tokens(2, 10) % 40

    def run(cap):
        graphdef = nnx.graphdef(nnx.eval_shape(
            lambda: create(dataclasses.replace(cfg, attn_softcap=cap))))
        return np.asarray(forward(graphdef, state, toks))

    plain = run(None)
    assert np.abs(run(1e6) - plain).max() < 1e-5
    assert np.abs(run(0.1) - plain).max() > 1e-2


def _attended(cfg: LlamaConfig, start: int, n: int) -> float:
    """Token by token: positions ``start .. start + n - 1``, each attending the layers' mean of
    ``min(position + 1, window)``."""
    return sum(np.mean([min(p + 1, w or p + 1) for w in cfg.windows])
               for p in range(start, start + n))


def _windowed(window: int = 3) -> LlamaConfig:
    return LlamaConfig(vocab_size=100, d_model=32, n_layers=3, n_heads=4, n_kv_heads=2,
                       head_dim=16, d_ff=48, sliding_window=window,
                       layer_types=("sliding_attention", "full_attention", "sliding_attention"))


def test_context_sums_count_each_layers_window():
    """``ttc.flops.context_sum`` (the ledger's attended positions) against a token-by-token sum
    of ``flops_per_token``, on NumPy, in jit, and for a config without windows."""
    from ttc import flops as F

    cfg = _windowed()
    rng = np.random.default_rng(0)
    start, n = rng.integers(0, 12, 40), rng.integers(0, 9, 40)
    per_unit = 4.0 * cfg.n_layers * cfg.d_attn
    brute = np.array([sum(cfg.flops_per_token(p + 1) - 2.0 * cfg.matmul_params
                          for p in range(s, s + k)) / per_unit
                      for s, k in zip(start, n, strict=True)])
    np.testing.assert_allclose(brute, [_attended(cfg, s, k) for s, k in zip(start, n, strict=True)],
                               rtol=1e-12)
    np.testing.assert_allclose(F.context_sum(cfg, start, n), brute, rtol=1e-12)
    jitted = jax.jit(lambda s, k: F.context_sum(cfg, s, k))(jnp.asarray(start), jnp.asarray(n))
    np.testing.assert_allclose(np.asarray(jitted), brute, rtol=1e-6)
    plain = dataclasses.replace(cfg, sliding_window=None, layer_types=None)
    assert plain.windows == (None, None, None)
    np.testing.assert_array_equal(F.context_sum(plain, start, n),
                                  [sum(range(s + 1, s + k + 1))
                                   for s, k in zip(start, n, strict=True)])
    assert F.prefill_useful(cfg, 7) == sum(cfg.flops_per_token(c) for c in range(1, 8))


def test_sampler_and_search_ledgers_count_windows(small_task):
    """A windowed policy's pool and a windowed PRM's search scoring charge each generated token
    at its windowed context: the pool's ``useful_ctx`` equals the sum over each sample's tokens
    (prompt ``+ i``) of the layers' mean ``min(position + 1, window)``, which is less than the
    unwindowed sum once solutions pass the window; and the search loop's decode and PRM
    scoring charge their tokens the same way."""
    from ttc import flops as F
    from ttc import rewards as R
    from ttc.decode import SamplingParams, generate_solutions
    from ttc.testing import run_search_steps

    task = small_task
    cfg = dataclasses.replace(_windowed(), vocab_size=task.tokenizer.vocab_size,
                              max_len=task.max_prompt_len + task.max_solution_len)
    policy = LoadedModel.from_module(create(cfg, seed=0))
    ps = task.problems(4, seed=0, split="test")
    s = generate_solutions(policy.graphdef, policy.params, task, ps.prompts, ps.prompt_len,
                           num_samples=3, sampling=SamplingParams.make(1.0),
                           key=jax.random.key(0))
    plen = np.repeat(ps.prompt_len[:, None], 3, 1)
    n = s.useful_tokens
    assert (n > 0).all() and (plen + n > cfg.sliding_window).all()
    want = [_attended(cfg, lp, k) for lp, k in zip(plen.ravel(), n.ravel(), strict=True)]
    np.testing.assert_allclose(s.useful_ctx.ravel(), want, rtol=1e-6)
    assert (s.useful_ctx < plen * n + n * (n + 1) / 2).all()
    prm = LoadedModel.from_module(create(dataclasses.replace(cfg, head="scalar"), seed=1))
    spec = R.RewardSpec(kind="prm", graphdef=prm.graphdef, window=task.max_step_len)
    # the search loop's propose+score (no selection, so every row keeps its own tokens): the
    # policy's decode and the PRM's incremental scoring both charge the windowed contexts
    st, _ = run_search_steps(policy, spec, prm.params, task, ps, 3, jax.random.key(1), steps=3)
    rows_plen = np.repeat(ps.prompt_len, 3)
    for work, length in ((st.dec.useful_ctx, st.dec.length), (st.rew.useful_ctx, st.rew.length)):
        length = np.asarray(length)
        assert (length - rows_plen > 0).all() and (length > cfg.sliding_window).all()
        np.testing.assert_allclose(work, F.context_sum(cfg, rows_plen, length - rows_plen),
                                   rtol=1e-6)
