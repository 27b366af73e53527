"""Hugging Face checkpoints in and out: sharded loading, ``save_hf`` round trips through
``transformers`` (every Llama family, and ttc's synthetic Transformer as GPT-2), bfloat16 on
disk and in memory, the config translation, and the errors of bad checkpoints."""

from __future__ import annotations

import copy
import functools
import json

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
import torch
import transformers as T
from flax import nnx
from safetensors.numpy import load_file, save_file
from test_llama import _torch_float32_one_thread, forward, hf_logits  # noqa: F401 (autouse)

from ttc.hub import config_from_hf, config_to_hf, load_hf, load_hf_tensors, save_hf
from ttc.hub.hf import read_safetensors
from ttc.models import TransformerConfig, create
from ttc.models.llama import LlamaConfig

TOL = 1e-4  # float32 logits against transformers (the DESIGN.md contract)
# LLVM without its optimisation passes: half the compile time of these tiny programs, same
# IEEE arithmetic (no fast-math either way), so the same logits
FAST_COMPILE = {"xla_backend_optimization_level": 0}
BASE = dict(vocab_size=120, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
FAMILIES = {
    "llama": (T.LlamaConfig, T.LlamaForCausalLM,
              dict(rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                 "high_freq_factor": 4.0,
                                 "original_max_position_embeddings": 16})),
    "qwen2": (T.Qwen2Config, T.Qwen2ForCausalLM,
              dict(tie_word_embeddings=True, use_sliding_window=True, sliding_window=8,
                   max_window_layers=1)),
    "qwen3": (T.Qwen3Config, T.Qwen3ForCausalLM, dict(head_dim=16, attention_bias=True)),
    "mistral": (T.MistralConfig, T.MistralForCausalLM, dict(sliding_window=8)),
    "gemma3": (T.Gemma3TextConfig, T.Gemma3ForCausalLM,
               dict(head_dim=16, sliding_window=6, query_pre_attn_scalar=12,
                    layer_types=["sliding_attention", "full_attention"],
                    final_logit_softcapping=5.0)),
}


def make_hf(family: str, seed: int = 0, **overrides) -> torch.nn.Module:
    """A tiny HF model of ``family`` with every weight random (norms around identity)."""
    config_cls, model_cls, kw = FAMILIES[family]
    torch.manual_seed(seed)
    model = model_cls(config_cls(**BASE | kw | overrides, attn_implementation="eager")).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            centre = 1.0 if "norm" in name and family != "gemma3" else 0.0
            p.copy_(centre + (0.3 if "norm" in name else 0.15) * torch.randn_like(p))
    return model




@functools.partial(jax.jit, static_argnames=("graphdef",), compiler_options=FAST_COMPILE)
def cached_forward(graphdef, params, tokens, cache):
    b = tokens.shape[0]
    return nnx.merge(graphdef, params)(tokens, cache=cache, write_pos=jnp.zeros(b, jnp.int32))


def ttc_logits(model: nnx.Module, tokens: np.ndarray) -> np.ndarray:
    return np.asarray(forward(*nnx.split(model), tokens))


TOKENS = np.random.default_rng(1).integers(0, BASE["vocab_size"], (2, 24)).astype(np.int32)


@pytest.fixture(scope="module")
def untied(tmp_path_factory):
    """An untied Llama saved in shards of at most 20 KB (the index-file path)."""
    d = tmp_path_factory.mktemp("sharded")
    hf = make_hf("llama", tie_word_embeddings=False)
    hf.save_pretrained(d, safe_serialization=True, max_shard_size="20KB")
    return hf, d


def test_sharded_checkpoint_loads_to_the_same_logits(untied):
    hf, d = untied
    index = json.loads((d / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1 and not (d / "model.safetensors").exists()
    cfg, model = load_hf(d)
    assert not cfg.tie_embeddings and cfg.rope_type == "llama3"
    diff = np.abs(ttc_logits(model, TOKENS) - hf_logits(hf, TOKENS)).max()
    assert diff <= TOL, diff


def test_load_hf_tensors_from_a_plain_mapping(untied):
    """The entry point other readers (GGUF) use: HF names -> arrays, here a state dict."""
    hf, d = untied
    cfg, from_disk = load_hf(d)
    tensors = {k: v.numpy() for k, v in hf.state_dict().items()}
    from_dict = load_hf_tensors(cfg, tensors)
    a, b = nnx.state(from_disk, nnx.Param), nnx.state(from_dict, nnx.Param)
    assert jax.tree.all(jax.tree.map(lambda x, y: bool((x == y).all()), a, b))


@pytest.mark.parametrize("family", list(FAMILIES))
def test_save_hf_round_trips_through_transformers(family, tmp_path):
    hf = make_hf(family)
    hf.save_pretrained(tmp_path / "in", safe_serialization=True)
    cfg, model = load_hf(tmp_path / "in")
    assert config_from_hf(config_to_hf(cfg)) == cfg
    save_hf(model, tmp_path / "out")
    back = T.AutoModelForCausalLM.from_pretrained(tmp_path / "out",
                                                  attn_implementation="eager").eval()
    assert type(back) is type(hf)
    assert sum(p.numel() for p in back.parameters()) == cfg.n_params
    diff = np.abs(hf_logits(back, TOKENS) - hf_logits(hf, TOKENS)).max()
    assert diff <= TOL, (family, diff)
    for field in ("layer_types", "sliding_window", "rope_parameters"):
        assert getattr(back.config, field, None) == getattr(hf.config, field, None), field


def test_save_hf_of_the_synthetic_transformer_is_gpt2(tmp_path):
    """ttc's Transformer (pre-LN, learned positions, fused qkv, tanh-GELU MLP, untied head) is
    GPT-2 with ``gelu_new``, ``layer_norm_epsilon=1e-6`` and zero attention biases."""
    cfg = TransformerConfig(vocab_size=50, d_model=32, n_layers=2, n_heads=4, d_ff=64,
                            max_len=40)
    graphdef, state = nnx.split(nnx.eval_shape(lambda: create(cfg)))  # filled below
    rng = np.random.default_rng(0)
    state = jax.tree.map(lambda x: jnp.asarray(0.3 * rng.standard_normal(x.shape), x.dtype),
                         state)
    model = nnx.merge(graphdef, state)
    save_hf(model, tmp_path)
    gpt2 = T.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert isinstance(gpt2, T.GPT2LMHeadModel) and not gpt2.config.tie_word_embeddings
    toks = np.random.default_rng(2).integers(0, 50, (2, 40)).astype(np.int32)
    diff = np.abs(ttc_logits(model, toks) - hf_logits(gpt2, toks)).max()
    assert diff <= TOL, diff


def test_bfloat16_load_is_close_to_float32(untied):
    """bf16 parameters and cache (8-bit mantissa: each rounding is within 2^-9 relative; two
    layers of them move O(1) logits by a few 1e-2, measured 2.3% of their range): logits within
    5% of the float32 logits' largest magnitude, and the same argmax wherever float32's top two
    logits are further apart than twice the largest bf16 error (where a flip is impossible)."""
    _, d = untied
    _, m32 = load_hf(d)
    cfg16, m16 = load_hf(d, dtype="bfloat16")
    assert cfg16.dtype == "bfloat16" and m16.embed.embedding.value.dtype == jnp.bfloat16
    cache = cfg16.init_cache(2, 24)
    assert cache[0][0].dtype == jnp.bfloat16
    out16, cache = cached_forward(*nnx.split(m16), TOKENS, cache)
    assert cache[0][0].dtype == cache[-1][1].dtype == jnp.bfloat16
    assert out16.dtype == jnp.float32
    ref, out16 = ttc_logits(m32, TOKENS), np.asarray(out16)
    err = np.abs(out16 - ref).max()
    assert err / np.abs(ref).max() < 0.05, err
    top2 = np.sort(ref, axis=-1)[..., -2:]
    clear = top2[..., 1] - top2[..., 0] > 2 * err
    assert clear.mean() > 0.25  # not vacuous
    np.testing.assert_array_equal(out16.argmax(-1)[clear], ref.argmax(-1)[clear])


def test_bfloat16_checkpoints_read_and_write_exactly(untied, tmp_path):
    """A bf16 safetensors file is memory-mapped as bf16 (NumPy's safetensors backend cannot),
    upcast exactly: float32 logits equal HF's float32 run of the same bf16-rounded weights;
    ``save_hf`` of a bf16 model writes BF16 tensors that HF reads bit for bit."""
    hf, _ = untied
    copy.deepcopy(hf).to(torch.bfloat16).save_pretrained(tmp_path / "bf16",
                                                         safe_serialization=True)
    rounded = make_hf("llama", tie_word_embeddings=False)
    rounded.load_state_dict({k: v.to(torch.bfloat16).float() for k, v in hf.state_dict().items()})
    _, model = load_hf(tmp_path / "bf16")
    assert read_safetensors(tmp_path / "bf16" / "model.safetensors")[
        "model.norm.weight"].dtype == ml_dtypes.bfloat16
    diff = np.abs(ttc_logits(model, TOKENS) - hf_logits(rounded, TOKENS)).max()
    assert diff <= TOL, diff
    _, m16 = load_hf(tmp_path / "bf16", dtype="bfloat16")
    save_hf(m16, tmp_path / "out")
    back = T.AutoModelForCausalLM.from_pretrained(tmp_path / "out", dtype=torch.bfloat16)
    assert back.config.dtype == torch.bfloat16
    for k, v in back.state_dict().items():
        assert v.dtype == torch.bfloat16 and torch.equal(v, hf.state_dict()[k].bfloat16()), k


def test_config_from_hf_reads_transformers_4_spellings():
    gemma = {"architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text", **BASE,
             "head_dim": 16, "sliding_window": 6, "sliding_window_pattern": 3,
             "rope_theta": 1e6, "rope_local_base_freq": 1e4,
             "rope_scaling": {"rope_type": "linear", "factor": 8.0},
             "query_pre_attn_scalar": 16, "num_hidden_layers": 6}
    g = config_from_hf(gemma)
    assert g.windows == (6, 6, None, 6, 6, None) and g.tie_embeddings and g.norm_offset
    assert (g.rope_theta, g.rope_local_theta, g.rope_type, g.rope_factor) == (
        1e6, 1e4, "linear", 8.0)
    llama = {"model_type": "llama", **BASE, "rope_theta": 5e5,
             "rope_scaling": {"type": "linear", "factor": 2.0}}
    cfg = config_from_hf(llama, dtype="bfloat16")
    assert (cfg.rope_theta, cfg.rope_type, cfg.rope_factor, cfg.dtype) == (
        5e5, "linear", 2.0, "bfloat16")
    assert cfg.hf_family == "llama" and cfg.head_dim == 8 and not cfg.tie_embeddings
    qwen = {"model_type": "qwen2", **BASE, "use_sliding_window": False, "sliding_window": 16}
    assert config_from_hf(qwen).windows == (None, None) and config_from_hf(qwen).qkv_bias


def test_unknown_architecture_is_refused(tmp_path):
    bert = {"architectures": ["BertForMaskedLM"], "model_type": "bert", **BASE}
    with pytest.raises(ValueError, match=r"BertForMaskedLM.*LlamaForCausalLM"):
        config_from_hf(bert)
    (tmp_path / "config.json").write_text(json.dumps(bert))
    with pytest.raises(ValueError, match="BertForMaskedLM"):
        load_hf(tmp_path)
    with pytest.raises(ValueError, match="rope"):
        config_from_hf({"model_type": "llama", **BASE,
                        "rope_parameters": {"rope_type": "yarn", "factor": 4.0}})
    with pytest.raises(ValueError, match=r"no config\.json"):
        load_hf(tmp_path / "nowhere")


def test_missing_unexpected_and_misshapen_tensors_are_named(tmp_path):
    make_hf("mistral").save_pretrained(tmp_path, safe_serialization=True)
    file = tmp_path / "model.safetensors"
    tensors = load_file(file)
    config = json.loads((tmp_path / "config.json").read_text())
    gone = "model.layers.1.self_attn.k_proj.weight"
    save_file({k: v for k, v in tensors.items() if k != gone}, file, metadata={"format": "pt"})
    with pytest.raises(ValueError, match=rf"(?s)model\.safetensors.*missing 1 .*{gone}"):
        load_hf(tmp_path)
    extra = "model.layers.0.self_attn.q_proj.bias"
    save_file(tensors | {extra: np.zeros(32, np.float32)}, file, metadata={"format": "pt"})
    with pytest.raises(ValueError, match=rf"unexpected tensor.*{extra}"):
        load_hf(tmp_path)
    save_file(tensors, file, metadata={"format": "pt"})
    (tmp_path / "config.json").write_text(json.dumps(config | {"intermediate_size": 48}))
    with pytest.raises(ValueError, match=r"gate_proj\.weight: \(64, 32\), expected \(48, 32\)"):
        load_hf(tmp_path)
    file.unlink()
    with pytest.raises(ValueError, match=r"no model\.safetensors"):
        load_hf(tmp_path)


def test_config_to_hf_refuses_what_the_family_cannot_express():
    with pytest.raises(ValueError, match="qkv_bias"):
        config_to_hf(LlamaConfig(vocab_size=10, hf_family="qwen2"))
    with pytest.raises(ValueError, match="head"):
        config_to_hf(LlamaConfig(vocab_size=10, head="scalar"))
    with pytest.raises(ValueError, match="sliding_window"):
        config_to_hf(LlamaConfig(vocab_size=10, sliding_window=4))
    assert config_to_hf(LlamaConfig(vocab_size=10, hf_family="mistral", sliding_window=4))[
        "sliding_window"] == 4
