"""Runs methods over a budget grid and writes one record per (method, budget, seed) cell.

Hydra-free: ``experiments/run.py`` builds the pieces from config and calls :func:`evaluate`.
Finished cells already in the store are skipped (resume); pools of samples are cached under the
run directory so an interrupted aggregation does not re-sample.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from pathlib import Path

import jax
import numpy as np

from ttc.checkpoint import LoadedModel
from ttc.decode import SamplingParams, Samples, generate_solutions
from ttc.errors import ConfigError
from ttc.metrics import bootstrap_ci
from ttc.results import ResultsStore, cell_key
from ttc.search import pool
from ttc.tasks.base import ProblemSet, Task

log = logging.getLogger(__name__)

ORACLE_METHODS = {"coverage"}


@dataclasses.dataclass(frozen=True, kw_only=True)
class MethodSpec:
    """One method of the grid: its registered ``name`` and its parameters."""

    name: str
    params: tuple[tuple[str, object], ...] = ()

    @property
    def label(self) -> str:
        return self.name

    def get(self, k: str, default=None):
        return dict(self.params).get(k, default)


@dataclasses.dataclass(frozen=True, kw_only=True)
class EvalConfig:
    """What to evaluate on.

    Attributes:
        budgets: samples (generations) per problem, e.g. ``(1, 2, 4, ..., 64)``.
        seeds: sampling seeds; one record per seed.
        n_problems: test problems.
        problem_seed: seed of the test problems.
        temperature, top_k, top_p: token selection.
        max_rows: rows per jit call (memory bound).
        majority_subsets: Monte-Carlo subsets per problem for majority vote at ``k < n``.
    """

    budgets: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)
    seeds: tuple[int, ...] = (0,)
    n_problems: int = 256
    problem_seed: int = 1234
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    max_rows: int = 4096
    majority_subsets: int = 256

    def __post_init__(self) -> None:
        if not self.budgets or any(int(b) < 1 for b in self.budgets):
            raise ConfigError(f"budgets must be positive integers, got {list(self.budgets)}")
        if self.n_problems < 1:
            raise ConfigError(f"eval.n_problems must be >= 1, got {self.n_problems}")
        if self.max_rows < 1:
            raise ConfigError(f"eval.max_rows must be >= 1, got {self.max_rows}")
        if not self.seeds:
            raise ConfigError("seeds must list at least one seed")


def config_tag(*parts) -> str:
    blob = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:8]


def _save_pool(path: Path, s: Samples) -> None:
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, **{f.name: getattr(s, f.name) for f in dataclasses.fields(s)})
    tmp.replace(path)


def _load_pool(path: Path) -> Samples | None:
    if not path.exists():
        return None
    with np.load(path) as z:
        d = {k: z[k] for k in z.files}
    d["cache_len"] = int(d["cache_len"])
    return Samples(**d)


def _summary(per_problem: np.ndarray, problems: ProblemSet, seed: int) -> dict:
    lo, hi = bootstrap_ci(per_problem, seed=seed)
    by_diff = {
        str(int(d)): float(per_problem[problems.difficulty == d].mean())
        for d in np.unique(problems.difficulty)
    }
    return {"accuracy": float(per_problem.mean()), "ci_low": lo, "ci_high": hi,
            "by_difficulty": by_diff}


def evaluate(
    policy: LoadedModel,
    task: Task,
    methods: list[MethodSpec],
    cfg: EvalConfig,
    store: ResultsStore,
    *,
    run_dir: Path,
    run_config: dict | None = None,
    progress: bool = True,
) -> list[dict]:
    """Evaluates ``methods`` at every budget and seed, appending new records to ``store``."""
    unknown = [m.name for m in methods if m.name not in pool.POOL_METHODS]
    if unknown:
        raise ConfigError(f"unknown method(s) {unknown}; available: {list(pool.POOL_METHODS)}")
    problems = task.problems(cfg.n_problems, seed=cfg.problem_seed, split="test")
    sp = SamplingParams.make(cfg.temperature, cfg.top_k, cfg.top_p)
    tag = config_tag(policy.meta.get("id", ""), dataclasses.asdict(task)
                     if dataclasses.is_dataclass(task) else task.name,
                     cfg.n_problems, cfg.problem_seed, cfg.temperature, cfg.top_k, cfg.top_p)
    n_max = max(cfg.budgets)
    new = []
    for seed in cfg.seeds:
        cells = []
        for m in methods:
            budgets = (1,) if m.name == "single" else cfg.budgets
            for b in budgets:
                key = cell_key(m.label, int(b), int(seed), tag)
                if not store.has(key):
                    cells.append((m, int(b), key))
        if not cells:
            log.info("seed %d: all %s cells already in %s", seed, "pool", store.path)
            continue
        pool_path = run_dir / "pools" / f"pool-{tag}-seed{seed}-n{n_max}.npz"
        pool_path.parent.mkdir(parents=True, exist_ok=True)
        samples = _load_pool(pool_path)
        t0 = time.time()
        if samples is None:
            samples = generate_solutions(
                policy.graphdef, policy.params, task, problems.prompts, problems.prompt_len,
                num_samples=n_max, sampling=sp, key=jax.random.key(seed), max_rows=cfg.max_rows,
                progress=progress,
            )
            pool_time = time.time() - t0
            _save_pool(pool_path, samples)
            (pool_path.with_suffix(".time")).write_text(str(pool_time))
        else:
            pool_time = float((pool_path.with_suffix(".time")).read_text())
        for m, b, key in cells:
            t1 = time.time()
            per = pool.per_problem_correct(
                m.name, samples, problems, b, key=jax.random.key(seed + 7919 * b),
                subsets=cfg.majority_subsets,
                length_normalize=bool(m.get("length_normalize", True)),
            )
            led = pool.pool_ledger(policy.cfg, samples, problems, b)
            rec = {
                "key": key,
                "method": m.label,
                "budget": b,
                "seed": int(seed),
                "oracle": m.name in ORACLE_METHODS,
                "n_problems": len(problems),
                "generations": b,
                "tokens": float(b * samples.useful_tokens.mean()),
                **_summary(per, problems, seed),
                **led.as_record(),
                # pool methods share one sampling run: charge it pro rata to the budget
                "wall_time_s": pool_time * b / n_max + (time.time() - t1),
                "config": {"method": dict(m.params), "eval": dataclasses.asdict(cfg),
                           **(run_config or {})},
            }
            store.add(rec)
            new.append(rec)
    return new


def format_table(records: list[dict]) -> str:
    """A short text table: method, budget, accuracy [95% CI], useful GFLOPs per problem."""
    rows = sorted(records, key=lambda r: (r["method"], r["budget"], r["seed"]))
    lines = [f"{'method':<14}{'N':>5}{'seed':>5}  {'accuracy':>8}  {'95% CI':>15}  {'GFLOP/prob':>10}"]
    for r in rows:
        lines.append(
            f"{r['method'] + ('*' if r.get('oracle') else ''):<14}{r['budget']:>5}{r['seed']:>5}  "
            f"{r['accuracy']:>8.3f}  [{r['ci_low']:.3f}, {r['ci_high']:.3f}]  "
            f"{r['flops_useful'] / 1e9:>10.4f}"
        )
    lines.append("(* oracle upper bound, excluded from the frontier)")
    return "\n".join(lines)
