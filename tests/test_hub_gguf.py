"""`ttc.hub.gguf`: GGUF files read back as Hugging Face config, tensors and tokenizer.

The fast tests write tiny random Llama / Qwen2 / Qwen3 models to GGUF the way llama.cpp's
`convert_hf_to_gguf.py` does (tensor names from the `gguf` package's own `TensorNameMap`, q/k rows
permuted for llama, tensors stored in a mix of F32/F16/BF16/Q8_0/Q4_0/Q4_1/Q4_K/Q6_K) and check
that `read_gguf` gives back exactly the stored values under the Hugging Face names and layout.
The `real_model` tests compare against transformers' own GGUF loading of SmolLM2-135M-Instruct.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
import torch
import transformers
from gguf import GGMLQuantizationType as Q
from smollm2 import REPO, smollm2_gguf
from transformers.convert_slow_tokenizer import bytes_to_unicode

from ttc.hub import gguf as hub_gguf
from ttc.hub.gguf import read_gguf, unpermute_qk
from ttc.hub.hf import config_from_hf
from ttc.models.llama import rope_inv_freq

# --- writing GGUF files as llama.cpp's converter does -------------------------------------------

# A byte-level BPE vocabulary: the 256 byte symbols, three merges, three special tokens.
MERGES = ["Ġ t", "h e", "Ġt he"]
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TOKENS = [*bytes_to_unicode().values(), "Ġt", "he", "Ġthe", *SPECIALS]
BOS, EOS = TOKENS.index("<|im_start|>"), TOKENS.index("<|im_end|>")
CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
                 "<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")

# The stored types cycle over 2-D tensors; vectors stay F32 as llama.cpp keeps them.
MATRIX_TYPES = (Q.F16, Q.Q8_0, Q.BF16, Q.Q4_0, Q.Q4_1, Q.F32)


def llama_cpp_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """`LlamaModel.permute` from llama.cpp's convert_hf_to_gguf.py (HF rows -> GGUF rows)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(
        w.shape)


@dataclass
class Case:
    """One tiny model: its transformers class and config, and how it goes into GGUF."""

    arch: str  # general.architecture
    gguf_arch: gguf.MODEL_ARCH
    hf_class: str
    hf_kwargs: dict[str, Any]
    permute: bool
    kquant_ffn_down: bool = False  # store ffn_down as raw Q4_K (layer 0) / Q6_K (layer 1) blocks
    rope_freqs: bool = False  # add llama 3's rope_freqs.weight (no HF counterpart)
    rope_scaling: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # expected config keys beyond the common


COMMON = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
              vocab_size=len(TOKENS), max_position_embeddings=128, rms_norm_eps=1e-6)
CASES = {
    "llama": Case("llama", gguf.MODEL_ARCH.LLAMA, "LlamaForCausalLM",
                  dict(COMMON, intermediate_size=128, tie_word_embeddings=False,
                       attention_bias=True),
                  permute=True, extra={"head_dim": 16, "attention_bias": True}),
    "llama_kquants": Case("llama", gguf.MODEL_ARCH.LLAMA, "LlamaForCausalLM",
                          dict(COMMON, intermediate_size=256, tie_word_embeddings=True),
                          permute=True, kquant_ffn_down=True,
                          extra={"head_dim": 16, "attention_bias": False}),
    "qwen2": Case("qwen2", gguf.MODEL_ARCH.QWEN2, "Qwen2ForCausalLM",
                  dict(COMMON, intermediate_size=128, tie_word_embeddings=True),
                  permute=False, rope_scaling={"rope_type": "linear", "factor": 2.0}),
    "qwen3": Case("qwen3", gguf.MODEL_ARCH.QWEN3, "Qwen3ForCausalLM",
                  dict(COMMON, intermediate_size=128, head_dim=32, tie_word_embeddings=False),
                  permute=False, extra={"head_dim": 32, "attention_bias": False}),
}
ROPE_THETA = 50000.0


def make_hf_model(case: Case) -> torch.nn.Module:
    config_class = getattr(transformers, case.hf_class.replace("ForCausalLM", "Config"))
    torch.manual_seed(0)
    model = getattr(transformers, case.hf_class)(config_class(**case.hf_kwargs)).float().eval()
    with torch.no_grad():  # norms and biases start at 1 / 0: make them random too
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model


def hf_tensors(model: torch.nn.Module, tied: bool) -> dict[str, np.ndarray]:
    sd = {k: v.detach().numpy().astype(np.float32) for k, v in model.state_dict().items()}
    if tied:
        sd.pop("lm_head.weight", None)
    return sd


def kquant_blocks(rng: np.random.Generator, rows: int, cols: int, qtype: Q) -> np.ndarray:
    """Random K-quant blocks with small finite f16 scales (gguf reads these types, cannot write)."""
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, (rows, cols // block, size), dtype=np.uint8)
    scale = np.full((rows, cols // block, 1), 0.01, np.float16).view(np.uint8)
    if qtype == Q.Q4_K:  # d, dmin lead the block
        raw[..., 0:2], raw[..., 2:4] = scale, scale
    else:  # Q6_K: d ends it
        raw[..., -2:] = scale
    return raw.reshape(rows, cols // block * size)


def write_gguf(path: Path, case: Case, model: torch.nn.Module, *, drop: tuple[str, ...] = (),
               arch: str | None = None,
               rope_factors: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Write `model` as llama.cpp would; returns HF name -> the values a reader must give back."""
    kw = case.hf_kwargs
    tied, n_layers = kw["tie_word_embeddings"], kw["num_hidden_layers"]
    names = gguf.get_tensor_name_map(case.gguf_arch, n_layers)
    w = gguf.GGUFWriter(str(path), arch or case.arch)
    _write_metadata(w, case)
    expected, rng, matrices = {}, np.random.default_rng(0), 0
    for hf_name, t in hf_tensors(model, tied).items():
        base, suffix = hf_name.rsplit(".", 1)
        gguf_name = f"{names.get_name(base)}.{suffix}"
        if gguf_name in drop:
            continue
        qtype = MATRIX_TYPES[matrices % len(MATRIX_TYPES)] if t.ndim == 2 else Q.F32
        matrices += t.ndim == 2
        if case.kquant_ffn_down and gguf_name.endswith("ffn_down.weight"):
            qtype = (Q.Q4_K, Q.Q6_K)[int(gguf_name.split(".")[1]) % 2]
            data = kquant_blocks(rng, *t.shape, qtype)
            expected[hf_name] = gguf.quants.dequantize(data, qtype)
        else:
            # Blocks run along rows and the permutation moves whole rows, so quantizing the permuted
            # tensor stores exactly the permuted round trip of the HF tensor.
            expected[hf_name] = gguf.quants.dequantize(gguf.quants.quantize(t, qtype), qtype)
            data = gguf.quants.quantize(_permuted(case, gguf_name, t), qtype)
        w.add_tensor(gguf_name, data, raw_dtype=qtype)
    if case.rope_freqs:
        half_head = kw["hidden_size"] // kw["num_attention_heads"] // 2
        w.add_tensor("rope_freqs.weight", np.ones(half_head, np.float32)
                     if rope_factors is None else rope_factors.astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return {k: np.asarray(v, np.float32) for k, v in expected.items()}


def _permuted(case: Case, gguf_name: str, t: np.ndarray) -> np.ndarray:
    if not case.permute:
        return t
    if ".attn_q." in gguf_name:
        return llama_cpp_permute(t, case.hf_kwargs["num_attention_heads"])
    if ".attn_k." in gguf_name:
        return llama_cpp_permute(t, case.hf_kwargs["num_key_value_heads"])
    return t


def _write_metadata(w: gguf.GGUFWriter, case: Case) -> None:
    kw = case.hf_kwargs
    w.add_name("tiny")
    w.add_block_count(kw["num_hidden_layers"])
    w.add_context_length(kw["max_position_embeddings"])
    w.add_embedding_length(kw["hidden_size"])
    w.add_feed_forward_length(kw["intermediate_size"])
    w.add_head_count(kw["num_attention_heads"])
    w.add_head_count_kv(kw["num_key_value_heads"])
    w.add_rope_freq_base(ROPE_THETA)
    w.add_layer_norm_rms_eps(kw["rms_norm_eps"])
    if "head_dim" in kw:  # llama.cpp writes key_length when the HF config states head_dim
        w.add_key_length(kw["head_dim"])
        w.add_value_length(kw["head_dim"])
    if case.arch == "llama":
        w.add_rope_dimension_count(kw["hidden_size"] // kw["num_attention_heads"])
        w.add_vocab_size(kw["vocab_size"])
    if case.rope_scaling:
        w.add_rope_scaling_type(gguf.RopeScalingType(case.rope_scaling["rope_type"]))
        w.add_rope_scaling_factor(case.rope_scaling["factor"])
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt2")
    w.add_token_list(TOKENS)
    w.add_token_types([gguf.TokenType.CONTROL if t in SPECIALS else gguf.TokenType.NORMAL
                       for t in TOKENS])
    w.add_token_merges(MERGES)
    w.add_bos_token_id(BOS)
    w.add_eos_token_id(EOS)
    w.add_add_bos_token(False)
    w.add_chat_template(CHAT_TEMPLATE)


def expected_config(case: Case) -> dict[str, Any]:
    kw = case.hf_kwargs
    config = {
        "model_type": case.arch, "architectures": [case.hf_class],
        "hidden_size": kw["hidden_size"], "intermediate_size": kw["intermediate_size"],
        "num_hidden_layers": kw["num_hidden_layers"],
        "num_attention_heads": kw["num_attention_heads"],
        "num_key_value_heads": kw["num_key_value_heads"], "rms_norm_eps": kw["rms_norm_eps"],
        "rope_theta": ROPE_THETA, "max_position_embeddings": kw["max_position_embeddings"],
        "vocab_size": kw["vocab_size"], "tie_word_embeddings": kw["tie_word_embeddings"],
        "hidden_act": "silu", "bos_token_id": BOS, "eos_token_id": EOS, **case.extra,
    }
    if case.rope_scaling:
        config["rope_scaling"] = case.rope_scaling
    return config


@pytest.fixture(scope="module", params=sorted(CASES))
def written(request, tmp_path_factory):
    """(case, HF model, .gguf path, expected tensors) for each tiny model."""
    case = CASES[request.param]
    model = make_hf_model(case)
    path = tmp_path_factory.mktemp(request.param) / "tiny.gguf"
    return case, model, path, write_gguf(path, case, model)


# --- fast tests ---------------------------------------------------------------------------------


def test_config_and_every_tensor_round_trip(written):
    case, model, path, expected = written
    ckpt = read_gguf(path)
    assert ckpt.config == expected_config(case)
    assert ckpt.architecture == case.arch
    assert set(ckpt.tensors) == set(expected)
    assert set(expected) == set(hf_tensors(model, case.hf_kwargs["tie_word_embeddings"]))
    for name, want in expected.items():
        got = ckpt.tensors[name]
        assert got.dtype == np.float32 and got.shape == want.shape == ckpt.tensors.shape(name)
        assert got.flags.writeable
        np.testing.assert_array_equal(got, want, err_msg=name)
    assert ckpt.unmapped == ()


def _llama_cpp_rope_factors(dim: int, theta: float, factor: float, low: float, high: float,
                            old: int) -> np.ndarray:
    """`rope_freqs.weight` as llama.cpp's convert_hf_to_gguf.py writes it for a llama3
    `rope_scaling` (its own loop, copied here as the reference)."""
    freqs = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    out = []
    for freq in freqs.tolist():
        wavelen = 2 * math.pi / freq
        if wavelen < old / high:
            out.append(1)
        elif wavelen > old / low:
            out.append(factor)
        else:
            smooth = (old / wavelen - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.asarray(out, np.float32)


def test_rope_freqs_of_llama3_become_rope_scaling(tmp_path):
    """A Llama 3 file's rope_freqs.weight becomes HF's llama3 rope_scaling, and the loaded model's
    rotary frequencies equal transformers' for that scaling; all-ones factors mean none; other
    factors are left unscaled with a warning."""
    case = dataclasses.replace(CASES["llama"], rope_freqs=True)
    model = make_hf_model(case)
    factors = _llama_cpp_rope_factors(16, ROPE_THETA, 8.0, 1.0, 4.0, 8192)
    assert 1 < len(set(factors.tolist())) and factors.max() == 8.0  # a smooth band and a scaled one
    write_gguf(path := tmp_path / "llama3.gguf", case, model, rope_factors=factors)
    ckpt = read_gguf(path)
    want = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
    assert ckpt.config["rope_scaling"] == want
    assert ckpt.unmapped == ("rope_freqs.weight",) and "rope_freqs.weight" not in ckpt.tensors
    hf_cfg = transformers.LlamaConfig(
        hidden_size=64, num_attention_heads=4, max_position_embeddings=16384,
        rope_parameters={**want, "rope_theta": ckpt.config["rope_theta"]})
    ref = transformers.models.llama.modeling_llama.LlamaRotaryEmbedding(hf_cfg).inv_freq.numpy()
    ours = rope_inv_freq(config_from_hf(ckpt.config))
    np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=0)
    assert not np.allclose(ours, rope_inv_freq(config_from_hf(
        {k: v for k, v in ckpt.config.items() if k != "rope_scaling"})), rtol=1e-3)

    write_gguf(ones := tmp_path / "ones.gguf", case, model)
    assert "rope_scaling" not in read_gguf(ones).config
    write_gguf(odd := tmp_path / "odd.gguf", case, model, rope_factors=factors[::-1].copy())
    with pytest.warns(UserWarning, match=r"odd\.gguf has a rope_freqs\.weight"):
        assert "rope_scaling" not in read_gguf(odd).config


def test_stored_types_cover_the_required_quantizations(written):
    case, _, path, _ = written
    tensors = read_gguf(path).tensors
    required = {"F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1"}
    if case.kquant_ffn_down:
        required |= {"Q4_K", "Q6_K"}
    assert {tensors.gguf_type(n) for n in tensors} >= required


def test_tensors_are_lazy(written, monkeypatch):
    _, _, path, _ = written
    calls = []
    real = gguf.quants.dequantize
    monkeypatch.setattr(gguf.quants, "dequantize", lambda d, q: calls.append(q) or real(d, q))
    ckpt = read_gguf(path)
    assert calls == [] and not isinstance(ckpt.tensors, dict)
    ckpt.tensors["model.layers.1.self_attn.q_proj.weight"]
    assert len(calls) == 1


def test_matches_transformers_gguf_loader(written):
    """transformers' legacy loader (its own name map and `_reverse_permute_weights`) agrees."""
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    _, model, path, _ = written
    theirs = load_gguf_checkpoint(str(path), return_tensors=True, model_to_load=model)["tensors"]
    ours = read_gguf(path).tensors
    assert set(theirs) == set(ours)
    for name, t in theirs.items():
        np.testing.assert_array_equal(ours[name], t.float().numpy(), err_msg=name)


def test_name_tables_agree_with_gguf_package():
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.QWEN3, 4)
    for gguf_name, hf_name in hub_gguf.GLOBAL_TENSORS.items():
        assert names.get_name(hf_name.rsplit(".", 1)[0]) + ".weight" == gguf_name
    for gguf_key, hf_key in hub_gguf.LAYER_TENSORS.items():
        base, suffix = hf_key.rsplit(".", 1)
        assert names.get_name(f"model.layers.3.{base}") == "blk.3." + gguf_key.rsplit(".", 1)[0]
        assert gguf_key.endswith("." + suffix)


@pytest.mark.parametrize("n_head,shape", [(4, (64, 48)), (2, (32, 64)), (8, (128,)), (3, (12, 5))])
def test_unpermute_inverts_llama_cpp_permute(n_head, shape):
    w = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    np.testing.assert_array_equal(unpermute_qk(llama_cpp_permute(w, n_head), n_head), w)
    assert not np.array_equal(llama_cpp_permute(w, n_head), w)


def test_unpermute_rejects_rows_not_split_by_heads():
    with pytest.raises(ValueError, match="not a multiple"):
        unpermute_qk(np.zeros((12, 4)), 4)


def test_tokenizer_and_chat_template_from_metadata(written):
    _, _, path, _ = written
    tok = read_gguf(path).tokenizer()
    assert isinstance(tok, transformers.PreTrainedTokenizerFast)
    assert tok.chat_template == CHAT_TEMPLATE
    text = "the cat hid the hat"
    ids = tok.encode(text, add_special_tokens=False)
    assert TOKENS.index("Ġthe") in ids and tok.decode(ids) == text
    chat = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                   add_generation_prompt=True)
    assert chat == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_unknown_architecture_is_named(tmp_path):
    case = CASES["llama"]
    path = tmp_path / "odd.gguf"
    write_gguf(path, case, make_hf_model(case), arch="frobnicator")
    with pytest.raises(ValueError, match=r"odd\.gguf.*'frobnicator'.*supported: llama, qwen2"):
        read_gguf(path)


def test_missing_tensor_is_named(tmp_path):
    case = CASES["qwen2"]
    path = tmp_path / "short.gguf"
    write_gguf(path, case, make_hf_model(case), drop=("blk.1.ffn_up.weight",))
    with pytest.raises(ValueError, match=r"short\.gguf.*'blk\.1\.ffn_up\.weight' is missing"):
        read_gguf(path)


def test_missing_lm_head_means_tied_and_missing_bias_is_an_error(tmp_path):
    case = CASES["llama"]
    path = tmp_path / "tied.gguf"
    write_gguf(path, case, make_hf_model(case), drop=("output.weight",))
    ckpt = read_gguf(path)
    assert ckpt.config["tie_word_embeddings"] and "lm_head.weight" not in ckpt.tensors
    write_gguf(path := tmp_path / "nobias.gguf", CASES["qwen2"], make_hf_model(CASES["qwen2"]),
               drop=("blk.0.attn_k.bias",))
    with pytest.raises(ValueError, match=r"'blk\.0\.attn_k\.bias' is missing"):
        read_gguf(path)


def test_missing_hyperparameter_is_named(tmp_path, monkeypatch):
    case = CASES["llama"]
    path = tmp_path / "nohp.gguf"
    monkeypatch.setattr(gguf.GGUFWriter, "add_layer_norm_rms_eps", lambda self, v: None)
    write_gguf(path, case, make_hf_model(case))
    with pytest.raises(ValueError, match=r"nohp\.gguf.*'llama\.attention\.layer_norm_rms_epsilon'"):
        read_gguf(path)


# --- the real model -----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    """SmolLM2-135M-Instruct Q4_1: $TTC_SMOLLM2, else models/smollm2/, else fetched there."""
    return smollm2_gguf()


@pytest.fixture(scope="module")
def smollm2_ckpt(smollm2_path):
    """`read_gguf` of the real file (metadata only; tensors stay lazy)."""
    t0 = time.perf_counter()
    ckpt = read_gguf(smollm2_path)
    print(f"\nread_gguf {time.perf_counter() - t0:.1f}s")
    return ckpt


@pytest.fixture(scope="module")
def smollm2_hf(smollm2_path):
    """transformers' own model loaded from the same file, in float32."""
    t0 = time.perf_counter()
    model = transformers.AutoModelForCausalLM.from_pretrained(
        str(smollm2_path.parent), gguf_file=smollm2_path.name, dtype=torch.float32).eval()
    print(f"\ntransformers from_pretrained(gguf_file=) {time.perf_counter() - t0:.1f}s")
    return model


@pytest.fixture(scope="module")
def smollm2(smollm2_ckpt, smollm2_hf):
    return smollm2_ckpt, smollm2_hf


@pytest.mark.real_model
def test_smollm2_tensors_match_transformers(smollm2):
    ckpt, model = smollm2
    theirs = model.state_dict()
    assert set(ckpt.tensors) | {"lm_head.weight"} == set(theirs)  # tied: no lm_head in the file
    worst = 0.0
    for name in ckpt.tensors:
        ours, ref = ckpt.tensors[name], theirs[name].numpy()
        assert ours.shape == ref.shape, name
        worst = max(worst, float(np.max(np.abs(ours - ref))))
    print(f"max |read_gguf - transformers| over {len(ckpt.tensors)} tensors: {worst:g}")
    assert worst <= 1e-6


@pytest.mark.real_model
def test_smollm2_config_matches_transformers(smollm2):
    ckpt, model = smollm2
    cfg, hf = ckpt.config, model.config
    assert cfg["model_type"] == hf.model_type == "llama"
    for key in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "head_dim", "vocab_size", "max_position_embeddings",
                "tie_word_embeddings", "bos_token_id", "eos_token_id", "pad_token_id"):
        assert cfg[key] == getattr(hf, key), key
    assert cfg["rope_theta"] == hf.rope_parameters["rope_theta"] == 100000.0
    assert cfg["rms_norm_eps"] == pytest.approx(hf.rms_norm_eps, rel=1e-6)
    assert cfg["rms_norm_eps"] == 1e-5  # the float32 metadata, as the original config.json says
    assert (cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["tie_word_embeddings"]) == (
        9, 3, True)


@pytest.mark.real_model
def test_smollm2_logits_from_our_config_and_tensors(smollm2):
    """A transformers Llama built from our config dict and tensors computes the same logits."""
    ckpt, model = smollm2
    ours = transformers.LlamaForCausalLM(transformers.LlamaConfig(**ckpt.config)).float().eval()
    assert ours.config.rope_parameters["rope_theta"] == model.config.rope_parameters["rope_theta"]
    missing, unexpected = ours.load_state_dict(
        {k: torch.from_numpy(ckpt.tensors[k]) for k in ckpt.tensors}, strict=False)
    assert missing == ["lm_head.weight"] and unexpected == []  # tied to the embedding
    ids = torch.tensor([[1, 504, 3458, 282, 4649, 314, 260, 1345, 30, 216]])
    with torch.no_grad():
        got, want = ours(ids).logits, model(ids).logits
    print(f"max |logits diff| {float((got - want).abs().max()):g}")
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


def _gsm8k_questions(n: int = 3) -> list[str]:
    path = REPO.parent / "shared" / "data" / "gsm8k" / "test.jsonl"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    with path.open() as f:
        return [json.loads(next(f))["question"] for _ in range(n)]


@pytest.mark.real_model
def test_smollm2_tokenizer_matches_transformers(smollm2_ckpt, smollm2_path):
    ours = smollm2_ckpt.tokenizer()
    ref = transformers.AutoTokenizer.from_pretrained(str(smollm2_path.parent),
                                                     gguf_file=smollm2_path.name)
    texts = ["Hello world", "  leading spaces,\ttabs\nand 12345 digits",
             "<|im_start|>user\nhi<|im_end|>", "naïve café — ünïcödé 😀", *_gsm8k_questions()]
    for text in texts:
        ids = ours(text).input_ids
        assert ids == ref(text).input_ids, text
        assert ours.decode(ids) == ref.decode(ids) == text
    q = texts[-3]
    for system in ([], [{"role": "system", "content": "Answer with a number."}]):
        msgs = [*system, {"role": "user", "content": q}]
        for tokenize in (False, True):
            kw = dict(tokenize=tokenize, add_generation_prompt=True)
            assert ours.apply_chat_template(msgs, **kw) == ref.apply_chat_template(msgs, **kw)
    chat = ours.apply_chat_template([{"role": "user", "content": q}], tokenize=False,
                                    add_generation_prompt=True)
    assert chat.endswith(f"<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n")
    assert ours.chat_template == ref.chat_template is not None


@pytest.fixture(scope="module")
def smollm2_ttc(smollm2_path):
    """`ttc.hub.load` of the real file: the Flax NNX policy and its tokenizer."""
    from ttc import hub

    t0 = time.perf_counter()
    model = hub.load(smollm2_path)
    print(f"\nttc.hub.load {time.perf_counter() - t0:.1f}s")
    return model


def _chat_ids(tok, question: str) -> list[int]:
    text = tok.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                   add_generation_prompt=True)
    return tok(text).input_ids


@pytest.mark.real_model
def test_smollm2_ttc_logits_match_transformers(smollm2_ttc, smollm2_hf):
    """ttc's Llama on the real weights computes transformers' logits (float32) on a chat-formatted
    GSM8K prompt."""
    ids = _chat_ids(smollm2_ttc.tokenizer, _gsm8k_questions(1)[0])
    ours = smollm2_ttc.logits([ids])
    with torch.no_grad():
        ref = smollm2_hf(torch.tensor([ids])).logits.numpy()
    diff = float(np.max(np.abs(ours - ref)))
    print(f"SmolLM2 {len(ids)} tokens: max |ttc - transformers| logits {diff:g}")
    assert ours.shape == ref.shape and diff <= 1e-3


@pytest.mark.real_model
def test_smollm2_greedy_generation_matches_transformers(smollm2_ttc, smollm2_hf):
    """Greedy decoding through ttc's jitted sampler (prefill once, KV cache, rows of different
    prompt lengths in one batch) gives transformers' `generate(do_sample=False)` tokens for 64
    new tokens on 5 GSM8K prompts."""
    tok, n_new = smollm2_ttc.tokenizer, 64
    questions = _gsm8k_questions(5)
    ours = smollm2_ttc.generate(questions, max_new_tokens=n_new, chat=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for q, text in zip(questions, ours, strict=True):
            ids = torch.tensor([_chat_ids(tok, q)])
            with torch.no_grad():
                out = smollm2_hf.generate(ids, do_sample=False, max_new_tokens=n_new,
                                          pad_token_id=tok.eos_token_id)
            end = (tok.eos_token_id, tok.convert_tokens_to_ids("<|im_end|>"))
            want = tok.decode([t for t in out[0, ids.shape[1]:].tolist() if t not in end])
            assert text == want, (q, text, want)
    finally:
        torch.set_num_threads(threads)
