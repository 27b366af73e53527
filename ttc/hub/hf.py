"""Hugging Face checkpoints: ``config.json`` + safetensors to and from ttc's models.

* :func:`config_from_hf` / :func:`config_to_hf`: a ``config.json`` dict to a
  :class:`~ttc.models.llama.LlamaConfig` and back, for Llama, Qwen2/2.5, Qwen3, Mistral and
  Gemma 3 (text); :func:`config_to_hf` also writes ttc's synthetic
  :class:`~ttc.models.Transformer` as GPT-2.
* :func:`load_hf`: a model directory (``model.safetensors`` or the shards named by
  ``model.safetensors.index.json``) to a :class:`~ttc.models.llama.Llama`. The module is built
  shape-only (``nnx.eval_shape``), tensors are memory-mapped and each parameter is filled once,
  so at most one tensor exists twice at any time. With a :class:`~ttc.parallel.Layout` the
  parameters are created straight on its mesh, each device's shard sliced from the
  memory-mapped file and converted alone (:func:`load_hf_tensors`).
* :func:`load_hf_tensors`: fills a module from any mapping of HF-named tensors (the one place
  names are mapped, through :mod:`ttc.hub.names`; other checkpoint readers, e.g. GGUF, reuse it).
* :func:`save_hf`: a :class:`~ttc.models.llama.Llama` (or a ttc
  :class:`~ttc.models.Transformer`, as ``GPT2LMHeadModel``) to a directory that
  ``transformers.AutoModelForCausalLM.from_pretrained`` loads to the same logits.

Safetensors files are read and written here directly (an 8-byte header length, a JSON header
of dtypes, shapes and byte offsets, then the raw little-endian data): ``safetensors``'
``framework="numpy"`` cannot represent bfloat16 (``safe_open(...).get_slice(name)[index]``
raises ``TypeError`` on a BF16 tensor), while a ``numpy.memmap`` with ``ml_dtypes.bfloat16``
maps every dtype without copying, and slicing one reads only that slice's bytes (the pages it
touches), which is what a sharded load needs.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import struct
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding

from ttc.hub import names
from ttc.models.llama import LAYER_TYPES, ROPE_TYPES, Llama, LlamaConfig
from ttc.models.registry import check_model_split, param_specs
from ttc.models.transformer import Transformer, TransformerConfig
from ttc.parallel import Layout, mesh_of

__all__ = ["ARCHITECTURES", "config_from_hf", "config_to_hf", "load_hf", "load_hf_tensors",
           "read_safetensors", "save_hf", "write_safetensors"]

ARCHITECTURES = {
    "llama": ("LlamaForCausalLM", "llama"),
    "qwen2": ("Qwen2ForCausalLM", "qwen2"),
    "qwen3": ("Qwen3ForCausalLM", "qwen3"),
    "mistral": ("MistralForCausalLM", "mistral"),
    "gemma3": ("Gemma3ForCausalLM", "gemma3_text"),
}
"""Per family: the HF architecture and ``model_type`` it loads from and saves as."""

_PLAIN = dict(norm_offset=False, sandwich_norm=False, qk_norm=False, embed_scale=False,
              query_pre_attn_scalar=None, attn_softcap=None, final_softcap=None,
              rope_local_theta=None)
_FIXED: dict[str, dict[str, Any]] = {
    "llama": {**_PLAIN},
    "qwen2": {**_PLAIN, "qkv_bias": True, "o_bias": False, "mlp_bias": False},
    "qwen3": {**_PLAIN, "qk_norm": True, "mlp_bias": False},
    "mistral": {**_PLAIN, "qkv_bias": False, "o_bias": False, "mlp_bias": False},
    "gemma3": {"norm_offset": True, "sandwich_norm": True, "qk_norm": True, "embed_scale": True,
               "mlp_bias": False, "attn_softcap": None},
}
"""Config fields each family's HF code fixes (the rest come from ``config.json``)."""

_ACTS = {"silu": "silu", "swish": "silu", "gelu_pytorch_tanh": "gelu_tanh",
         "gelu_new": "gelu_tanh", "gelu": "gelu"}
_ACT_NAMES = {"silu": "silu", "gelu_tanh": "gelu_pytorch_tanh", "gelu": "gelu"}
_ST_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16,
              "BF16": ml_dtypes.bfloat16, "I64": np.int64, "I32": np.int32, "I16": np.int16,
              "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_,
              "F8_E4M3": ml_dtypes.float8_e4m3fn, "F8_E5M2": ml_dtypes.float8_e5m2}
_NP_DTYPES = {"float32": np.dtype(np.float32), "bfloat16": np.dtype(ml_dtypes.bfloat16)}
_SINGLE, _INDEX = "model.safetensors", "model.safetensors.index.json"


# --------------------------------------------------------------------------- configs


def _family_of(config: Mapping[str, Any]) -> str:
    """The ttc family of a ``config.json`` (its first architecture, else its model_type)."""
    archs = config.get("architectures") or []
    by_arch = {a: f for f, (a, _) in ARCHITECTURES.items()}
    by_type = {t: f for f, (_, t) in ARCHITECTURES.items()}
    fam = by_arch.get(archs[0]) if archs else by_type.get(config.get("model_type"))
    if fam is None:
        supported = ", ".join(f"{a} (model_type {t!r})" for a, t in ARCHITECTURES.values())
        raise ValueError(
            f"unsupported Hugging Face architecture {archs[0] if archs else None!r} "
            f"(model_type {config.get('model_type')!r}): ttc.hub.hf loads only decoder-only "
            f"causal LMs of the Llama family, namely {supported}; convert the checkpoint to one "
            "of these or add its family to ttc.models.llama and ttc.hub.names.")
    return fam


def _rope(params: Mapping[str, Any], max_len: int) -> dict[str, Any]:
    """``LlamaConfig`` RoPE fields of one (HF v5 ``rope_parameters``-style) dict."""
    kind = params.get("rope_type", params.get("type", "default"))
    if kind not in ROPE_TYPES or params.get("partial_rotary_factor", 1.0) != 1.0:
        raise ValueError(f"unsupported RoPE parameters {dict(params)}: ttc supports rope_type "
                         f"{ROPE_TYPES} over the whole head dimension")
    out: dict[str, Any] = {"rope_type": kind, "rope_theta": float(params["rope_theta"])}
    if kind != "default":
        out["rope_factor"] = float(params["factor"])
    if kind == "llama3":
        out |= {"rope_low_freq_factor": float(params["low_freq_factor"]),
                "rope_high_freq_factor": float(params["high_freq_factor"]),
                "rope_original_max_len": int(params.get("original_max_position_embeddings",
                                                        max_len))}
    return out


def _rope_fields(fam: str, config: Mapping[str, Any]) -> dict[str, Any]:
    """RoPE fields from ``rope_parameters`` (transformers 5) or ``rope_theta`` /
    ``rope_scaling`` / ``rope_local_base_freq`` (transformers 4)."""
    max_len = config["max_position_embeddings"]
    params = dict(config.get("rope_parameters") or {})
    if fam != "gemma3":
        flat = dict(config.get("rope_scaling") or params)
        flat.setdefault("rope_theta", config.get("rope_theta") or 10000.0)
        return _rope(flat, max_len)
    full = dict(params.get("full_attention") or config.get("rope_scaling") or {})
    full.setdefault("rope_theta", config.get("rope_theta") or 1_000_000.0)
    local = dict(params.get("sliding_attention") or {})
    local.setdefault("rope_theta", config.get("rope_local_base_freq") or 10000.0)
    if _rope(local, max_len)["rope_type"] != "default":
        raise ValueError(f"unsupported Gemma 3 local-layer RoPE {local}: ttc supports only "
                         "the default scheme on sliding layers")
    return {**_rope(full, max_len), "rope_local_theta": float(local["rope_theta"])}


def _window_fields(fam: str, config: Mapping[str, Any]) -> dict[str, Any]:
    """``sliding_window`` and ``layer_types`` of each family's convention."""
    n, window = config["num_hidden_layers"], config.get("sliding_window")
    if fam == "llama":
        return {"sliding_window": None, "layer_types": None}
    if fam == "mistral":
        return {"sliding_window": window, "layer_types": None}
    if config.get("use_bidirectional_attention"):
        raise ValueError("Gemma 3 with use_bidirectional_attention is not a causal LM: "
                         "unsupported by ttc")
    types = config.get("layer_types")
    if types is None and fam == "gemma3":
        every = config.get("sliding_window_pattern") or config.get("_sliding_window_pattern", 6)
        types = [LAYER_TYPES[0] if (i + 1) % every == 0 else LAYER_TYPES[1] for i in range(n)]
    if fam in ("qwen2", "qwen3"):
        window = window if config.get("use_sliding_window") else None
        first = config.get("max_window_layers", n)
        types = types or [LAYER_TYPES[1] if i >= first else LAYER_TYPES[0] for i in range(n)]
    if window is None or LAYER_TYPES[1] not in types:  # HF: no window, every layer full
        return {"sliding_window": None, "layer_types": None}
    return {"sliding_window": window, "layer_types": tuple(types)}


def config_from_hf(config: Mapping[str, Any], *, dtype: str = "float32") -> LlamaConfig:
    """The :class:`LlamaConfig` of a Hugging Face ``config.json`` dict.

    Dispatches on ``architectures[0]`` (else ``model_type``) over :data:`ARCHITECTURES`; reads
    both the transformers 5 (``rope_parameters``, ``layer_types``) and 4 (``rope_theta``,
    ``rope_scaling``, ``sliding_window_pattern``, ``rope_local_base_freq``) spellings.

    Args:
        config: the parsed ``config.json``.
        dtype: ``'float32'`` | ``'bfloat16'`` for parameters and cache.

    Raises:
        ValueError: an unsupported architecture or RoPE scheme.
    """
    fam = _family_of(config)
    heads, d = config["num_attention_heads"], config["hidden_size"]
    act = config.get("hidden_activation" if fam == "gemma3" else "hidden_act") or (
        "gelu_pytorch_tanh" if fam == "gemma3" else "silu")
    if act not in _ACTS:
        raise ValueError(f"unsupported activation {act!r} (supported: {sorted(_ACTS)})")
    bias = bool(config.get("attention_bias", False))
    kw: dict[str, Any] = dict(
        vocab_size=config["vocab_size"], d_model=d, n_layers=config["num_hidden_layers"],
        n_heads=heads, n_kv_heads=config.get("num_key_value_heads") or heads,
        head_dim=config.get("head_dim") or d // heads, d_ff=config["intermediate_size"],
        max_len=config["max_position_embeddings"], hf_family=fam, dtype=dtype,
        norm_eps=float(config.get("rms_norm_eps", 1e-6)), act=_ACTS[act],
        tie_embeddings=bool(config.get("tie_word_embeddings", fam == "gemma3")),
        qkv_bias=bias, o_bias=bias, mlp_bias=bool(config.get("mlp_bias", False)))
    if fam == "gemma3":  # HF's Gemma3Attention never applies attn_logit_softcapping (Gemma 2
        # did; Gemma 3 replaced it by q/k norms), so it is not read
        kw |= dict(query_pre_attn_scalar=config.get("query_pre_attn_scalar", 256),
                   final_softcap=config.get("final_logit_softcapping"))
    kw |= _FIXED[fam] | _rope_fields(fam, config) | _window_fields(fam, config)
    return LlamaConfig(**kw)


def _check_family_fields(cfg: LlamaConfig) -> None:
    """Refuses a config that its ``hf_family``'s HF code cannot express."""
    bad = [f"{k}={getattr(cfg, k)!r} (must be {v!r})" for k, v in _FIXED[cfg.hf_family].items()
           if getattr(cfg, k) != v]
    if cfg.hf_family in ("llama", "qwen3", "gemma3") and cfg.qkv_bias != cfg.o_bias:
        bad.append(f"qkv_bias={cfg.qkv_bias} != o_bias={cfg.o_bias} (one attention_bias)")
    if cfg.hf_family == "llama" and cfg.sliding_window is not None:
        bad.append(f"sliding_window={cfg.sliding_window} (Llama has none)")
    if cfg.hf_family == "mistral" and len(set(cfg.layer_types)) > 1:
        bad.append(f"layer_types={cfg.layer_types} (Mistral windows every layer or none)")
    if bad:
        raise ValueError(f"config cannot be written as a Hugging Face {cfg.hf_family} "
                         f"checkpoint: {'; '.join(bad)}")


def _rope_to_hf(cfg: LlamaConfig) -> dict[str, Any]:
    out: dict[str, Any] = {"rope_type": cfg.rope_type, "rope_theta": cfg.rope_theta}
    if cfg.rope_type != "default":
        out["factor"] = cfg.rope_factor
    if cfg.rope_type == "llama3":
        out |= {"low_freq_factor": cfg.rope_low_freq_factor,
                "high_freq_factor": cfg.rope_high_freq_factor,
                "original_max_position_embeddings": cfg.rope_original_max_len}
    return out


def config_to_hf(cfg: LlamaConfig | TransformerConfig) -> dict[str, Any]:
    """A ``config.json`` dict for ``cfg`` that ``transformers.AutoConfig`` reads back to the
    same architecture (a :class:`TransformerConfig` as GPT-2).

    Raises:
        ValueError: a non-``'lm'`` head, or fields the family's HF code cannot express.
    """
    if cfg.head != "lm":
        raise ValueError(f"only LM heads have a Hugging Face causal-LM form, not head={cfg.head!r}")
    if isinstance(cfg, TransformerConfig):
        return _gpt2_config(cfg)
    _check_family_fields(cfg)
    arch, model_type = ARCHITECTURES[cfg.hf_family]
    rope = _rope_to_hf(cfg)
    out: dict[str, Any] = {
        "architectures": [arch], "model_type": model_type, "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.d_model, "intermediate_size": cfg.d_ff,
        "num_hidden_layers": cfg.n_layers, "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.n_kv_heads, "head_dim": cfg.head_dim,
        "max_position_embeddings": cfg.max_len, "rms_norm_eps": cfg.norm_eps,
        "tie_word_embeddings": cfg.tie_embeddings, "dtype": cfg.dtype,
        "attention_bias": cfg.qkv_bias, "mlp_bias": cfg.mlp_bias,
        ("hidden_activation" if cfg.hf_family == "gemma3" else "hidden_act"):
            _ACT_NAMES[cfg.act],
        "rope_parameters": rope,
    }
    if cfg.hf_family in ("qwen2", "qwen3", "gemma3"):
        sliding = cfg.sliding_window is not None
        out |= {"layer_types": list(cfg.layer_types), "sliding_window": cfg.sliding_window,
                "use_sliding_window": sliding, "max_window_layers": 0 if sliding else cfg.n_layers}
    if cfg.hf_family == "mistral":
        out["sliding_window"] = cfg.sliding_window
    if cfg.hf_family == "gemma3":
        local = {"rope_type": "default", "rope_theta": cfg.rope_local_theta or cfg.rope_theta}
        out |= {"rope_parameters": {"full_attention": rope, "sliding_attention": local},
                "query_pre_attn_scalar": cfg.query_pre_attn_scalar or cfg.head_dim,
                "attn_logit_softcapping": None,
                "final_logit_softcapping": cfg.final_softcap,
                "use_bidirectional_attention": False}
    return out


def _gpt2_config(cfg: TransformerConfig) -> dict[str, Any]:
    """GPT-2 fields that reproduce ttc's Transformer: tanh-approximate GELU (``gelu_new`` =
    ``jax.nn.gelu``'s default), LayerNorm epsilon 1e-6 (``nnx.LayerNorm``'s), untied head."""
    return {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
        "vocab_size": cfg.vocab_size, "n_positions": cfg.max_len, "n_embd": cfg.d_model,
        "n_layer": cfg.n_layers, "n_head": cfg.n_heads, "n_inner": cfg.d_ff,
        "activation_function": "gelu_new", "layer_norm_epsilon": 1e-6,
        "tie_word_embeddings": False, "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0,
        "scale_attn_weights": True, "dtype": "float32",
        "bos_token_id": None, "eos_token_id": None,  # ttc's stop ids live in its tokenizers
    }


# --------------------------------------------------------------------------- safetensors


def read_safetensors(path: str | Path) -> dict[str, np.ndarray]:
    """Memory-mapped, read-only views of every tensor of a ``.safetensors`` file (bfloat16 as
    ``ml_dtypes.bfloat16``); nothing is read until a view is used."""
    path = Path(path)
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    header.pop("__metadata__", None)
    if not header:
        return {}
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + n)
    out = {}
    for name, info in header.items():
        if info["dtype"] not in _ST_DTYPES:
            raise ValueError(f"tensor {name!r} of {path} has unsupported dtype {info['dtype']}")
        start, end = info["data_offsets"]
        out[name] = data[start:end].view(_ST_DTYPES[info["dtype"]]).reshape(info["shape"])
    return out


def _st_dtype(dtype: np.dtype) -> str:
    for k, v in _ST_DTYPES.items():
        if np.dtype(v) == dtype:
            return k
    raise ValueError(f"no safetensors dtype for {dtype}")


def write_safetensors(path: str | Path,
                      tensors: Iterable[tuple[str, tuple[int, ...], np.dtype,
                                              Callable[[], np.ndarray]]]) -> None:
    """Writes a ``.safetensors`` file one tensor at a time (never all of them in memory).

    Args:
        path: the file.
        tensors: ``(name, shape, dtype, make)`` per tensor; ``make()`` returns its array.
    """
    items = sorted(tensors, key=lambda t: t[0])
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, shape, dtype, _ in items:
        size = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        header[name] = {"dtype": _st_dtype(np.dtype(dtype)), "shape": list(shape),
                        "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        for name, shape, dtype, make in items:
            arr = np.ascontiguousarray(make(), dtype=dtype)
            if arr.shape != tuple(shape):
                raise ValueError(f"tensor {name!r}: shape {arr.shape}, header says {shape}")
            f.write(arr.tobytes())


def _checkpoint_tensors(directory: Path) -> tuple[dict[str, np.ndarray], str]:
    """Memory-mapped tensors of a model directory and the file(s) they come from, in words
    (``model.safetensors`` first, then the index: the order of ``transformers``)."""
    single, index = directory / _SINGLE, directory / _INDEX
    if single.exists():
        return read_safetensors(single), str(single)
    if index.exists():
        weight_map: dict[str, str] = json.loads(index.read_text())["weight_map"]
        tensors: dict[str, np.ndarray] = {}
        for shard in sorted(set(weight_map.values())):
            views = read_safetensors(directory / shard)
            tensors |= {k: v for k, v in views.items() if weight_map.get(k) == shard}
        return tensors, f"{index} (and its {len(set(weight_map.values()))} shards)"
    raise ValueError(f"no {_SINGLE} or {_INDEX} in {directory}: ttc reads Hugging Face "
                     "checkpoints in safetensors form only (save_pretrained(..., "
                     "safe_serialization=True))")


# --------------------------------------------------------------------------- loading


def _expected(cfg: LlamaConfig, source: str) -> tuple[nnx.GraphDef, nnx.State, dict]:
    """The shape-only module of ``cfg`` and ``{path: (hf_name, transpose)}`` of its params."""
    if cfg.head != "lm":
        raise ValueError(f"HF checkpoints hold LM heads: load {source} with head='lm' and build "
                         f"a head={cfg.head!r} model from it (ttc.train_reward.init_from_policy)")
    graphdef, state = nnx.split(nnx.eval_shape(lambda: Llama(cfg, rngs=nnx.Rngs(0))))
    paths = [names.path_str(p) for p, _ in nnx.to_flat_state(state)]
    return graphdef, state, names.param_names(cfg.hf_family, paths, cfg.n_layers)


def _check_names(rules: dict, tensors: Mapping[str, Any], cfg: LlamaConfig, source: str) -> None:
    """Missing or unexpected tensors: one ``ValueError`` naming them and ``source``."""
    wanted = {hf for hf, _ in rules.values()}
    missing = sorted(wanted - set(tensors))
    extra = sorted(k for k in set(tensors) - wanted
                   if not k.endswith(names.IGNORED_SUFFIXES)
                   and not (cfg.tie_embeddings and k == "lm_head.weight"))
    if missing or extra:
        what = "; ".join(s for s in (
            missing and f"missing {len(missing)} tensor(s) {missing[:20]}",
            extra and f"unexpected tensor(s) {extra[:20]}") if s)
        raise ValueError(
            f"the checkpoint {source} does not match its {cfg.hf_family} config "
            f"({cfg.n_layers} layers, qkv_bias={cfg.qkv_bias}, qk_norm={cfg.qk_norm}, "
            f"tie_embeddings={cfg.tie_embeddings}): {what}. The file is incomplete or its "
            "config.json describes another architecture.")


def load_hf_tensors(cfg: LlamaConfig, tensors: Mapping[str, Any], dtype: str | None = None, *,
                    source: str = "the given tensors", layout: Layout | None = None) -> Llama:
    """A :class:`Llama` filled from HF-named tensors (the one place names are mapped).

    Each parameter is converted once (transposed view, cast to ``dtype``, copied to the
    device); the module itself is built shape-only, so only one tensor is ever held twice.

    With a non-plain ``layout`` every parameter is created on its mesh directly, as
    ``LoadedModel.from_module(...).on_mesh(layout)`` would place it (the same values, the same
    ``NamedSharding``: split over ``model`` by the family's partition rules, replicated over
    ``data``), through ``jax.make_array_from_callback``: each distinct shard is read by slicing
    ``tensors[name]`` with the shard's index mapped to the source's axes (reversed for a
    transposed kernel), converted to ``dtype`` alone, and kept only until the devices that hold
    it have it. Where a lookup is lazy, as for the memory-mapped views of
    :func:`read_safetensors`, only the shard's values are read and converted (a shard that
    cuts across the file's rows still touches most of the tensor's pages). A mapping that
    materialises a tensor on lookup, as GGUF's ``LazyTensors`` (quantized blocks are
    dequantized whole), is read whole on the host, one tensor at a time, and then sliced.

    Args:
        cfg: the architecture (``head='lm'``).
        tensors: HF tensor name -> NumPy-compatible array (``ml_dtypes.bfloat16`` for bf16),
            e.g. memory-mapped views; extra derived buffers (``rotary_emb.inv_freq``) and a
            tied ``lm_head.weight`` are ignored.
        dtype: ``'float32'`` | ``'bfloat16'``; default ``cfg.dtype``.
        source: where the tensors come from, for error messages.
        layout: the mesh to create the parameters on; ``None`` or a plain layout: on the default
            device, as before.

    Raises:
        ValueError: missing or unexpected tensors, a tensor of another shape, or a ``layout``
            whose ``model`` axis does not divide the heads or MLP width (checked before any
            tensor is read) or that needs more devices than this process has.
    """
    if dtype is not None:
        cfg = dataclasses.replace(cfg, dtype=dtype)
    graphdef, state, rules = _expected(cfg, source)
    _check_names(rules, tensors, cfg, source)
    shardings = _shardings(cfg, state, layout)
    np_dtype = _NP_DTYPES[cfg.dtype]
    pure, bad = nnx.to_pure_dict(state), []
    for path, var in nnx.to_flat_state(state):
        hf, transpose = rules[names.path_str(path)]
        raw = tensors[hf]
        raw = raw if shardings is not None and hasattr(raw, "shape") else np.asarray(raw)
        shape = tuple(var.value.shape)
        expected = shape[::-1] if transpose else shape
        if tuple(raw.shape) != expected:
            bad.append(f"{hf}: {tuple(raw.shape)}, expected {expected}")
            continue
        node = pure
        for p in path[:-1]:
            node = node[p]
        if shardings is None:
            # np.array copies out of the memory map (so the model never aliases the file), in
            # ttc's layout and dtype at once; that one host copy is the only duplicate
            node[path[-1]] = jnp.asarray(np.array(names.from_hf(raw, transpose), np_dtype,
                                                  order="C"))
        else:
            node[path[-1]] = _sharded_param(raw, transpose, np_dtype, shape, _at(shardings, path))
    if bad:
        raise ValueError(f"tensors of {source} have shapes that do not match their "
                         f"{cfg.hf_family} config: {'; '.join(bad[:20])}")
    nnx.replace_by_pure_dict(state, pure)
    return nnx.merge(graphdef, state)


def _shardings(cfg: LlamaConfig, state: nnx.State, layout: Layout | None) -> dict | None:
    """The ``NamedSharding`` of each parameter of the shape-only ``state`` on ``layout``'s mesh,
    as a pure dict like ``nnx.to_pure_dict(state)`` (the specs of
    :meth:`ttc.checkpoint.LoadedModel.on_mesh`); ``None`` for no layout or a plain one.

    Raises:
        ValueError: ``layout.model`` does not divide the heads or MLP width, or the layout
            needs more devices than this process has.
    """
    if layout is None or layout.plain:
        return None
    check_model_split(cfg, layout.model)
    mesh = mesh_of(layout)
    specs = param_specs(cfg, nnx.to_pure_dict(state), layout.model)
    return jax.tree.map(lambda s: NamedSharding(mesh, s), specs)


def _at(tree: Mapping, path: tuple) -> Any:
    """``tree[path[0]][path[1]]...``."""
    for p in path:
        tree = tree[p]
    return tree


def _sharded_param(raw: Any, transpose: bool, np_dtype: np.dtype, shape: tuple[int, ...],
                   sharding: NamedSharding) -> jax.Array:
    """The parameter ``names.from_hf(raw, transpose)`` (cast to ``np_dtype``) as a ``shape``
    array with ``sharding``, each distinct shard read from ``raw`` once: a shard's index in
    ttc's layout is reversed onto ``raw``'s axes where ``transpose`` (``raw.T[i, j]`` is
    ``raw[j, i]``), and only that slice is converted. A shard is kept only until every device
    that holds it has it."""
    shards: dict[tuple, np.ndarray] = {}

    def key(index: tuple[slice, ...]) -> tuple:
        return tuple((s.start, s.stop, s.step) for s in index)

    left = collections.Counter(key(i) for i in
                               sharding.addressable_devices_indices_map(shape).values())

    def read(index: tuple[slice, ...]) -> np.ndarray:
        k = key(index)
        if k not in shards:
            src = tuple(reversed(index)) if transpose else tuple(index)
            shards[k] = np.array(names.from_hf(raw[src], transpose), np_dtype, order="C")
        left[k] -= 1
        return shards.pop(k) if left[k] <= 0 else shards[k]

    return jax.make_array_from_callback(shape, sharding, read)


def load_hf(path: str | Path, dtype: str = "float32", *,
            layout: Layout | None = None) -> tuple[LlamaConfig, Llama]:
    """Loads a Hugging Face model directory as a :class:`Llama`.

    Args:
        path: a directory with ``config.json`` and ``model.safetensors`` (or the shards of
            ``model.safetensors.index.json``).
        dtype: ``'float32'`` | ``'bfloat16'`` for parameters and cache.
        layout: create the parameters on this layout's mesh, each device reading only its
            shard of the files (:func:`load_hf_tensors`); ``None``: on the default device.

    Returns:
        ``(cfg, model)``.

    Raises:
        ValueError: an unsupported architecture, missing files or tensors, wrong shapes, or a
            ``layout`` that does not fit the model or this process.
    """
    directory = Path(path)
    cfg_file = directory / "config.json"
    if not cfg_file.exists():
        raise ValueError(f"{directory} is not a Hugging Face model directory: no config.json")
    cfg = config_from_hf(json.loads(cfg_file.read_text()), dtype=dtype)
    tensors, source = _checkpoint_tensors(directory)
    return cfg, load_hf_tensors(cfg, tensors, source=source, layout=layout)


# --------------------------------------------------------------------------- saving


def _gpt2_zero_biases(flat: dict[str, Any], n_layers: int) -> list:
    out = []
    for hf, kernel in names.GPT2_ZERO_BIASES.items():
        for i in range(n_layers):
            width = flat[kernel.format(i=i)].shape[-1]
            out.append((hf.format(i=i), (width,), np.dtype(np.float32),
                        lambda w=width: np.zeros((w,), np.float32)))
    return out


def save_hf(model: Llama | Transformer, directory: str | Path) -> Path:
    """Writes ``model`` as a Hugging Face checkpoint: ``config.json`` + ``model.safetensors``.

    A :class:`Llama` is written as its ``hf_family``'s architecture (a tied LM head only as
    ``model.embed_tokens.weight``); a ttc :class:`Transformer` as ``GPT2LMHeadModel`` (with
    zero attention biases, which it lacks). Tensors are written one at a time.

    Args:
        model: an ``'lm'``-head :class:`Llama` or :class:`Transformer`.
        directory: created if needed.

    Returns:
        ``directory``.
    """
    cfg = model.cfg
    hf_cfg = config_to_hf(cfg)
    family = "gpt2" if isinstance(cfg, TransformerConfig) else cfg.hf_family
    flat = {names.path_str(p): v.value
            for p, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    rules = names.param_names(family, flat, cfg.n_layers)
    items = []
    for p, (hf, transpose) in rules.items():
        value = flat[p]
        shape = tuple(value.shape[::-1] if transpose else value.shape)
        items.append((hf, shape, np.dtype(value.dtype),
                      lambda v=value, t=transpose: names.to_hf(np.asarray(v), t)))
    if family == "gpt2":
        items += _gpt2_zero_biases(flat, cfg.n_layers)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    write_safetensors(directory / _SINGLE, items)
    (directory / "config.json").write_text(json.dumps(hf_cfg, indent=2) + "\n")
    return directory
