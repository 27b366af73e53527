"""Analytic FLOP ledger.

A forward pass of one token that attends to ``c`` positions costs
``2 * N_matmul + 4 * n_layers * d_attn * c`` FLOPs (Kaplan et al. 2020, Table 1; Snell et al.
2024 use the same 2N per inference token). Every function takes a model config of the policy
interface (:class:`ttc.models.interface.PolicyConfig`) and reads only ``matmul_params``,
``n_layers``, ``d_attn`` and ``flops_per_token`` (which equals the formula). Costs are kept per
component (policy prefill, policy decode, reward-model scoring, lookahead rollouts) and in two
totals:

* **useful**: tokens that belong to a sample, each at its own context length;
* **executed**: what the batched loop computed: every row (finished, empty or padding included)
  at every loop iteration, attending over the whole cache; a prefill run at a shorter static
  length (``ttc.decode.prefill_buckets``) is charged that length.

XLA's ``cost_analysis()`` counts a loop body once; tests use it only to cross-check one step.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ttc.models.interface import PolicyConfig


def prefill_useful(cfg: PolicyConfig, prompt_len) -> np.ndarray:
    """Useful FLOPs of a causal prefill of ``prompt_len`` tokens (position p attends p+1)."""
    lp = np.asarray(prompt_len, np.float64)
    return 2.0 * cfg.matmul_params * lp + 4.0 * cfg.n_layers * cfg.d_attn * lp * (lp + 1) / 2


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
