"""Parameter names: one explicit table per Hugging Face family from ttc parameter paths to HF
tensor names, with the layout rule of each.

A ttc path is the dotted NNX state path of a parameter (``blocks.3.q.kernel``); a table key
holds ``{i}`` for the layer index. Each entry is ``(hf_name, transpose)``: HF ``nn.Linear``
weights are ``[out, in]`` while NNX ``Linear`` kernels are ``[in, out]``, so their entries
transpose; GPT-2's ``Conv1D`` weights are already ``[in, out]`` and do not. Tables list every
optional parameter of the family (biases, q/k norms); the parameters a module actually has
select the entries that apply (:func:`param_names`).

This is the one place that maps names: :func:`ttc.hub.hf.load_hf_tensors` (which also serves
other readers, e.g. GGUF, that produce HF-named tensors) and :func:`ttc.hub.hf.save_hf` read it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

__all__ = ["GPT2_ZERO_BIASES", "IGNORED_SUFFIXES", "REWARD_HEADS", "TABLES", "from_hf",
           "param_names", "path_str", "to_hf"]

Entry = tuple[str, bool]
"""``(HF tensor name, transpose)``."""

_L = "model.layers.{i}."

LLAMA: dict[str, Entry] = {
    "embed.embedding": ("model.embed_tokens.weight", False),
    "final_norm.weight": ("model.norm.weight", False),
    "head.kernel": ("lm_head.weight", True),
    "blocks.{i}.attn_norm.weight": (_L + "input_layernorm.weight", False),
    "blocks.{i}.q.kernel": (_L + "self_attn.q_proj.weight", True),
    "blocks.{i}.q.bias": (_L + "self_attn.q_proj.bias", False),
    "blocks.{i}.k.kernel": (_L + "self_attn.k_proj.weight", True),
    "blocks.{i}.k.bias": (_L + "self_attn.k_proj.bias", False),
    "blocks.{i}.v.kernel": (_L + "self_attn.v_proj.weight", True),
    "blocks.{i}.v.bias": (_L + "self_attn.v_proj.bias", False),
    "blocks.{i}.o.kernel": (_L + "self_attn.o_proj.weight", True),
    "blocks.{i}.o.bias": (_L + "self_attn.o_proj.bias", False),
    "blocks.{i}.mlp_norm.weight": (_L + "post_attention_layernorm.weight", False),
    "blocks.{i}.gate.kernel": (_L + "mlp.gate_proj.weight", True),
    "blocks.{i}.gate.bias": (_L + "mlp.gate_proj.bias", False),
    "blocks.{i}.up.kernel": (_L + "mlp.up_proj.weight", True),
    "blocks.{i}.up.bias": (_L + "mlp.up_proj.bias", False),
    "blocks.{i}.down.kernel": (_L + "mlp.down_proj.weight", True),
    "blocks.{i}.down.bias": (_L + "mlp.down_proj.bias", False),
}
"""Llama (also Qwen2 and Mistral: same names; Qwen2 has the q/k/v biases)."""

QWEN3: dict[str, Entry] = {
    **LLAMA,
    "blocks.{i}.q_norm.weight": (_L + "self_attn.q_norm.weight", False),
    "blocks.{i}.k_norm.weight": (_L + "self_attn.k_norm.weight", False),
}
"""Qwen3: Llama plus the per-head q/k norms."""

GEMMA3: dict[str, Entry] = {
    **QWEN3,
    # Gemma's post_attention_layernorm follows attention; its pre_feedforward_layernorm is
    # what Llama calls post_attention_layernorm (the MLP's input norm).
    "blocks.{i}.post_attn_norm.weight": (_L + "post_attention_layernorm.weight", False),
    "blocks.{i}.mlp_norm.weight": (_L + "pre_feedforward_layernorm.weight", False),
    "blocks.{i}.post_mlp_norm.weight": (_L + "post_feedforward_layernorm.weight", False),
}
"""Gemma 3 (text, ``Gemma3ForCausalLM``)."""

_H = "transformer.h.{i}."

GPT2: dict[str, Entry] = {
    "embed.embedding": ("transformer.wte.weight", False),
    "pos": ("transformer.wpe.weight", False),
    "blocks.{i}.ln1.scale": (_H + "ln_1.weight", False),
    "blocks.{i}.ln1.bias": (_H + "ln_1.bias", False),
    "blocks.{i}.qkv.kernel": (_H + "attn.c_attn.weight", False),
    "blocks.{i}.proj.kernel": (_H + "attn.c_proj.weight", False),
    "blocks.{i}.ln2.scale": (_H + "ln_2.weight", False),
    "blocks.{i}.ln2.bias": (_H + "ln_2.bias", False),
    "blocks.{i}.fc.kernel": (_H + "mlp.c_fc.weight", False),
    "blocks.{i}.fc.bias": (_H + "mlp.c_fc.bias", False),
    "blocks.{i}.out.kernel": (_H + "mlp.c_proj.weight", False),
    "blocks.{i}.out.bias": (_H + "mlp.c_proj.bias", False),
    "ln_f.scale": ("transformer.ln_f.weight", False),
    "ln_f.bias": ("transformer.ln_f.bias", False),
    "head.kernel": ("lm_head.weight", True),
}
"""ttc's synthetic :class:`ttc.models.Transformer` as ``GPT2LMHeadModel`` (Conv1D: no
transposes except the ``nn.Linear`` LM head)."""

GPT2_ZERO_BIASES: dict[str, str] = {
    _H + "attn.c_attn.bias": "blocks.{i}.qkv.kernel",
    _H + "attn.c_proj.bias": "blocks.{i}.proj.kernel",
}
"""GPT-2 biases that ttc's Transformer lacks, written as zeros: HF name -> the kernel whose
output width they take."""

TABLES: dict[str, Mapping[str, Entry]] = {
    "llama": LLAMA, "qwen2": LLAMA, "mistral": LLAMA, "qwen3": QWEN3, "gemma3": GEMMA3,
    "gpt2": GPT2,
}
"""Per HF family: ttc path template -> ``(HF name template, transpose)``."""

REWARD_HEADS: dict[str, Mapping[str, Entry]] = {
    # the good/bad token rows of the LM head (of the embedding when it is tied)
    "lm_pair": {"w": ("lm_head.weight", True)},
    # Qwen2ForProcessRewardModel: score = Sequential(Linear(D, D), ReLU, Linear(D, 2))
    "process": {"w1": ("score.0.weight", True), "b1": ("score.0.bias", False),
                "w2": ("score.2.weight", True), "b2": ("score.2.bias", False)},
    # *ForSequenceClassification: score = Linear(D, num_labels, bias=False)
    "classifier": {"w": ("score.weight", True)},
}
"""Reward heads held beside a Llama-family trunk (:mod:`ttc.hub.reward`): head kind -> head
parameter -> ``(HF name, transpose)``; the trunk's own names are :data:`TABLES`' (``model.*``)."""

IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)
"""Checkpoint tensors that are derived buffers, not parameters (old Llama checkpoints)."""


def path_str(path: Iterable[object]) -> str:
    """An NNX state path (``('blocks', 0, 'q', 'kernel')``) as a dotted string."""
    return ".".join(str(p) for p in path)


def param_names(family: str, paths: Iterable[str], n_layers: int) -> dict[str, Entry]:
    """The HF name and transpose rule of each of a module's parameter ``paths``.

    Args:
        family: a key of :data:`TABLES`.
        paths: dotted ttc parameter paths (:func:`path_str`).
        n_layers: the number of layers the ``{i}`` templates range over.

    Returns:
        ``{path: (hf_name, transpose)}`` for every path.

    Raises:
        KeyError: a path has no entry in the family's table (a bug of the table).
    """
    table = TABLES[family]
    expanded: dict[str, Entry] = {}
    for key, (hf, transpose) in table.items():
        layers = range(n_layers) if "{i}" in key else (None,)
        for i in layers:
            expanded[key.format(i=i)] = (hf.format(i=i), transpose)
    out = {}
    for p in paths:
        if p not in expanded:
            raise KeyError(f"no {family} tensor name for ttc parameter {p!r} in ttc.hub.names")
        out[p] = expanded[p]
    return out


def from_hf(array: np.ndarray, transpose: bool) -> np.ndarray:
    """An HF tensor in ttc layout (a view: ``[out, in] -> [in, out]`` when ``transpose``)."""
    return array.T if transpose else array


def to_hf(array: np.ndarray, transpose: bool) -> np.ndarray:
    """A ttc parameter in HF layout (contiguous)."""
    return np.ascontiguousarray(array.T if transpose else array)
