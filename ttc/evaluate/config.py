"""What an evaluation runs on (:class:`EvalConfig`) and the config hash of its records."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from ttc.checkpoint import LoadedModel
from ttc.errors import ConfigError
from ttc.tasks.base import Task, describe_task
from ttc.train import cache_key

if TYPE_CHECKING:
    from ttc.evaluate.sources import RewardSource


@dataclasses.dataclass(frozen=True, kw_only=True)
class EvalConfig:
    """What to evaluate on.

    Attributes:
        budgets: samples (generations) per problem of the pool methods, e.g. ``(1, 2, ..., 64)``
            (cheap: every budget comes from one pool).
        search_budgets: rows per problem of the step-level search methods (one run and one
            compilation per budget).
        seeds: sampling seeds; one record per seed.
        n_problems: test problems.
        problem_seed: seed of the test problems.
        temperature, top_k, top_p: token selection.
        max_rows: rows per jit call (memory bound).
        majority_subsets: Monte-Carlo subsets per problem for majority vote at ``k < n``.
    """

    budgets: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)
    search_budgets: tuple[int, ...] = (2, 8, 32)
    seeds: tuple[int, ...] = (0,)
    n_problems: int = 256
    problem_seed: int = 1234
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    max_rows: int = 4096
    majority_subsets: int = 256

    def __post_init__(self) -> None:
        for name in ("budgets", "search_budgets"):
            v = getattr(self, name)
            if not v or any(int(b) < 1 for b in v):
                raise ConfigError(f"{name} must be positive integers, got {list(v)}")
        if self.n_problems < 1:
            raise ConfigError(f"eval.n_problems must be >= 1, got {self.n_problems}")
        if self.max_rows < 1:
            raise ConfigError(f"eval.max_rows must be >= 1, got {self.max_rows}")
        if not self.seeds:
            raise ConfigError("seeds must list at least one seed")

    @property
    def pool_size(self) -> int:
        """Samples per problem of the pool every pool budget is estimated from."""
        return max(self.budgets)


def config_tag(*parts) -> str:
    """The short config hash in results-store keys (same hash as checkpoint names)."""
    return cache_key(*parts)[:8]


def run_tag(policy: LoadedModel, task: Task, cfg: EvalConfig,
            rewards: dict[str, RewardSource] | None = None) -> str:
    """The config hash ending every record key of an evaluation (policy, task, test problems,
    sampling, reward models): records of one configuration are those whose key ends with it."""
    return config_tag(policy.meta.get("id", ""), describe_task(task)
                      if dataclasses.is_dataclass(task) else task.name,
                      cfg.n_problems, cfg.problem_seed, cfg.temperature, cfg.top_k, cfg.top_p,
                      {k: v.meta.get("id") for k, v in (rewards or {}).items()})
