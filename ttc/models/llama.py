"""A Llama-family decoder in Flax NNX behind the policy interface: Llama, Qwen2/2.5, Qwen3,
Mistral and Gemma 3 (text) as one configurable module.

The ``llama`` family of :mod:`ttc.models.interface`: :class:`LlamaConfig` is a
:class:`~ttc.models.interface.PolicyConfig` and :class:`Llama` a
:class:`~ttc.models.interface.Policy`, with the cache, position and ``write_pos`` conventions
stated there. It reproduces the Hugging Face ``transformers`` implementations exactly (parity
tests in ``tests/test_llama.py``); :mod:`ttc.hub.hf` maps checkpoints onto it.

Architecture (pre-norm residual decoder of Touvron et al. 2023, "LLaMA: Open and Efficient
Foundation Language Models"), per layer::

    h = x + [post_attn_norm](attn(attn_norm(x)))          # post norms: Gemma 3 only
    y = h + [post_mlp_norm](down(act(gate(m)) * up(m)))    # m = mlp_norm(h); SwiGLU or GeGLU

* Attention is grouped-query (Ainslie et al. 2023, "GQA"): ``n_heads`` query heads share
  ``n_kv_heads`` key/value heads, query head ``j * G + g`` reading key/value head ``j``
  (``G = n_heads // n_kv_heads``, the layout of HF's ``repeat_kv``). Queries are grouped as
  ``[B, H_kv, G, S, D_h]`` against the ``[B, H_kv, T, D_h]`` cache, never repeating it.
* Rotary position embeddings (Su et al. 2021, "RoFormer") in HF's rotate-half convention: the
  two halves ``x1, x2`` of each head rotate as ``(x1 cos - x2 sin, x2 cos + x1 sin)`` with
  angles ``position * inv_freq`` from a ``[D_h / 2]`` table (:func:`rope_inv_freq`: default,
  ``linear`` or Llama-3 ``llama3`` frequency scaling).
* Sliding-window layers (Mistral; Gemma 3's local layers): a query at position ``p`` sees keys
  at positions in ``(p - window, p]`` (HF's ``sliding_window_overlay``: ``kv > q - window``).
* Gemma 3 (Gemma Team 2025, "Gemma 3 Technical Report"): embeddings times ``sqrt(d_model)``
  (cast to the parameter dtype), RMSNorm with ``(1 + w)``, pre- and post- attention and MLP
  norms, per-head q/k RMSNorm, GeGLU with tanh-approximate GELU, attention scale
  ``query_pre_attn_scalar ** -0.5``, local layers with their own RoPE base
  (``rope_local_theta``), optional tanh soft-capping of attention scores and final logits.
* Qwen2 adds q/k/v biases; Qwen3 per-head q/k RMSNorm and an explicit ``head_dim``.

Parameters and cache are held in ``dtype`` (``float32`` or ``bfloat16``); norms, softmax,
RoPE and soft-capping run in float32, and outputs are float32.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Array, Float, Int

from ttc.models.interface import (
    HEADS,
    Cache,
    LayerCache,
    default_positions,
    ledger_flops_per_token,
)
from ttc.models.reward import N_FEATURES

__all__ = ["ACTIVATIONS", "HF_FAMILIES", "LAYER_TYPES", "ROPE_TYPES", "Llama", "LlamaConfig",
           "rope_inv_freq"]

HF_FAMILIES = ("llama", "qwen2", "qwen3", "mistral", "gemma3")
"""The Hugging Face families a :class:`LlamaConfig` can describe (``hf_family``)."""

LAYER_TYPES = ("full_attention", "sliding_attention")
"""Per-layer attention kinds (HF's ``layer_types`` strings)."""

ROPE_TYPES = ("default", "linear", "llama3")
"""Supported RoPE frequency schemes (HF's ``rope_type``)."""

ACTIVATIONS = ("silu", "gelu_tanh", "gelu")
"""MLP gate activations: SwiGLU (``silu``), GeGLU with tanh-approximate or exact GELU."""

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


@dataclasses.dataclass(frozen=True, kw_only=True)
class LlamaConfig:
    """Architecture of a Llama-family decoder (frozen and hashable: a static jit argument).

    Attributes:
        vocab_size: number of token ids.
        d_model: residual width (HF ``hidden_size``).
        n_layers: number of decoder layers.
        n_heads: query heads.
        n_kv_heads: key/value heads (GQA; ``None``: ``n_heads``); divides ``n_heads``.
        head_dim: width of each head (``None``: ``d_model // n_heads``).
        d_ff: hidden width of the gated MLP (HF ``intermediate_size``).
        max_len: most positions (HF ``max_position_embeddings``).
        head: ``'lm'`` | ``'scalar'`` | ``'lm_value'`` (see :data:`ttc.models.interface.HEADS`).
        hf_family: the HF family it was read from or is written as (:data:`HF_FAMILIES`).
            Not named ``family``: :func:`ttc.models.config_to_dict` writes the registry's
            family under that key; :attr:`family` reads this field.
        dtype: ``'float32'`` | ``'bfloat16'``: parameters and cache.
        norm_eps: RMSNorm epsilon.
        norm_offset: RMSNorm scales by ``1 + w`` (Gemma) instead of ``w``.
        sandwich_norm: extra norms after attention and after the MLP (Gemma 3).
        qk_norm: per-head RMSNorm of queries and keys before RoPE (Qwen3, Gemma 3).
        qkv_bias: biases on the q/k/v projections (Qwen2; Llama ``attention_bias``).
        o_bias: bias on the output projection (Llama ``attention_bias``).
        mlp_bias: biases on the MLP projections (Llama ``mlp_bias``).
        act: gate activation, one of :data:`ACTIVATIONS`.
        embed_scale: multiply embeddings by ``sqrt(d_model)`` (Gemma).
        tie_embeddings: the LM head is the transposed embedding table.
        query_pre_attn_scalar: attention scale ``query_pre_attn_scalar ** -0.5`` (Gemma 3);
            ``None``: ``head_dim ** -0.5``.
        attn_softcap: tanh soft-cap of attention scores (``None``: off).
        final_softcap: tanh soft-cap of the final logits (``None``: off).
        rope_theta: RoPE base of full-attention layers (and of every layer without
            ``rope_local_theta``).
        rope_type: one of :data:`ROPE_TYPES` for those layers.
        rope_factor: ``linear``/``llama3`` scaling factor.
        rope_low_freq_factor: ``llama3`` low-frequency factor.
        rope_high_freq_factor: ``llama3`` high-frequency factor.
        rope_original_max_len: ``llama3`` pre-training context length.
        rope_local_theta: RoPE base of sliding-window layers, default scheme (Gemma 3
            ``rope_local_base_freq``); ``None``: they share the full layers' RoPE.
        sliding_window: window of the sliding layers (``None``: none).
        layer_types: per-layer :data:`LAYER_TYPES`; ``None``: every layer sliding when
            ``sliding_window`` is set (Mistral), else every layer full.
    """

    vocab_size: int
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    n_kv_heads: int | None = None
    head_dim: int | None = None
    d_ff: int = 256
    max_len: int = 128
    head: str = "lm"
    hf_family: str = "llama"
    dtype: str = "float32"
    norm_eps: float = 1e-6
    norm_offset: bool = False
    sandwich_norm: bool = False
    qk_norm: bool = False
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    act: str = "silu"
    embed_scale: bool = False
    tie_embeddings: bool = False
    query_pre_attn_scalar: float | None = None
    attn_softcap: float | None = None
    final_softcap: float | None = None
    rope_theta: float = 10000.0
    rope_type: str = "default"
    rope_factor: float = 1.0
    rope_low_freq_factor: float = 1.0
    rope_high_freq_factor: float = 4.0
    rope_original_max_len: int = 8192
    rope_local_theta: float | None = None
    sliding_window: int | None = None
    layer_types: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        fix = functools.partial(object.__setattr__, self)
        if self.n_kv_heads is None:
            fix("n_kv_heads", self.n_heads)
        if self.head_dim is None:
            fix("head_dim", self.d_model // self.n_heads)
        if self.layer_types is None:
            kind = LAYER_TYPES[1] if self.sliding_window is not None else LAYER_TYPES[0]
            fix("layer_types", (kind,) * self.n_layers)
        fix("layer_types", tuple(self.layer_types))  # JSON gives lists: keep it hashable
        self._validate()

    def _validate(self) -> None:
        for f in ("vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "head_dim",
                  "d_ff", "max_len"):
            if getattr(self, f) < 1:
                raise ValueError(f"{f} must be positive, got {getattr(self, f)}")
        choices = {"head": HEADS, "hf_family": HF_FAMILIES, "dtype": tuple(_DTYPES),
                   "act": ACTIVATIONS, "rope_type": ROPE_TYPES}
        for f, allowed in choices.items():
            if getattr(self, f) not in allowed:
                raise ValueError(f"{f} must be one of {allowed}, got {getattr(self, f)!r}")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads={self.n_heads} not divisible by "
                             f"n_kv_heads={self.n_kv_heads}")
        if self.head_dim % 2:
            raise ValueError(f"head_dim must be even for RoPE, got {self.head_dim}")
        if len(self.layer_types) != self.n_layers or set(self.layer_types) - set(LAYER_TYPES):
            raise ValueError(f"layer_types must be {self.n_layers} of {LAYER_TYPES}, got "
                             f"{self.layer_types}")
        if LAYER_TYPES[1] in self.layer_types and not (self.sliding_window or 0) >= 1:
            raise ValueError(f"sliding layers need a positive sliding_window, got "
                             f"{self.sliding_window}")

    @property
    def family(self) -> str:
        """The HF family (``hf_family``)."""
        return self.hf_family

    @property
    def windows(self) -> tuple[int | None, ...]:
        """Per layer: its sliding window, or ``None`` for full attention."""
        return tuple(self.sliding_window if t == LAYER_TYPES[1] else None
                     for t in self.layer_types)

    @property
    def groups(self) -> int:
        """Query heads per key/value head (``G``)."""
        return self.n_heads // self.n_kv_heads

    @property
    def d_attn(self) -> int:
        """Attention width of the FLOP ledger: ``n_heads * head_dim``."""
        return self.n_heads * self.head_dim

    @property
    def out_dim(self) -> int:
        return {"lm": self.vocab_size, "scalar": 1, "lm_value": self.vocab_size + 1}[self.head]

    @property
    def attn_scale(self) -> float:
        """Multiplier of the query-key products."""
        return (self.query_pre_attn_scalar or self.head_dim) ** -0.5

    @property
    def jnp_dtype(self):
        return _DTYPES[self.dtype]

    @property
    def matmul_params(self) -> int:
        """q, k, v, o projections and the 3 MLP matrices of every layer, plus the output head
        (counted even when tied); biases, norms and embedding lookups excluded."""
        d, a, kv = self.d_model, self.d_attn, self.n_kv_heads * self.head_dim
        per_layer = 2 * d * a + 2 * d * kv + 3 * d * self.d_ff
        return self.n_layers * per_layer + d * self.out_dim

    @property
    def n_params(self) -> int:
        """All parameters (a tied LM head counted once, with the embedding)."""
        d, a, kv = self.d_model, self.d_attn, self.n_kv_heads * self.head_dim
        per_layer = (2 * d * a + 2 * d * kv + 3 * d * self.d_ff
                     + (self.qkv_bias and a + 2 * kv) + (self.o_bias and d)
                     + (self.mlp_bias and 2 * self.d_ff + d)
                     + (4 if self.sandwich_norm else 2) * d + (self.qk_norm and 2 * self.head_dim))
        lm = 0 if self.tie_embeddings else d * self.vocab_size
        head = {"lm": lm, "scalar": d + 1, "lm_value": lm + d + 1 + N_FEATURES}[self.head]
        return self.vocab_size * d + self.n_layers * per_layer + d + head

    def flops_per_token(self, context: int | float) -> float:
        """Forward FLOPs of one token attending to ``context`` positions:
        ``2 * matmul_params + 4 * d_attn * sum_l min(context, window_l)`` (the ledger formula of
        :mod:`ttc.models.interface` when no window is shorter than ``context``)."""
        return ledger_flops_per_token(self.matmul_params, self.n_layers, self.d_attn, context,
                                      self.windows)

    def init_cache(self, batch: int, length: int, dtype=None) -> Cache:
        """A zero cache of ``length`` slots for ``batch`` rows: per layer ``(k, v)`` of
        ``[B, n_kv_heads, T, head_dim]`` in ``dtype`` (default: the config's)."""
        shape = (batch, self.n_kv_heads, length, self.head_dim)
        dt = self.jnp_dtype if dtype is None else dtype
        return tuple((jnp.zeros(shape, dt), jnp.zeros(shape, dt)) for _ in range(self.n_layers))


@functools.lru_cache(maxsize=64)
def rope_inv_freq(cfg: LlamaConfig, local: bool = False) -> np.ndarray:
    """The ``[head_dim / 2]`` float32 RoPE inverse frequencies of a layer, as HF computes them.

    ``theta ** (-2i / head_dim)`` (Su et al. 2021); ``linear`` divides all by ``rope_factor``;
    ``llama3`` divides wavelengths above ``rope_original_max_len / rope_low_freq_factor`` by
    ``rope_factor``, keeps those below ``rope_original_max_len / rope_high_freq_factor`` and
    interpolates smoothly between. ``local`` layers with ``rope_local_theta`` use the default
    scheme with that base.

    Args:
        cfg: the config.
        local: whether the layer is a sliding-window layer.
    """
    d = cfg.head_dim
    if local and cfg.rope_local_theta is not None:
        base, kind = cfg.rope_local_theta, "default"
    else:
        base, kind = cfg.rope_theta, cfg.rope_type
    inv = (1.0 / (np.float32(base) ** (np.arange(0, d, 2, dtype=np.float32) / np.float32(d))))
    inv = inv.astype(np.float32)
    if kind == "linear":
        inv = inv / np.float32(cfg.rope_factor)
    elif kind == "llama3":
        inv = _llama3_scale(inv, cfg)
    return inv.astype(np.float32)


def _llama3_scale(inv: np.ndarray, cfg: LlamaConfig) -> np.ndarray:
    """Llama 3.1 frequency scaling (HF ``_compute_llama3_parameters``), in float32."""
    f, lo, hi = (np.float32(x) for x in (cfg.rope_factor, cfg.rope_low_freq_factor,
                                         cfg.rope_high_freq_factor))
    old = np.float32(cfg.rope_original_max_len)
    wavelen = np.float32(2 * math.pi) / inv
    scaled = np.where(wavelen > old / lo, inv / f, inv)
    smooth = (old / wavelen - lo) / (hi - lo)
    smoothed = (1 - smooth) * scaled / f + smooth * scaled
    medium = ~(wavelen < old / hi) & ~(wavelen > old / lo)
    return np.where(medium, smoothed, scaled).astype(np.float32)


def rope_angles(positions: Int[Array, "B S"], inv_freq: np.ndarray
                ) -> tuple[Float[Array, "B 1 S D2"], Float[Array, "B 1 S D2"]]:
    """``cos`` and ``sin`` of ``positions * inv_freq``, broadcastable over heads (float32)."""
    ang = positions.astype(jnp.float32)[:, None, :, None] * jnp.asarray(inv_freq)
    return jnp.cos(ang), jnp.sin(ang)


def apply_rope(x: Float[Array, "B H S D"], cos: Float[Array, "B 1 S D2"],
               sin: Float[Array, "B 1 S D2"]) -> Float[Array, "B H S D"]:
    """Rotates the halves ``x1, x2`` of each head to ``(x1 cos - x2 sin, x2 cos + x1 sin)``:
    HF's ``x * cos + rotate_half(x) * sin`` with a ``[D / 2]`` table (in float32)."""
    x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return out.astype(x.dtype)


def _softcap(x: Array, cap: float | None) -> Array:
    return x if cap is None else cap * jnp.tanh(x / cap)


class RMSNorm(nnx.Module):
    """RMSNorm over the last axis, in float32: ``w * x / rms(x)`` (HF Llama: normalised ``x``
    cast back to its dtype, then scaled) or ``(1 + w) * x / rms(x)`` (Gemma: scaled in float32,
    then cast)."""

    def __init__(self, dim: int, cfg: LlamaConfig):
        self.eps, self.offset = cfg.norm_eps, cfg.norm_offset
        init = jnp.zeros if cfg.norm_offset else jnp.ones
        self.weight = nnx.Param(init((dim,), cfg.jnp_dtype))

    def __call__(self, x: Float[Array, "... D"]) -> Float[Array, "... D"]:
        x32 = x.astype(jnp.float32)
        y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        w = self.weight[...]
        if self.offset:
            return (y * (1.0 + w.astype(jnp.float32))).astype(x.dtype)
        return w * y.astype(x.dtype)


def _linear(n_in: int, n_out: int, bias: bool, cfg: LlamaConfig, rngs: nnx.Rngs,
            std: float = 0.02) -> nnx.Linear:
    return nnx.Linear(n_in, n_out, use_bias=bias, dtype=cfg.jnp_dtype, param_dtype=cfg.jnp_dtype,
                      kernel_init=nnx.initializers.normal(std), rngs=rngs)


class Block(nnx.Module):
    """One decoder layer: grouped-query attention with RoPE, then the gated MLP."""

    def __init__(self, cfg: LlamaConfig, layer: int, *, rngs: nnx.Rngs):
        d, a, kv = cfg.d_model, cfg.d_attn, cfg.n_kv_heads * cfg.head_dim
        out_std = 0.02 / math.sqrt(2 * cfg.n_layers)
        self.cfg, self.window = cfg, cfg.windows[layer]
        self.attn_norm = RMSNorm(d, cfg)
        self.q = _linear(d, a, cfg.qkv_bias, cfg, rngs)
        self.k = _linear(d, kv, cfg.qkv_bias, cfg, rngs)
        self.v = _linear(d, kv, cfg.qkv_bias, cfg, rngs)
        self.o = _linear(a, d, cfg.o_bias, cfg, rngs, out_std)
        if cfg.qk_norm:
            self.q_norm, self.k_norm = RMSNorm(cfg.head_dim, cfg), RMSNorm(cfg.head_dim, cfg)
        self.mlp_norm = RMSNorm(d, cfg)
        self.gate = _linear(d, cfg.d_ff, cfg.mlp_bias, cfg, rngs)
        self.up = _linear(d, cfg.d_ff, cfg.mlp_bias, cfg, rngs)
        self.down = _linear(cfg.d_ff, d, cfg.mlp_bias, cfg, rngs, out_std)
        if cfg.sandwich_norm:
            self.post_attn_norm, self.post_mlp_norm = RMSNorm(d, cfg), RMSNorm(d, cfg)

    def _qkv(self, h: Float[Array, "B S D"], positions: Int[Array, "B S"]):
        """Heads-major ``q [B, H, S, Dh]`` and ``k, v [B, H_kv, S, Dh]``, q/k normed and rotated."""
        cfg = self.cfg
        b, s, _ = h.shape
        q = self.q(h).reshape(b, s, cfg.n_heads, cfg.head_dim)
        k = self.k(h).reshape(b, s, cfg.n_kv_heads, cfg.head_dim)
        v = self.v(h).reshape(b, s, cfg.n_kv_heads, cfg.head_dim)
        if cfg.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k, v = (x.transpose(0, 2, 1, 3) for x in (q, k, v))
        cos, sin = rope_angles(positions, rope_inv_freq(cfg, local=self.window is not None))
        return apply_rope(q, cos, sin), apply_rope(k, cos, sin), v

    def _attend(self, q: Float[Array, "B H S Dh"], keys: Float[Array, "B K T Dh"],
                values: Float[Array, "B K T Dh"], positions: Int[Array, "B S"],
                key_pos: Int[Array, "B T"]) -> Float[Array, "B S A"]:
        """Grouped-query attention of ``q`` over ``keys``/``values`` (causal, windowed).

        The ``G * S`` queries of each key/value head (query head ``j * G + g`` at position
        ``s`` as column ``g * S + s``) meet the keys with the *keys* as the left operand, so the
        scores are ``[B, K, T, G * S]``, slots major, and the softmax runs over axis 2. On
        XLA:CPU this layout is several times faster than ``[B, K, G * S, T]`` when a decode
        step has a handful of queries per head against a long cache (``3x64 @ 64xT`` per
        head, run as a batch of tiny matrix products)."""
        cfg = self.cfg
        b, h, s, dh = q.shape
        kv, gs = cfg.n_kv_heads, cfg.groups * s
        qg = q.reshape(b, kv, gs, dh)
        scores = jax.lax.dot_general(keys, qg, (((3,), (3,)), ((0, 1), (0, 1))),
                                     preferred_element_type=jnp.float32) * cfg.attn_scale
        scores = _softcap(scores, cfg.attn_softcap)
        kp = key_pos[:, None, :, None]
        qp = jnp.tile(positions, (1, cfg.groups))[:, None, None, :]
        mask = kp <= qp
        if self.window is not None:
            mask &= kp > qp - self.window
        scores = jnp.where(mask, scores, jnp.finfo(jnp.float32).min)
        probs = jax.nn.softmax(scores, axis=2).astype(values.dtype)
        out = jax.lax.dot_general(probs, values, (((2,), (2,)), ((0, 1), (0, 1))))
        return out.reshape(b, kv, cfg.groups, s, dh).transpose(0, 3, 1, 2, 4).reshape(
            b, s, h * dh)

    def __call__(
        self,
        x: Float[Array, "B S D"],
        positions: Int[Array, "B S"],
        cache: LayerCache | None,
        write_pos: Int[Array, " B"] | None,
    ) -> tuple[Float[Array, "B S D"], LayerCache | None]:
        q, k, v = self._qkv(self.attn_norm(x), positions)
        if cache is None:
            keys, values, key_pos, new_cache = k, v, positions, None
        else:
            ck, cv = cache
            upd = jax.vmap(lambda c, u, i: jax.lax.dynamic_update_slice(c, u, (0, i, 0)))
            keys, values = upd(ck, k.astype(ck.dtype), write_pos), upd(cv, v.astype(cv.dtype),
                                                                        write_pos)
            new_cache = (keys, values)
            t = ck.shape[2]
            key_pos = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32)[None, :], (x.shape[0], t))
        att = self.o(self._attend(q, keys.astype(q.dtype), values.astype(q.dtype), positions,
                                  key_pos))
        x = x + (self.post_attn_norm(att) if self.cfg.sandwich_norm else att)
        m = self.mlp_norm(x)
        mlp = self.down(self._act(self.gate(m)) * self.up(m))
        return x + (self.post_mlp_norm(mlp) if self.cfg.sandwich_norm else mlp), new_cache

    def _act(self, x: Array) -> Array:
        if self.cfg.act == "silu":
            return jax.nn.silu(x)
        return jax.nn.gelu(x, approximate=self.cfg.act == "gelu_tanh")


class Llama(nnx.Module):
    """Llama-family decoder (a :class:`ttc.models.interface.Policy`).

    Parameters: ``embed`` (``[V, D]``), ``blocks[i]`` (:class:`Block`: ``attn_norm``, ``q``,
    ``k``, ``v``, ``o``, optional ``q_norm``/``k_norm``, ``mlp_norm``, ``gate``, ``up``,
    ``down``, optional ``post_attn_norm``/``post_mlp_norm``), ``final_norm``, and the output
    head: ``head`` (``[D, V]`` Linear; absent for a tied ``'lm'`` head, which reads ``embed``;
    ``[D, 1]`` with bias for ``'scalar'``), plus ``value`` and ``feat_w`` for ``'lm_value'``.
    """

    @staticmethod
    def partition_rules(cfg: LlamaConfig, model: int) -> tuple[tuple[str, tuple], ...]:
        """How the parameters split over a ``model`` mesh axis of size ``model``
        (:func:`ttc.parallel.place`): Megatron-style (Shoeybi et al. 2019), q/k/v and gate/up
        by output columns (whole heads, whole hidden units on each device), o and down by input
        rows, so each layer needs one all-reduce after attention and one after the MLP.
        Key/value projections (and so the KV cache) split only where ``model`` divides
        ``n_kv_heads``, and are replicated otherwise; embeddings, norms and the output head
        are replicated."""
        cols = "q|k|v|gate|up" if cfg.n_kv_heads % model == 0 else "q|gate|up"
        return ((rf"^blocks/\d+/({cols})/kernel$", (None, "model")),
                (rf"^blocks/\d+/({cols})/bias$", ("model",)),
                (r"^blocks/\d+/(o|down)/kernel$", ("model", None)))

    def __init__(self, cfg: LlamaConfig, *, rngs: nnx.Rngs):
        dt = cfg.jnp_dtype
        self.cfg = cfg
        self.embed = nnx.Embed(cfg.vocab_size, cfg.d_model, dtype=dt, param_dtype=dt,
                               embedding_init=nnx.initializers.normal(0.02), rngs=rngs)
        self.blocks = nnx.List([Block(cfg, i, rngs=rngs) for i in range(cfg.n_layers)])
        self.final_norm = RMSNorm(cfg.d_model, cfg)
        if cfg.head == "scalar":
            self.head = _linear(cfg.d_model, 1, True, cfg, rngs)
        elif not cfg.tie_embeddings:
            self.head = _linear(cfg.d_model, cfg.vocab_size, False, cfg, rngs)
        if cfg.head == "lm_value":
            self.value = _linear(cfg.d_model, 1, True, cfg, rngs)
            self.feat_w = nnx.Param(jnp.ones((N_FEATURES,), jnp.float32))

    def __call__(
        self,
        tokens: Int[Array, "B S"],
        *,
        positions: Int[Array, "B S"] | None = None,
        cache: Cache | None = None,
        write_pos: Int[Array, " B"] | None = None,
    ) -> tuple[Float[Array, "B S O"], Cache | None]:
        """Runs ``tokens`` at ``positions`` (conventions of :mod:`ttc.models.interface`).

        Args:
            tokens: ``[B, S]`` token ids.
            positions: ``[B, S]`` absolute positions; defaults to ``write_pos + arange(S)``
                (or ``arange(S)`` without a cache).
            cache: per-layer ``(k, v)`` of ``[B, n_kv_heads, T, head_dim]``, or ``None`` for a
                plain causal forward over ``tokens`` alone.
            write_pos: ``[B]`` slot where each row's first new token is written (with a cache;
                default 0).

        Returns:
            ``[B, S, out_dim]`` float32 outputs and the updated cache (``None`` without one).
        """
        h, new_cache = self.hidden(tokens, positions=positions, cache=cache, write_pos=write_pos)
        return self._head(h), new_cache

    def hidden(
        self,
        tokens: Int[Array, "B S"],
        *,
        positions: Int[Array, "B S"] | None = None,
        cache: Cache | None = None,
        write_pos: Int[Array, " B"] | None = None,
    ) -> tuple[Float[Array, "B S D"], Cache | None]:
        """The final-normed hidden states ``[B, S, d_model]`` (in ``dtype``) that the output
        head reads, and the updated cache; arguments as in :meth:`__call__`. Reward heads that
        are not part of this module (:mod:`ttc.hub.reward`) read these."""
        positions, write_pos = default_positions(tokens, positions, cache, write_pos)
        x = self.embed(tokens)
        if self.cfg.embed_scale:
            x = x * jnp.asarray(self.cfg.d_model ** 0.5, jnp.float32).astype(x.dtype)
        new_cache = []
        for i, blk in enumerate(self.blocks):
            x, c = blk(x, positions, None if cache is None else cache[i], write_pos)
            new_cache.append(c)
        return self.final_norm(x), (None if cache is None else tuple(new_cache))

    def _logits(self, h: Float[Array, "B S D"]) -> Float[Array, "B S V"]:
        out = self.embed.attend(h) if self.cfg.tie_embeddings else self.head(h)
        return _softcap(out.astype(jnp.float32), self.cfg.final_softcap)

    def _head(self, h: Float[Array, "B S D"]) -> Float[Array, "B S O"]:
        if self.cfg.head == "scalar":
            return self.head(h).astype(jnp.float32)
        out = self._logits(h)
        if self.cfg.head == "lm_value":
            out = jnp.concatenate([out, self.value(h).astype(jnp.float32)], axis=-1)
        return out
