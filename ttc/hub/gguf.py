"""GGUF checkpoints (llama.cpp's format) read into Hugging Face form.

`read_gguf(path)` gives what a Hugging Face repo would hold for the same model: the `config.json`
content as a dict, the weights under Hugging Face names in float32, and the tokenizer (with the chat
template) that transformers builds from the file's metadata.

Conventions:

* **Shapes.** GGUF stores dimensions fastest-moving first (ggml's `ne` order), so a Linear weight
  that `ReaderTensor.shape` reports as `[in, out]` is the row-major numpy array `[out, in]`; that is
  the Hugging Face layout, returned as is (no transpose). Vectors (norms, biases) are `[n]`.
* **Laziness.** `GGUFCheckpoint.tensors` is a read-only mapping over `gguf.GGUFReader`'s memory map:
  a tensor is dequantized (with `gguf.quants.dequantize`) into a fresh, writable float32 array
  each time it is looked up, and nothing is cached: holding the mapping costs only the memory map,
  and the caller keeps what it needs. `tensors.shape(name)` gives a shape without reading data.
  A load onto a device mesh (`ttc.hub.load(path, layout=...)`) therefore dequantizes each tensor
  whole on the host, one tensor at a time, and slices each device's shard from it (quantized
  blocks cannot be cut at arbitrary rows and columns), unlike a safetensors load, where each
  device's shard is sliced from the memory-mapped file.
* **The q/k permutation.** For `llama`-architecture files, llama.cpp's `convert_hf_to_gguf.py`
  (`LlamaModel.permute`) reorders the rows of `q_proj` (with `n_head` = attention heads) and
  `k_proj` (with `n_head` = key/value heads), weights and biases alike, from Hugging Face's
  half-split rotary layout to the interleaved one ggml's rope uses::

      w.reshape(n_head, 2, rows // n_head // 2, *rest).swapaxes(1, 2).reshape(w.shape)

  `unpermute_qk` applies the inverse (the same as transformers' `_reverse_permute_weights`), so the
  tensors here are the Hugging Face ones. `qwen2` and `qwen3` files are not permuted.
* **Config.** Keys follow transformers' `GGUF_CONFIG_MAPPING` (`{arch}.embedding_length` ->
  `hidden_size`, ...). Float metadata is stored as float32; it is returned as the shortest decimal
  that rounds to the same float32 (`1e-05`, not `9.999999747378752e-06`), which is what the original
  `config.json` held. `tie_word_embeddings` is true exactly when the file has no `output.weight`
  (llama.cpp omits it when the output projection is the embedding matrix); `vocab_size` is the
  rows of `token_embd.weight`. Besides the keys of a `config.json`'s shape, `hidden_act` ("silu"),
  `attention_bias` (llama, qwen3) and `pad_token_id` (when the file states one) are set. llama 3's
  `rope_freqs.weight` (Llama 3 rope scaling) becomes `rope_scaling` (`llama3_scaling`); factors
  of another scheme are not translated (a warning says so).

Supported `general.architecture` values: `llama` (also Mistral-style files, which llama.cpp writes
as `llama`), `qwen2`, `qwen3`. Any quantization type `gguf.quants.dequantize` knows is read (F32,
F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, the K-quants, ...).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gguf
import numpy as np

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

__all__ = ["GGUFCheckpoint", "read_gguf", "unpermute_qk"]

# GGUF tensor name -> Hugging Face name, outside the decoder blocks.
GLOBAL_TENSORS: dict[str, str] = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}

# `blk.{i}.<key>` -> `model.layers.{i}.<value>`: llama.cpp's standard names (gguf's TensorNameMap).
LAYER_TENSORS: dict[str, str] = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_q.bias": "self_attn.q_proj.bias",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_k.bias": "self_attn.k_proj.bias",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_v.bias": "self_attn.v_proj.bias",
    "attn_output.weight": "self_attn.o_proj.weight",
    "attn_output.bias": "self_attn.o_proj.bias",
    "attn_q_norm.weight": "self_attn.q_norm.weight",
    "attn_k_norm.weight": "self_attn.k_norm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}

_DENSE_LAYER = (
    "attn_norm.weight", "attn_q.weight", "attn_k.weight", "attn_v.weight", "attn_output.weight",
    "ffn_norm.weight", "ffn_gate.weight", "ffn_up.weight", "ffn_down.weight",
)


@dataclass(frozen=True)
class _Arch:
    """What one `general.architecture` means in Hugging Face terms."""

    model_type: str
    architectures: tuple[str, ...]
    permute_qk: bool  # whether llama.cpp's converter permuted q/k rows for this architecture
    required: tuple[str, ...]  # per-layer tensors every file of this architecture has
    optional: tuple[str, ...] = ()  # per-layer tensors some files have


ARCHITECTURES: dict[str, _Arch] = {
    "llama": _Arch(
        "llama", ("LlamaForCausalLM",), permute_qk=True, required=_DENSE_LAYER,
        optional=("attn_q.bias", "attn_k.bias", "attn_v.bias", "attn_output.bias"),
    ),
    "qwen2": _Arch(
        "qwen2", ("Qwen2ForCausalLM",), permute_qk=False,
        required=(*_DENSE_LAYER, "attn_q.bias", "attn_k.bias", "attn_v.bias"),
    ),
    "qwen3": _Arch(
        "qwen3", ("Qwen3ForCausalLM",), permute_qk=False,
        required=(*_DENSE_LAYER, "attn_q_norm.weight", "attn_k_norm.weight"),
        optional=("attn_q.bias", "attn_k.bias", "attn_v.bias", "attn_output.bias"),
    ),
}

# `{arch}.<key>` -> config key, for the integers every supported file states (transformers'
# `GGUF_CONFIG_MAPPING`, restricted to what these architectures need).
_REQUIRED_INTS: dict[str, str] = {
    "embedding_length": "hidden_size",
    "feed_forward_length": "intermediate_size",
    "block_count": "num_hidden_layers",
    "attention.head_count": "num_attention_heads",
    "context_length": "max_position_embeddings",
}


def unpermute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """Undo llama.cpp's q/k row permutation (the inverse of `LlamaModel.permute`).

    Args:
        w: the GGUF tensor in numpy order, `[n_head * head_dim, in]` for a weight or
            `[n_head * head_dim]` for a bias.
        n_head: attention heads for `q_proj`, key/value heads for `k_proj`.

    Returns:
        The Hugging Face tensor, same shape: within each head, rows `0, 2, 4, ...` of the GGUF
        tensor become the first half and rows `1, 3, 5, ...` the second.
    """
    rows = w.shape[0]
    if rows % (2 * n_head):
        raise ValueError(f"cannot unpermute {rows} rows over {n_head} heads: not a multiple of "
                         f"2 * {n_head}.")
    return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


@dataclass(frozen=True)
class _Source:
    """Where one Hugging Face tensor comes from in the file, and how to turn it into float32."""

    tensor: gguf.ReaderTensor
    shape: tuple[int, ...]  # numpy (= Hugging Face) order
    unpermute_heads: int | None = None  # n_head for `unpermute_qk`, or None

    def load(self) -> np.ndarray:
        data = gguf.quants.dequantize(self.tensor.data, self.tensor.tensor_type)
        w = data.astype(np.float32, copy=False).reshape(self.shape)
        if np.may_share_memory(w, self.tensor.data):  # F32 comes back as a view of the file
            w = w.copy()
        return unpermute_qk(w, self.unpermute_heads) if self.unpermute_heads else w


class LazyTensors(Mapping[str, np.ndarray]):
    """Hugging Face name -> float32 array, dequantized from the memory map on each lookup."""

    def __init__(self, sources: Mapping[str, _Source]) -> None:
        self._sources = dict(sources)

    def __getitem__(self, name: str) -> np.ndarray:
        return self._sources[name].load()

    def __iter__(self) -> Iterator[str]:
        return iter(self._sources)

    def __len__(self) -> int:
        return len(self._sources)

    def __repr__(self) -> str:
        return f"LazyTensors({len(self)} tensors)"

    def shape(self, name: str) -> tuple[int, ...]:
        """The Hugging Face shape of `name`, without reading its data."""
        return self._sources[name].shape

    def gguf_type(self, name: str) -> str:
        """How `name` is stored in the file (`"Q4_1"`, `"F32"`, ...), without reading its data."""
        return self._sources[name].tensor.tensor_type.name


@dataclass(frozen=True)
class GGUFCheckpoint:
    """A GGUF file seen as a Hugging Face checkpoint.

    Attributes:
        path: the `.gguf` file (it also holds the tokenizer; see `tokenizer`).
        architecture: the file's `general.architecture` (`"llama"`, `"qwen2"`, `"qwen3"`).
        config: the equivalent Hugging Face `config.json` content.
        tensors: Hugging Face name -> float32 array in Hugging Face shape (`[out, in]` for Linear
            weights), lazily dequantized on each lookup; `lm_head.weight` only when untied.
        unmapped: GGUF tensors with no Hugging Face counterpart, left out of `tensors` (for example
            llama 3's `rope_freqs.weight`, which transformers derives from `rope_scaling` instead).
        chat_template: the file's `tokenizer.chat_template` (a Jinja template), or None.
    """

    path: Path
    architecture: str
    config: dict[str, Any]
    tensors: LazyTensors = field(repr=False)
    unmapped: tuple[str, ...] = ()
    chat_template: str | None = field(default=None, repr=False)

    @property
    def tokenizer_path(self) -> Path:
        """The file the tokenizer is read from: the checkpoint itself (no tokenizer.json)."""
        return self.path

    def tokenizer(self) -> PreTrainedTokenizerFast:
        """The tokenizer transformers builds from this file's `tokenizer.*` metadata.

        This is `AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)`, including the
        chat template from `tokenizer.chat_template`. Built anew on each call (it takes seconds).
        """
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(self.path.parent), gguf_file=self.path.name)
        if tok.chat_template is None and self.chat_template is not None:
            tok.chat_template = self.chat_template
        return tok


def read_gguf(path: str | Path) -> GGUFCheckpoint:
    """Open a GGUF file as a Hugging Face checkpoint; no tensor data is read yet.

    Args:
        path: a `.gguf` file of a supported architecture (`llama`, `qwen2`, `qwen3`).

    Returns:
        The config, the lazy tensor mapping and the tokenizer builder (see `GGUFCheckpoint`).

    Raises:
        ValueError: the architecture is not supported, or a hyperparameter or a tensor the
            architecture needs is missing, or the embedding's width is not `hidden_size`.
    """
    path = Path(path)
    reader = gguf.GGUFReader(path)
    meta = _Metadata(reader, path)
    arch_name = meta.require("general.architecture")
    arch = ARCHITECTURES.get(arch_name)
    if arch is None:
        raise ValueError(
            f"{path}: GGUF architecture {arch_name!r} (general.architecture) is not supported by "
            f"ttc.hub.gguf; supported: {', '.join(sorted(ARCHITECTURES))}. Convert the model from "
            "its Hugging Face checkpoint instead, or add the architecture's name and config tables "
            "to ttc/hub/gguf.py."
        )
    by_name = {t.name: t for t in reader.tensors}
    config = _config(meta, arch_name, arch, by_name)
    sources, unmapped = _sources(path, arch, config, by_name)
    if "rope_freqs.weight" in by_name and "rope_scaling" not in config:
        factors = _Source(by_name["rope_freqs.weight"], (-1,)).load()
        scaling = llama3_scaling(factors, config, meta.get(
            f"{arch_name}.rope.scaling.original_context_length", 8192))
        if scaling is not None:
            config["rope_scaling"] = scaling
        elif not np.all(factors == 1.0):
            warnings.warn(
                f"{path} has a rope_freqs.weight tensor whose factors are not Llama 3's rope "
                "scaling (factor = their maximum, low/high frequency factors 1 and 4); it is not "
                "translated into config['rope_scaling'], so rope runs unscaled.", stacklevel=2,
            )
    return GGUFCheckpoint(path, arch_name, config, LazyTensors(sources), unmapped,
                          meta.get("tokenizer.chat_template"))


class _Metadata:
    """Typed access to a reader's key/value fields, with errors that name the file."""

    def __init__(self, reader: gguf.GGUFReader, path: Path) -> None:
        self._fields = reader.fields
        self.path = path

    def get(self, key: str, default: Any = None) -> Any:
        f = self._fields.get(key)
        if f is None:
            return default
        value = f.contents()
        if f.types and f.types[0] == gguf.GGUFValueType.FLOAT32:
            value = float(str(np.float32(value)))  # the shortest decimal of that float32
        return value

    def require(self, key: str) -> Any:
        if key not in self._fields:
            raise ValueError(f"{self.path}: the GGUF metadata has no {key!r}, which a Hugging "
                             "Face config needs; the file is incomplete or not a model file.")
        return self.get(key)


def _config(meta: _Metadata, name: str, arch: _Arch, by_name: Mapping[str, Any]) -> dict[str, Any]:
    """The Hugging Face config dict for a file of architecture `name` (key `name` prefix)."""
    config: dict[str, Any] = {"model_type": arch.model_type,
                              "architectures": list(arch.architectures)}
    for key, hf_key in _REQUIRED_INTS.items():
        config[hf_key] = _single(meta.require(f"{name}.{key}"), f"{name}.{key}", meta)
    heads = config["num_attention_heads"]
    config["num_key_value_heads"] = _single(
        meta.get(f"{name}.attention.head_count_kv", heads), f"{name}.attention.head_count_kv", meta)
    head_dim = meta.get(f"{name}.attention.key_length", meta.get(f"{name}.rope.dimension_count"))
    if head_dim is not None:
        config["head_dim"] = int(head_dim)
    config["rms_norm_eps"] = meta.require(f"{name}.attention.layer_norm_rms_epsilon")
    config["rope_theta"] = meta.get(f"{name}.rope.freq_base", 10000.0)  # llama.cpp's default
    if (scaling := _rope_scaling(meta, name)) is not None:
        config["rope_scaling"] = scaling
    config["vocab_size"] = _vocab_size(meta, config, by_name)
    config["tie_word_embeddings"] = "output.weight" not in by_name
    config["hidden_act"] = "silu"
    if arch.model_type != "qwen2":  # qwen2 always has q/k/v biases and no such config key
        config["attention_bias"] = any(n.endswith(".attn_q.bias") for n in by_name)
    for key in ("bos_token_id", "eos_token_id", "padding_token_id"):
        if (token := meta.get(f"tokenizer.ggml.{key}")) is not None:
            config[key.replace("padding", "pad")] = int(token)
    return config


def _single(value: Any, key: str, meta: _Metadata) -> int:
    """An integer hyperparameter; a per-layer array is accepted only if all layers agree."""
    if isinstance(value, list):
        if len(set(value)) != 1:
            raise ValueError(f"{meta.path}: {key} varies across layers ({value}); per-layer "
                             "sizes have no Hugging Face config equivalent for this architecture.")
        value = value[0]
    return int(value)


def llama3_scaling(factors: np.ndarray, config: Mapping[str, Any],
                   original: int = 8192) -> dict[str, Any] | None:
    """The Llama 3 `rope_scaling` whose frequency factors llama.cpp stored as `rope_freqs.weight`.

    llama.cpp's converter writes, per rotary frequency, `inv_freq / scaled_inv_freq` of HF's
    `llama3` scheme (`factor`, `low_freq_factor`, `high_freq_factor`,
    `original_max_position_embeddings`). The factor is their maximum; Llama 3.1-3.3 use low/high
    factors 1 and 4 and an original context of 8192 (or the file's
    `rope.scaling.original_context_length`). Returns that dict if it reproduces `factors`
    (relative 1e-5), else None (also for all-ones factors: no scaling).
    """
    factor = float(np.max(factors))
    if factor <= 1.0:
        return None
    dim = int(config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"])
    scaling = {"rope_type": "llama3", "factor": factor, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": int(original)}
    theta = float(config.get("rope_theta", 10000.0))
    inv = 1.0 / (theta ** (np.arange(0, dim, 2, dtype=np.float32) / np.float32(dim)))
    old = float(original)
    lo_wave, hi_wave = old / 1.0, old / 4.0
    want = []
    for f in inv.astype(np.float64):
        wave = 2 * np.pi / f
        if wave < hi_wave:
            want.append(1.0)
        elif wave > lo_wave:
            want.append(factor)
        else:
            smooth = (old / wave - 1.0) / (4.0 - 1.0)
            want.append(1 / ((1 - smooth) / factor + smooth))
    if len(want) != factors.size or not np.allclose(factors, want, rtol=1e-5, atol=0):
        return None
    return scaling


def _rope_scaling(meta: _Metadata, name: str) -> dict[str, Any] | None:
    """`rope_scaling` from `{arch}.rope.scaling.*`, or None when absent or `"none"`."""
    kind = meta.get(f"{name}.rope.scaling.type")
    if kind is None or kind == "none":
        return None
    scaling: dict[str, Any] = {"rope_type": kind}
    for key, hf_key in (("factor", "factor"),
                        ("original_context_length", "original_max_position_embeddings"),
                        ("yarn_beta_fast", "beta_fast"), ("yarn_beta_slow", "beta_slow")):
        if (value := meta.get(f"{name}.rope.scaling.{key}")) is not None:
            scaling[hf_key] = value
    return scaling


def _vocab_size(meta: _Metadata, config: Mapping[str, Any], by_name: Mapping[str, Any]) -> int:
    """The rows of `token_embd.weight`, the vocabulary the weights have; its columns are checked.

    llama.cpp pads the token list to this size, so it equals `{arch}.vocab_size` when stated.
    """
    embed = by_name.get("token_embd.weight")
    if embed is None:
        raise ValueError(f"{meta.path}: GGUF tensor 'token_embd.weight' is missing; every "
                         "supported model file has it. The file is truncated, or not a model file.")
    hidden, vocab = (int(d) for d in embed.shape.tolist())  # ne order: [hidden, vocab]
    if hidden != config["hidden_size"]:
        raise ValueError(f"{meta.path}: token_embd.weight is {vocab} x {hidden}, but the metadata "
                         f"says hidden_size {config['hidden_size']}; the file is inconsistent.")
    return vocab


def _sources(
    path: Path, arch: _Arch, config: Mapping[str, Any], by_name: Mapping[str, gguf.ReaderTensor],
) -> tuple[dict[str, _Source], tuple[str, ...]]:
    """Hugging Face name -> source for every tensor, and the GGUF tensors left unmapped."""
    wanted = {"token_embd.weight": True, "output_norm.weight": True,
              "output.weight": not config["tie_word_embeddings"]}
    for i in range(config["num_hidden_layers"]):
        wanted |= {f"blk.{i}.{k}": True for k in arch.required}
        wanted |= {f"blk.{i}.{k}": False for k in arch.optional if f"blk.{i}.{k}" in by_name}
    missing = [n for n, needed in wanted.items() if needed and n not in by_name]
    if missing:
        raise ValueError(
            f"{path}: GGUF tensor {missing[0]!r} is missing"
            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
            + f"; every {config['model_type']} file with {config['num_hidden_layers']} layers has "
            "it. The file is truncated, or its metadata does not describe its tensors."
        )
    sources = {_hf_name(n): _source(by_name[n], arch, config) for n in wanted if n in by_name}
    return sources, tuple(n for n in by_name if n not in wanted)


def _hf_name(gguf_name: str) -> str:
    """`blk.3.attn_q.weight` -> `model.layers.3.self_attn.q_proj.weight`."""
    if gguf_name in GLOBAL_TENSORS:
        return GLOBAL_TENSORS[gguf_name]
    _, layer, rest = gguf_name.split(".", 2)
    return f"model.layers.{layer}.{LAYER_TENSORS[rest]}"


def _source(tensor: gguf.ReaderTensor, arch: _Arch, config: Mapping[str, Any]) -> _Source:
    """How to read `tensor`: its numpy shape, and the q/k un-permutation it needs, if any."""
    shape = tuple(int(d) for d in reversed(tensor.shape.tolist()))
    heads = None
    if arch.permute_qk and ".attn_q." in tensor.name:
        heads = config["num_attention_heads"]
    elif arch.permute_qk and ".attn_k." in tensor.name:
        heads = config["num_key_value_heads"]
    return _Source(tensor, shape, heads)
