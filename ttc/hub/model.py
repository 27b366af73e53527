"""A pretrained checkpoint loaded as a ttc policy, with its tokenizer, for quick use.

:func:`load` reads a Hugging Face model directory (:mod:`ttc.hub.hf`) or a ``.gguf`` file
(:mod:`ttc.hub.gguf`) into a :class:`HubModel`: the Flax NNX module behind the policy interface
(:mod:`ttc.models.interface`), split for jit as every ttc policy is (:attr:`HubModel.policy`,
a :class:`ttc.checkpoint.LoadedModel` that every method takes), the Hugging Face tokenizer, and
two conveniences in the spirit of gemma's ``ChatSampler``: :meth:`HubModel.logits` (a full
forward) and :meth:`HubModel.generate` (ttc's own jitted prefill + decode loop).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ttc.checkpoint import LoadedModel
from ttc.decode import SamplingParams, decode, prefill
from ttc.parallel import Layout
from ttc.tasks.stops import StopRule


@dataclasses.dataclass(frozen=True, eq=False)
class HubModel:
    """A pretrained model as a ttc policy.

    Attributes:
        path: where it was loaded from.
        policy: the model split for jit (``cfg``, ``graphdef``, ``params``, ``meta``).
        tokenizer: the Hugging Face tokenizer (``encode``, ``decode``, ``apply_chat_template``),
            or ``None`` for a directory without tokenizer files.
    """

    path: Path
    policy: LoadedModel
    tokenizer: Any

    @property
    def cfg(self):
        """The model's :class:`ttc.models.llama.LlamaConfig`."""
        return self.policy.cfg

    @functools.cached_property
    def stop_ids(self) -> tuple[int, ...]:
        """The tokenizer's end-of-sequence and end-of-turn ids (where ``generate`` stops)."""
        return _stop_ids(self.tokenizer)

    def logits(self, token_ids) -> np.ndarray:
        """Next-token logits ``[B, T, V]`` (float32) of a full causal forward over
        ``token_ids`` (``[B, T]`` or ``[T]`` ints; no padding is inferred)."""
        ids = np.asarray(token_ids, np.int32)
        ids = ids[None] if ids.ndim == 1 else ids
        return np.asarray(_forward(self.policy.graphdef, self.policy.params, jnp.asarray(ids)))

    def generate(
        self,
        prompts: str | list[str],
        *,
        max_new_tokens: int = 64,
        temperature: float = 0.0,
        top_p: float = 1.0,
        chat: bool = False,
        seed: int = 0,
    ) -> list[str]:
        """Completions of ``prompts`` (greedy at ``temperature=0``), as text without the prompt.

        Args:
            prompts: one prompt or a list; each is tokenized as is, or as one user turn through
                the tokenizer's chat template when ``chat`` is set.
            max_new_tokens: most tokens generated per prompt; a row stops earlier at the
                tokenizer's end-of-sequence or end-of-turn token.
            temperature, top_p: sampling parameters (traced: changing them does not recompile).
            seed: the sampling key.
        """
        if self.tokenizer is None:
            raise ValueError(f"{self.path} has no tokenizer files: encode prompts yourself and "
                             "use .logits or the samplers with token ids")
        texts = [prompts] if isinstance(prompts, str) else list(prompts)
        rows = [self._encode(t, chat) for t in texts]
        lp = max(len(r) for r in rows)
        padded = np.zeros((len(rows), lp), np.int32)
        for i, r in enumerate(rows):
            padded[i, : len(r)] = r
        stops = StopRule(step_ids=(), eos_ids=self.stop_ids)
        st = _generate(self.policy.graphdef, self.policy.params, jnp.asarray(padded),
                       jnp.asarray([len(r) for r in rows], jnp.int32), jax.random.key(seed),
                       SamplingParams.make(temperature, 0, top_p), stops=stops,
                       cache_len=lp + max_new_tokens, max_new_tokens=max_new_tokens)
        tokens, length = np.asarray(st.tokens), np.asarray(st.length)
        out = []
        for i, r in enumerate(rows):
            gen = tokens[i, len(r): length[i]].tolist()
            out.append(self.tokenizer.decode([t for t in gen if t not in stops.eos_ids]))
        return out

    def _encode(self, text: str, chat: bool) -> list[int]:
        tok = self.tokenizer
        if chat:
            ids = tok.apply_chat_template([{"role": "user", "content": text}],
                                          add_generation_prompt=True, tokenize=True)
            return list(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys")
                        else ids)
        return list(tok(text)["input_ids"])


def _stop_ids(tokenizer) -> tuple[int, ...]:
    from ttc.tasks.hf_tokenizer import HFTokenizer

    return tuple(HFTokenizer(tokenizer).stop_ids)


@functools.partial(jax.jit, static_argnums=0)
def _forward(graphdef, params, ids):
    out, _ = nnx.merge(graphdef, params)(ids)
    return out.astype(jnp.float32)


@functools.partial(jax.jit, static_argnames=("graphdef", "stops", "cache_len", "max_new_tokens"))
def _generate(graphdef, params, prompts, prompt_len, key, sp, *, stops, cache_len,
              max_new_tokens):
    st = prefill(graphdef, params, prompts, prompt_len, key, num_samples=1, cache_len=cache_len)
    return decode(graphdef, params, st, sp, stops=stops, one_step=False,
                  max_steps=max_new_tokens)


def _model_id(path: Path, dtype: str) -> str:
    """A stable id of a loaded checkpoint (its resolved path, size, mtime and dtype)."""
    st = path.stat()
    h = hashlib.sha1(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{dtype}".encode())
    return f"hub-{path.stem}-{h.hexdigest()[:10]}"


def load(path: str | Path, dtype: str = "float32", *, layout: Layout | None = None) -> HubModel:
    """Loads a pretrained checkpoint as a ttc policy.

    Args:
        path: a Hugging Face model directory (``config.json``, ``model.safetensors`` or a sharded
            index, ``tokenizer.json`` and its chat template) or a ``.gguf`` file (tensors,
            tokenizer and chat template from its metadata).
        dtype: ``'float32'`` | ``'bfloat16'`` for the parameters and the KV cache.
        layout: the mesh to load the parameters onto (``None`` or a plain layout: the default
            device). The result equals ``load(path, dtype).policy.on_mesh(layout)`` (same
            values, same shardings), but each parameter is created on the mesh directly: with a
            safetensors directory each device's shard is sliced from the memory-mapped files;
            a GGUF file's tensors are dequantized whole on the host, one tensor at a time, and
            then sliced (:func:`ttc.hub.hf.load_hf_tensors`).

    Returns:
        The :class:`HubModel`.

    Raises:
        ValueError: the path does not exist or is neither kind, the checkpoint is of an
            unsupported architecture or lacks tensors (the message names what is missing), or
            ``layout``'s ``model`` axis does not divide the heads or MLP width, or it needs
            more devices than this process has.
    """
    from ttc.hub.hf import config_from_hf, load_hf, load_hf_tensors

    p = Path(path).expanduser()
    if dtype not in ("float32", "bfloat16"):
        raise ValueError(f"dtype must be 'float32' or 'bfloat16', got {dtype!r}")
    if p.is_file() and p.suffix == ".gguf":
        from ttc.hub.gguf import read_gguf

        ckpt = read_gguf(p)
        cfg = config_from_hf(ckpt.config, dtype=dtype)
        module = load_hf_tensors(cfg, ckpt.tensors, source=str(p), layout=layout)
        tokenizer = ckpt.tokenizer()
    elif p.is_dir():
        _, module = load_hf(p, dtype=dtype, layout=layout)
        tokenizer = _dir_tokenizer(p)
    else:
        what = "does not exist" if not p.exists() else "is neither a directory nor a .gguf file"
        raise ValueError(f"model path {p} {what}: give a Hugging Face model directory "
                         "(config.json + safetensors) or a .gguf file")
    meta = {"id": _model_id(p, dtype), "source": str(p.resolve()), "dtype": dtype}
    return HubModel(path=p, policy=LoadedModel.from_module(module, meta), tokenizer=tokenizer)


def _dir_tokenizer(directory: Path):
    names = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
    if not any((directory / n).exists() for n in names):
        return None
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(directory))


__all__ = ["HubModel", "load"]
