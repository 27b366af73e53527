"""The policy interface: what samplers, search, reward scoring, training and the FLOP ledger
may assume about a model family.

A family is a frozen, hashable config class (:class:`PolicyConfig`) and a Flax NNX module class
(:class:`Policy`) built as ``Module(cfg, *, rngs=nnx.Rngs(seed))``, registered with
:func:`ttc.models.register`. Code outside :mod:`ttc.models` builds models with
:func:`ttc.models.create` and reads only the members below.

Cache (the KV cache, :data:`Cache`):

* A plain pytree: a tuple with one ``(k, v)`` pair per layer (not one stacked array).
* Each array is ``[B, H_kv, T, D_h]``: batch on axis 0, cache slots on axis 2. ``H_kv`` and
  ``D_h`` are the family's own (e.g. fewer key/value heads than query heads); samplers pad,
  slice and gather caches on axes 0 and 2 only (:mod:`ttc.decode`, :mod:`ttc.search.loop`).
* ``T`` is the cache length, chosen by the caller (prompt + maximum new tokens);
  :meth:`PolicyConfig.init_cache` returns zeros.

Positions and writes:

* Slot ``t`` of a row holds the token at position ``t``: rows never have holes, so positions are
  slot indices and attention is causal over slots (a query at position ``p`` sees slots
  ``<= p``; slots past a row's length are never read before they are written).
* Rows advance independently: a call with a cache writes its ``S`` new tokens to slots
  ``write_pos[b] .. write_pos[b] + S - 1`` of row ``b`` and returns the updated cache.
* ``positions`` defaults to ``write_pos[:, None] + arange(S)`` (``write_pos`` defaults to 0),
  or ``arange(S)`` without a cache, where the call is a plain causal forward over ``tokens``
  alone (training, whole-solution scoring) and returns ``None`` for the cache.

Outputs: ``[B, S, O]`` per position. A policy (``head='lm'``) gives next-token logits
(``O = vocab_size``); reward models use the same interface with another head (``'scalar'``:
``O = 1``; ``'lm_value'``: the logits and a value channel, ``O = vocab_size + 1``), turned into
scores by :func:`ttc.models.reward.score_logits`.

FLOP ledger (:mod:`ttc.flops`): the forward pass of one token attending to ``c`` positions costs

    flops_per_token(c) = 2 * matmul_params + 4 * n_layers * d_attn * c

where ``d_attn`` is the width of the attention's query-key and attention-value products per
layer (query heads times head dimension). The ledger reads ``matmul_params``, ``n_layers`` and
``d_attn`` for sums over many tokens, so ``flops_per_token`` must equal this formula.

Stop tokens are not part of the model config: the samplers take the step delimiter and ``EOS``
from the task's tokenizer (``task.tokenizer.step_id`` / ``.EOS``); a family loaded from a
pretrained checkpoint supplies its ids through the task's tokenizer.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import jax.numpy as jnp
from jaxtyping import Array, Float, Int

LayerCache = tuple[Float[Array, "B H T Dh"], Float[Array, "B H T Dh"]]
"""One layer's ``(k, v)``, each ``[B, H_kv, T, D_h]`` (slots on axis 2)."""

Cache = tuple[LayerCache, ...]
"""The KV cache: one :data:`LayerCache` per layer."""

HEADS = ("lm", "scalar", "lm_value")
"""Output heads: next-token logits, a value per position, or both (value last)."""


def ledger_flops_per_token(
    matmul_params: int, n_layers: int, d_attn: int, context: int | float,
    windows: tuple[int | None, ...] = (),
) -> float:
    """``2 * matmul_params + 4 * n_layers * d_attn * context``: forward FLOPs of one token.

    With ``windows`` (per layer a sliding window or ``None``), a layer attends at most its
    window: ``2 * matmul_params + 4 * d_attn * sum_l min(context, window_l)``."""
    if not windows:
        return 2.0 * matmul_params + 4.0 * n_layers * d_attn * context
    seen = sum(context if w is None else min(context, w) for w in windows)
    return 2.0 * matmul_params + 4.0 * d_attn * seen


def default_positions(
    tokens: Int[Array, "B S"],
    positions: Int[Array, "B S"] | None,
    cache: Cache | None,
    write_pos: Int[Array, " B"] | None,
) -> tuple[Int[Array, "B S"], Int[Array, " B"] | None]:
    """The defaults of a :class:`Policy` call: ``write_pos`` 0 with a cache, ``positions``
    ``write_pos + arange(S)`` (``arange(S)`` without a cache). Returns both."""
    b, s = tokens.shape
    if cache is not None and write_pos is None:
        write_pos = jnp.zeros((b,), jnp.int32)
    if positions is None:
        base = write_pos[:, None] if write_pos is not None else 0
        positions = jnp.broadcast_to(base + jnp.arange(s, dtype=jnp.int32)[None, :], (b, s))
    return positions, write_pos


@runtime_checkable
class PolicyConfig(Protocol):
    """A model family's config: frozen and hashable (a static jit argument; its
    ``dataclasses.asdict`` names cached checkpoints).

    Attributes:
        vocab_size: number of token ids.
        n_layers: number of attention layers (the cache has one entry per layer).
        max_len: most positions the model handles (prompt + solution must fit).
        head: ``'lm'`` | ``'scalar'`` | ``'lm_value'`` (see :data:`HEADS`).
        d_attn: query heads times head dimension (the FLOP ledger's attention width).
        matmul_params: parameters that take part in a matmul per token (embedding lookups
            excluded).
        n_params: all parameters.
    """

    vocab_size: int
    n_layers: int
    max_len: int
    head: str

    @property
    def d_attn(self) -> int: ...

    @property
    def matmul_params(self) -> int: ...

    @property
    def n_params(self) -> int: ...

    def flops_per_token(self, context: int | float) -> float:
        """Forward FLOPs of one token attending to ``context`` positions (the ledger formula)."""
        ...

    def init_cache(self, batch: int, length: int, dtype=jnp.float32) -> Cache:
        """A zero cache of ``length`` slots for ``batch`` rows."""
        ...


@runtime_checkable
class Policy(Protocol):
    """A model family's NNX module (a policy or, with another head, a reward model).

    Attributes:
        cfg: its :class:`PolicyConfig`.
    """

    cfg: PolicyConfig

    def __call__(
        self,
        tokens: Int[Array, "B S"],
        *,
        positions: Int[Array, "B S"] | None = None,
        cache: Cache | None = None,
        write_pos: Int[Array, " B"] | None = None,
    ) -> tuple[Float[Array, "B S O"], Cache | None]:
        """Runs ``tokens`` at ``positions`` (conventions in the module docstring).

        Args:
            tokens: ``[B, S]`` token ids.
            positions: ``[B, S]`` absolute positions (default: ``write_pos + arange(S)``, or
                ``arange(S)`` without a cache).
            cache: the KV cache, or ``None`` for a plain causal forward over ``tokens``.
            write_pos: ``[B]`` slot of each row's first new token (with a cache; default 0).

        Returns:
            ``[B, S, O]`` outputs and the updated cache (``None`` without one).
        """
        ...
