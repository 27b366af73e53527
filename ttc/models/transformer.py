"""A small pre-LayerNorm decoder-only transformer in Flax NNX with an explicit KV cache.

The ``transformer`` family of the policy interface: :class:`TransformerConfig` is a
:class:`ttc.models.interface.PolicyConfig` and :class:`Transformer` a
:class:`ttc.models.interface.Policy`, with the cache, position and ``write_pos`` conventions
stated there. Its cache holds ``n_heads`` key/value heads, each ``[B, n_heads, T, head_dim]``
(heads-major, so attention is a batched matvec); positions come from a learned table of
``max_len`` entries.

The same module serves as the policy (``head='lm'``: logits over the vocabulary) and as a reward
model: ``head='scalar'`` gives one value per position; ``head='lm_value'`` keeps the LM logits and
appends a value channel, for the log-probability verifier of :mod:`ttc.models.reward`.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
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

__all__ = ["HEADS", "Cache", "LayerCache", "Transformer", "TransformerConfig", "create",
           "init_cache"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class TransformerConfig:
    """Architecture of a decoder (hashable: usable as a static jit argument).

    Attributes:
        vocab_size: number of token ids.
        d_model: residual width (also the attention width ``d_attn``).
        n_layers: number of blocks.
        n_heads: attention heads; ``d_model`` must be divisible by it.
        d_ff: hidden width of the MLP.
        max_len: number of learned positions (prompt + solution).
        head: ``'lm'`` for next-token logits, ``'scalar'`` for a value per position,
            ``'lm_value'`` for both (``vocab_size + 1`` outputs, the value last).
    """

    vocab_size: int
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    d_ff: int = 256
    max_len: int = 128
    head: str = "lm"

    def __post_init__(self) -> None:
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} not divisible by n_heads={self.n_heads}")
        if self.head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {self.head!r}")
        for f in ("vocab_size", "d_model", "n_layers", "n_heads", "d_ff", "max_len"):
            if getattr(self, f) < 1:
                raise ValueError(f"{f} must be positive, got {getattr(self, f)}")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def d_attn(self) -> int:
        """Attention width of the FLOP ledger (``n_heads * head_dim = d_model``)."""
        return self.d_model

    @property
    def out_dim(self) -> int:
        return {"lm": self.vocab_size, "scalar": 1, "lm_value": self.vocab_size + 1}[self.head]

    @property
    def matmul_params(self) -> int:
        """Parameters that take part in a matmul per token (embeddings are lookups)."""
        d = self.d_model
        per_layer = 4 * d * d + 2 * d * self.d_ff
        return self.n_layers * per_layer + d * self.out_dim

    @property
    def n_params(self) -> int:
        d = self.d_model
        norms = (2 * self.n_layers + 1) * 2 * d
        return self.matmul_params + self.vocab_size * d + self.max_len * d + norms

    def flops_per_token(self, context: int | float) -> float:
        """Forward FLOPs of one token attending to ``context`` positions (the ledger formula of
        :mod:`ttc.models.interface`)."""
        return ledger_flops_per_token(self.matmul_params, self.n_layers, self.d_attn, context)

    def init_cache(self, batch: int, length: int, dtype=jnp.float32) -> Cache:
        """A zero cache of ``length`` slots for ``batch`` rows (``[B, n_heads, T, head_dim]``)."""
        shape = (batch, self.n_heads, length, self.head_dim)
        return tuple((jnp.zeros(shape, dtype), jnp.zeros(shape, dtype))
                     for _ in range(self.n_layers))


class Block(nnx.Module):
    def __init__(self, cfg: TransformerConfig, *, rngs: nnx.Rngs):
        d = cfg.d_model
        init = nnx.initializers.normal(0.02)
        out_init = nnx.initializers.normal(0.02 / math.sqrt(2 * cfg.n_layers))
        self.cfg = cfg
        self.ln1 = nnx.LayerNorm(d, rngs=rngs)
        self.qkv = nnx.Linear(d, 3 * d, use_bias=False, kernel_init=init, rngs=rngs)
        self.proj = nnx.Linear(d, d, use_bias=False, kernel_init=out_init, rngs=rngs)
        self.ln2 = nnx.LayerNorm(d, rngs=rngs)
        self.fc = nnx.Linear(d, cfg.d_ff, kernel_init=init, rngs=rngs)
        self.out = nnx.Linear(cfg.d_ff, d, kernel_init=out_init, rngs=rngs)

    def __call__(
        self,
        x: Float[Array, "B S D"],
        positions: Int[Array, "B S"],
        cache: LayerCache | None,
        write_pos: Int[Array, " B"] | None,
    ) -> tuple[Float[Array, "B S D"], LayerCache | None]:
        cfg = self.cfg
        b, s, _ = x.shape
        h = self.ln1(x)
        q, k, v = jnp.split(self.qkv(h), 3, axis=-1)
        shape = (b, s, cfg.n_heads, cfg.head_dim)
        # heads-major [B, H, S, Dh]: attention is then a batched matvec, which XLA:CPU runs
        # ~3x faster than reductions over a [B, T, H, Dh] intermediate (scripts/bench_kernels.py)
        q, k, v = (a.reshape(shape).transpose(0, 2, 1, 3) for a in (q, k, v))
        if cache is None:
            keys, values, key_pos = k, v, positions
            new_cache = None
        else:
            ck, cv = cache
            upd = jax.vmap(lambda c, u, i: jax.lax.dynamic_update_slice(c, u, (0, i, 0)))
            keys, values = upd(ck, k, write_pos), upd(cv, v, write_pos)
            new_cache = (keys, values)
            key_pos = jnp.broadcast_to(jnp.arange(ck.shape[2])[None, :], (b, ck.shape[2]))
        scale = 1.0 / math.sqrt(cfg.head_dim)
        scores = jnp.einsum("bhsd,bhtd->bhst", q, keys) * scale
        mask = key_pos[:, None, None, :] <= positions[:, None, :, None]
        scores = jnp.where(mask, scores, jnp.finfo(scores.dtype).min)
        probs = jax.nn.softmax(scores, axis=-1)
        att = jnp.einsum("bhst,bhtd->bshd", probs, values).reshape(b, s, cfg.d_model)
        x = x + self.proj(att)
        x = x + self.out(jax.nn.gelu(self.fc(self.ln2(x))))
        return x, new_cache


class Transformer(nnx.Module):
    """Decoder-only transformer (a :class:`ttc.models.interface.Policy`)."""

    @staticmethod
    def partition_rules(cfg: TransformerConfig, model: int) -> tuple[tuple[str, tuple], ...]:
        """How the parameters split over a ``model`` mesh axis (:func:`ttc.parallel.place`):
        the MLP by hidden units (``fc`` by columns, ``out`` by rows; Shoeybi et al. 2019).
        Attention stays replicated: the fused ``qkv`` kernel's columns are ``q | k | v``, so
        an even column split would not cut it at head boundaries."""
        del cfg, model
        return ((r"^blocks/\d+/fc/kernel$", (None, "model")),
                (r"^blocks/\d+/fc/bias$", ("model",)),
                (r"^blocks/\d+/out/kernel$", ("model", None)))

    def __init__(self, cfg: TransformerConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        self.embed = nnx.Embed(cfg.vocab_size, cfg.d_model, rngs=rngs)
        pos_init = nnx.initializers.normal(0.02)
        self.pos = nnx.Param(pos_init(rngs.params(), (cfg.max_len, cfg.d_model)))
        self.blocks = nnx.List([Block(cfg, rngs=rngs) for _ in range(cfg.n_layers)])
        self.ln_f = nnx.LayerNorm(cfg.d_model, rngs=rngs)
        init = nnx.initializers.normal(0.02)
        if cfg.head == "scalar":
            self.head = nnx.Linear(cfg.d_model, 1, kernel_init=init, rngs=rngs)
        else:
            self.head = nnx.Linear(cfg.d_model, cfg.vocab_size, use_bias=False, kernel_init=init,
                                   rngs=rngs)
        if cfg.head == "lm_value":
            self.value = nnx.Linear(cfg.d_model, 1, kernel_init=init, rngs=rngs)
            self.feat_w = nnx.Param(jnp.ones((N_FEATURES,), jnp.float32))

    def __call__(
        self,
        tokens: Int[Array, "B S"],
        *,
        positions: Int[Array, "B S"] | None = None,
        cache: Cache | None = None,
        write_pos: Int[Array, " B"] | None = None,
    ) -> tuple[Float[Array, "B S O"], Cache | None]:
        """Runs ``tokens`` at ``positions``.

        Args:
            tokens: ``[B, S]`` token ids.
            positions: ``[B, S]`` absolute positions; defaults to ``write_pos + arange(S)``
                (or ``arange(S)`` without a cache).
            cache: per-layer ``(k, v)`` of ``[B, n_heads, T, head_dim]``, or ``None`` for a
                plain causal forward over ``tokens`` alone (training).
            write_pos: ``[B]`` slot where each row's first new token is written (with a cache).

        Returns:
            ``[B, S, out_dim]`` outputs and the updated cache (``None`` without one).
        """
        positions, write_pos = default_positions(tokens, positions, cache, write_pos)
        x = self.embed(tokens) + self.pos[...][jnp.clip(positions, 0, self.cfg.max_len - 1)]
        new_cache = []
        for i, blk in enumerate(self.blocks):
            x, c = blk(x, positions, None if cache is None else cache[i], write_pos)
            new_cache.append(c)
        h = self.ln_f(x)
        out = self.head(h)
        if self.cfg.head == "lm_value":
            out = jnp.concatenate([out, self.value(h)], axis=-1)
        return out, (None if cache is None else tuple(new_cache))


def init_cache(cfg: TransformerConfig, batch: int, length: int, dtype=jnp.float32) -> Cache:
    """``cfg.init_cache(batch, length, dtype)``."""
    return cfg.init_cache(batch, length, dtype)


def create(cfg: TransformerConfig, seed: int = 0) -> Transformer:
    """A freshly initialised :class:`Transformer` (what :func:`ttc.models.create` builds)."""
    return Transformer(cfg, rngs=nnx.Rngs(seed))
