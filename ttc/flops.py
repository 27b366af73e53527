"""Analytic FLOP ledger.

A forward pass of one token that attends to ``c`` positions costs
``2 * N_matmul + 4 * n_layers * d_attn * c`` FLOPs (Kaplan et al. 2020, Table 1; Snell et al.
2024 use the same 2N per inference token). In a model with sliding-window layers (Mistral,
Gemma 3's local layers) ``c`` is the layers' mean of ``min(c, window)``: what
:func:`context_sum` adds up. Every function takes a model config of the policy interface
(:class:`ttc.models.interface.PolicyConfig`) and reads only ``matmul_params``, ``n_layers``,
``d_attn``, ``windows`` (if the family has them) and ``flops_per_token`` (which equals the
formula). Costs are kept per component (policy prefill, policy decode, reward-model scoring,
lookahead rollouts) and in two totals:

* **useful**: tokens that belong to a sample, each at its own context length;
* **executed**: what the batched loop computed: every row (finished, empty or padding included)
  at every loop iteration, attending over the whole cache; a prefill run at a shorter static
  length (``ttc.decode.prefill_buckets``) is charged that length. Both totals use the family's
  ``flops_per_token``, which charges a sliding-window layer at most its window: what a
  windowed attention kernel runs. ttc's masked attention computes every slot, so for contexts
  beyond a window ``executed`` understates its attention work.

XLA's ``cost_analysis()`` counts a loop body once; tests use it only to cross-check one step.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from ttc.models.interface import PolicyConfig


def context_sum(cfg: PolicyConfig, start, n):
    """Positions attended by ``n`` consecutive tokens at positions ``start .. start + n - 1``
    (token ``p`` attends ``p + 1`` positions causally), summed over the tokens and averaged
    over the layers: what the ledger multiplies by ``4 * n_layers * d_attn``
    (:func:`forward_flops`).

    Without sliding windows this is ``(start + 1) * n + n * (n - 1) // 2``, computed in the
    integer type of ``start`` and ``n``. A layer with window ``w`` lets a token see at most
    ``w`` positions, so it contributes ``sum_c min(c, w)`` (in closed form); the mean over
    layers is then a float.

    Args:
        cfg: the model config (its ``windows``, per layer a window or ``None``, if the family
            has them).
        start: ``[...]`` int, position of each run's first token (NumPy, JAX, or a Python int).
        n: ``[...]`` int, tokens in each run (``0``: none, contributes 0).
    """
    full = (start + 1) * n + n * (n - 1) // 2
    windows = tuple(getattr(cfg, "windows", ()) or ())
    if all(w is None for w in windows):
        return full
    xp = jnp if isinstance(start, jax.Array) or isinstance(n, jax.Array) else np

    def upto(m, w):  # sum over c = 1 .. m of min(c, w)
        return xp.where(m <= w, m * (m + 1) // 2, w * (w + 1) // 2 + (m - w) * w)

    total = sum(full if w is None else upto(start + n, w) - upto(start, w) for w in windows)
    return total / len(windows)


def prefill_useful(cfg: PolicyConfig, prompt_len) -> np.ndarray:
    """Useful FLOPs of a causal prefill of ``prompt_len`` tokens (position p attends p+1)."""
    lp = np.asarray(prompt_len, np.float64)
    return (2.0 * cfg.matmul_params * lp
            + 4.0 * cfg.n_layers * cfg.d_attn * np.asarray(context_sum(cfg, 0, lp), np.float64))


def prefill_executed(cfg: PolicyConfig, padded_len: int, cache_len: int) -> float:
    """Executed FLOPs of prefilling one padded prompt row into a ``cache_len`` cache."""
    return float(padded_len * cfg.flops_per_token(cache_len))


def forward_flops(cfg: PolicyConfig, tokens, ctx_sum) -> np.ndarray:
    """FLOPs of ``tokens`` token-rows whose attention lengths sum to ``ctx_sum``."""
    return (2.0 * cfg.matmul_params * np.asarray(tokens, np.float64)
            + 4.0 * cfg.n_layers * cfg.d_attn * np.asarray(ctx_sum, np.float64))


def decode_useful(cfg: PolicyConfig, tokens, ctx_sum) -> np.ndarray:
    """Useful FLOPs of ``tokens`` generated tokens whose context lengths sum to ``ctx_sum``."""
    return forward_flops(cfg, tokens, ctx_sum)


def decode_executed(cfg: PolicyConfig, row_steps, cache_len: int) -> np.ndarray:
    """Executed FLOPs of ``row_steps`` row-iterations of a decode loop over a full cache."""
    return np.asarray(row_steps, np.float64) * cfg.flops_per_token(cache_len)


@dataclasses.dataclass
class Ledger:
    """FLOPs per problem by component, both totals (floats, summed over a method run)."""

    useful: dict[str, float] = dataclasses.field(default_factory=dict)
    executed: dict[str, float] = dataclasses.field(default_factory=dict)

    def add(self, component: str, useful: float, executed: float) -> None:
        self.useful[component] = self.useful.get(component, 0.0) + float(useful)
        self.executed[component] = self.executed.get(component, 0.0) + float(executed)

    @property
    def total_useful(self) -> float:
        return float(sum(self.useful.values()))

    @property
    def total_executed(self) -> float:
        return float(sum(self.executed.values()))

    def as_record(self) -> dict:
        return {
            "flops_useful": self.total_useful,
            "flops_executed": self.total_executed,
            "flops_components": {
                k: {"useful": self.useful[k], "executed": self.executed.get(k, 0.0)}
                for k in self.useful
            },
        }
