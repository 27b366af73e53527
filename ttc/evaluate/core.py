"""The evaluation loop: for every seed, the cells still to do are claimed, the seed's pool is
sampled (or read) if a pool cell was claimed, and each claimed cell is evaluated and recorded."""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import jax
import numpy as np
from tqdm.auto import tqdm

from ttc import registry as REG
from ttc.checkpoint import LoadedModel
from ttc.decode import Samples, SamplingParams, generate_solutions
from ttc.evaluate.cells import Cell, claim_all, seed_cells, unrecorded
from ttc.evaluate.config import EvalConfig, run_tag
from ttc.evaluate.pools import Pool, PoolFile, obtain_pool
from ttc.evaluate.records import Outcome, apportion, build_record
from ttc.evaluate.sources import RewardSource, ScoreMemo, Verifiers, reward_key
from ttc.ledger import pool_ledger, pool_reward_ledger, search_ledger
from ttc.methods import MethodSpec, check_budgets
from ttc.results import ResultsStore
from ttc.search import pool as pool_est
from ttc.search.loop import run_search
from ttc.tasks.base import ProblemSet, Task

log = logging.getLogger("ttc.evaluate")


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Eval:
    """Everything one evaluation's cells share."""

    policy: LoadedModel
    task: Task
    cfg: EvalConfig
    problems: ProblemSet
    sampling: SamplingParams
    verifiers: Verifiers
    tag: str
    run_dir: Path
    run_config: dict | None
    progress: bool

    def record(self, cell: Cell, out: Outcome) -> dict:
        return build_record(cell, out, problems=self.problems, cfg=self.cfg,
                            reward_meta=self.verifiers.meta(cell.method),
                            run_config=self.run_config)

    def sample_pool(self, seed: int) -> Samples:
        """Samples the seed's pool (``cfg.pool_size`` solutions per problem)."""
        p = self.problems
        return generate_solutions(
            self.policy.graphdef, self.policy.params, self.task, p.prompts, p.prompt_len,
            num_samples=self.cfg.pool_size, sampling=self.sampling, key=jax.random.key(seed),
            max_rows=self.cfg.max_rows, progress=self.progress,
        )


def evaluate(
    policy: LoadedModel,
    task: Task,
    methods: list[MethodSpec],
    cfg: EvalConfig,
    store: ResultsStore,
    *,
    run_dir: Path,
    rewards: dict[str, RewardSource] | None = None,
    run_config: dict | None = None,
    progress: bool = True,
) -> list[dict]:
    """Evaluates ``methods`` at every budget and seed, appending new records to ``store``.

    ``rewards`` maps ``prm``/``orm`` to trained reward sources; the oracle is built here.
    Cells already recorded are skipped (resume). Several processes may share ``store``: a cell
    is computed only by the process that claims it (:meth:`ttc.results.ResultsStore.claim`),
    pool cells of a seed are claimed together before its pool is needed, search cells one at a
    time just before each runs, and a pool is sampled by one process only
    (:func:`ttc.evaluate.pools.obtain_pool`). Claims of cells not recorded are released on the
    way out, exceptions included. At the end the store is refreshed, so its records include
    other writers'.

    Returns:
        The records this call added, in the order they were added.

    Raises:
        ConfigError: a method needs a reward model that ``rewards`` lacks, or a search method's
            ``beam_width`` does not fit a search budget (:func:`ttc.methods.check_budgets`).
    """
    verifiers = Verifiers(task, rewards)
    verifiers.check(methods)
    for m in methods:
        check_budgets(m, cfg.search_budgets)
    ev = _Eval(policy=policy, task=task, cfg=cfg,
               problems=task.problems(cfg.n_problems, seed=cfg.problem_seed, split="test"),
               sampling=SamplingParams.make(cfg.temperature, cfg.top_k, cfg.top_p),
               verifiers=verifiers, tag=run_tag(policy, task, cfg, rewards), run_dir=run_dir,
               run_config=run_config, progress=progress)
    new: list[dict] = []
    bar = tqdm(total=0, desc="cells", disable=not progress)
    try:
        for seed in cfg.seeds:
            new += _evaluate_seed(ev, methods, int(seed), store, bar)
    finally:
        bar.close()
    store.refresh()
    return new


def _evaluate_seed(ev: _Eval, methods: list[MethodSpec], seed: int, store: ResultsStore,
                   bar: tqdm) -> list[dict]:
    """The seed's unrecorded cells that this process claims: pool cells, then search cells."""
    todo = unrecorded(seed_cells(methods, ev.cfg, seed, ev.tag), store)
    if not todo:
        log.info("seed %d: every cell is already in %s", seed, store.path)
        return []
    bar.total += len(todo)
    bar.refresh()
    new: list[dict] = []
    pool_cells = claim_all([c for c in todo if c.is_pool], store)
    try:
        if pool_cells:
            new += _evaluate_pool_cells(ev, pool_cells, seed, store, bar)
    finally:
        for c in pool_cells:
            store.release(c.key)  # a no-op for the recorded ones
    skipped = sum(c.is_pool for c in todo) - len(pool_cells)
    for c in (c for c in todo if not c.is_pool):
        if not store.claim(c.key):
            skipped += 1
            continue
        try:
            rec = ev.record(c, _evaluate_search_cell(ev, c))
            store.add(rec)
        finally:
            store.release(c.key)
        new.append(rec)
        bar.update()
    if skipped:
        log.info("seed %d: %d cell(s) recorded or claimed by another process meanwhile", seed,
                 skipped)
        bar.update(skipped)
    return new


def _evaluate_pool_cells(ev: _Eval, cells: list[Cell], seed: int, store: ResultsStore,
                         bar: tqdm) -> list[dict]:
    """The claimed pool cells of ``seed``, all from the seed's pool (sampled or read)."""
    file = PoolFile(run_dir=ev.run_dir, tag=ev.tag, seed=seed, n=ev.cfg.pool_size)
    pool = obtain_pool(file, store, lambda: ev.sample_pool(seed))
    scores = ScoreMemo(ev.task, pool.samples, ev.problems, seed)
    new = []
    for c in cells:
        rec = ev.record(c, _evaluate_pool_cell(ev, c, pool, scores))
        store.add(rec)
        new.append(rec)
        bar.update()
    return new


def _evaluate_pool_cell(ev: _Eval, cell: Cell, pool: Pool, scores: ScoreMemo) -> Outcome:
    """A pool method at one budget, estimated from the seed's pool (and its verifier's scores
    of it); its wall time includes its share of sampling and scoring the pool."""
    t1 = time.time()
    m, b, samples, problems = cell.method, cell.budget, pool.samples, ev.problems
    led = pool_ledger(ev.policy.cfg, samples, problems, b)
    shared = pool.seconds
    subset_key = jax.random.key(cell.seed + 7919 * b)
    if m.reward is None:
        per = pool_est.per_problem_correct(
            m.name, samples, problems, b, key=subset_key, subsets=ev.cfg.majority_subsets,
            length_normalize=bool(m.get("length_normalize", REG.LENGTH_NORMALIZE.default)))
    else:
        src = ev.verifiers.source(m)
        scored = scores.get(reward_key(m), src)
        w = scored.aggregated(str(m.value("aggregation")))
        per = pool_est.scored_correct(m.name, w, samples, problems, b, key=subset_key,
                                      subsets=ev.cfg.majority_subsets)
        pool_reward_ledger(led, src, scored, samples, problems, b)
        shared += scored.seconds
    wall = apportion(shared, b, ev.cfg.pool_size)
    return Outcome(per_problem=per, ledger=led, tokens=b * samples.useful_tokens.mean(),
                   wall_time_s=wall + time.time() - t1)


def _evaluate_search_cell(ev: _Eval, cell: Cell) -> Outcome:
    """A search method at one budget: one run over every problem."""
    m, b, p = cell.method, cell.budget, ev.problems
    src = ev.verifiers.source(m)
    t1 = time.time()
    res = run_search(
        ev.policy.graphdef, ev.policy.params, src.spec, src.params, ev.task, p.prompts,
        p.prompt_len, p.gold, cfg=m.search_config(), num_samples=b, sampling=ev.sampling,
        key=jax.random.key(cell.seed * 1_000_003 + b), hp=m.search_params(),
        max_rows=ev.cfg.max_rows, scorer=src.scorer,
        questions=None if src.scorer is None else p.texts)
    per = (res.chosen == p.answers).astype(np.float64)
    return Outcome(per_problem=per, ledger=search_ledger(ev.policy.cfg, src, res, p),
                   tokens=res.work.tokens.mean(), wall_time_s=time.time() - t1,
                   iterations=float(res.work.iterations.mean()))
