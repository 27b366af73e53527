"""Result records of evaluated cells: what a cell measured (:class:`Outcome`), the record
written for it, wall-time apportioning and the printed table."""

from __future__ import annotations

import dataclasses

import numpy as np

from ttc.evaluate.cells import Cell
from ttc.evaluate.config import EvalConfig
from ttc.flops import Ledger
from ttc.metrics import bootstrap_ci
from ttc.tasks.base import ProblemSet


@dataclasses.dataclass(frozen=True, kw_only=True)
class Outcome:
    """What evaluating one cell measured.

    Attributes:
        per_problem: ``[P]`` (expected) correctness of every problem, in problem order.
        ledger: FLOPs per problem (:mod:`ttc.ledger`).
        tokens: policy tokens generated per problem.
        wall_time_s: the cell's wall time, including its share of work shared between cells
            (:func:`apportion`).
        iterations: outer-loop iterations per problem (search methods only).
    """

    per_problem: np.ndarray
    ledger: Ledger
    tokens: float
    wall_time_s: float
    iterations: float | None = None


def apportion(shared_s: float, budget: int, pool_size: int) -> float:
    """A budget-``budget`` cell's share of ``shared_s`` seconds spent once on a whole pool of
    ``pool_size`` samples per problem (sampling it, scoring it): proportional to the budget."""
    return shared_s * budget / pool_size


def summary(per_problem: np.ndarray, problems: ProblemSet, seed: int) -> dict:
    """Accuracy, its bootstrap 95% CI and the accuracy per difficulty level."""
    lo, hi = bootstrap_ci(per_problem, seed=seed)
    by_diff = {
        str(int(d)): float(per_problem[problems.difficulty == d].mean())
        for d in np.unique(problems.difficulty)
    }
    return {"accuracy": float(per_problem.mean()), "ci_low": lo, "ci_high": hi,
            "by_difficulty": by_diff}


def build_record(cell: Cell, out: Outcome, *, problems: ProblemSet, cfg: EvalConfig,
                 reward_meta: dict, run_config: dict | None) -> dict:
    """The results-store record of ``cell``: identity, accuracy, FLOPs, tokens, wall time,
    per-problem correctness and the configuration (``reward_meta``: the metadata of the cell's
    learned reward model, empty if none)."""
    m = cell.method
    extra = {} if out.iterations is None else {"iterations": out.iterations}
    return {
        "key": cell.key, "method": m.label, "name": m.name, "budget": cell.budget,
        "seed": int(cell.seed), "oracle": m.oracle, "n_problems": len(problems),
        "generations": cell.budget, "tokens": float(out.tokens),
        **summary(out.per_problem, problems, cell.seed), **out.ledger.as_record(),
        "wall_time_s": out.wall_time_s, **extra,
        # per-problem (expected) correctness, in problem order: difficulty-bin analyses
        "per_problem": [round(float(x), 4) for x in np.asarray(out.per_problem, np.float64)],
        "config": {"method": dict(m.params), "eval": dataclasses.asdict(cfg),
                   "reward_model": {"id": reward_meta.get("id"),
                                    "quality": reward_meta.get("quality")},
                   **(run_config or {})},
    }


def format_table(records: list[dict]) -> str:
    """A short text table: method, budget, accuracy [95% CI], useful GFLOPs per problem."""
    rows = sorted(records, key=lambda r: (r["method"], r["budget"], r["seed"]))
    head = f"{'method':<14}{'N':>5}{'seed':>5}  {'accuracy':>8}  {'95% CI':>15}  {'GFLOP/prob':>10}"
    lines = [head]
    for r in rows:
        lines.append(
            f"{r['method'] + ('*' if r.get('oracle') else ''):<14}{r['budget']:>5}{r['seed']:>5}  "
            f"{r['accuracy']:>8.3f}  [{r['ci_low']:.3f}, {r['ci_high']:.3f}]  "
            f"{r['flops_useful'] / 1e9:>10.4f}"
        )
    lines.append("(* oracle upper bound, excluded from the frontier)")
    return "\n".join(lines)
