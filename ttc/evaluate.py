"""Runs methods over a budget grid and writes one record per (method, budget, seed) cell.

Hydra-free: ``experiments/run.py`` builds the pieces from config and calls :func:`evaluate`.
Finished cells already in the store are skipped (resume); pools of samples are cached under the
run directory so an interrupted aggregation does not re-sample.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from ttc import flops as F
from ttc import rewards as R
from ttc.checkpoint import LoadedModel
from ttc.decode import TRACE_COUNTS, Samples, SamplingParams, generate_solutions
from ttc.errors import ConfigError
from ttc.methods import MethodSpec
from ttc.metrics import bootstrap_ci, expected_best_of_k
from ttc.models.transformer import TransformerConfig
from ttc.parallel import device_groups, over_rows, resolve_devices
from ttc.results import ResultsStore, cell_key
from ttc.search import pool
from ttc.search.loop import run_search
from ttc.tasks.base import ProblemSet, Task
from ttc.train import cache_key

log = logging.getLogger(__name__)



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


def config_tag(*parts) -> str:
    """The short config hash in results-store keys (same hash as checkpoint names)."""
    return cache_key(*parts)[:8]


def run_tag(policy: LoadedModel, task: Task, cfg: EvalConfig,
            rewards: dict[str, RewardSource] | None = None) -> str:
    """The config hash ending every record key of an evaluation (policy, task, test problems,
    sampling, reward models): records of one configuration are those whose key ends with it."""
    return config_tag(policy.meta.get("id", ""), dataclasses.asdict(task)
                      if dataclasses.is_dataclass(task) else task.name,
                      cfg.n_problems, cfg.problem_seed, cfg.temperature, cfg.top_k, cfg.top_p,
                      {k: v.meta.get("id") for k, v in (rewards or {}).items()})


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


@dataclasses.dataclass(frozen=True)
class RewardSource:
    """A reward source ready for scoring: static spec, params, and its model config (FLOPs)."""

    spec: R.RewardSpec
    params: object
    cfg: TransformerConfig | None
    meta: dict = dataclasses.field(default_factory=dict)


def reward_key(m: MethodSpec) -> tuple:
    return (m.reward, float(m.get("flip", 0.0)), float(m.get("noise", 0.0)))


@functools.partial(jax.jit, static_argnames=("spec", "task", "devices"))
def _score_pool(params, tokens, prompt_len, length, gold, keys, *, spec, task, devices):
    """Scores one chunk of solutions per device (``keys``: ``[devices]``, one per chunk)."""
    TRACE_COUNTS["score_pool"] += 1

    def local(params, tokens, prompt_len, length, gold, keys):
        return R.score_solutions(spec, params, task, tokens, prompt_len, length, gold, keys[0])

    return over_rows(local, devices, (False, True, True, True, True, True))(
        params, tokens, prompt_len, length, gold, keys)


def score_pool(src: RewardSource, task: Task, samples: Samples, problems: ProblemSet, seed: int,
               chunk: int = 2048, devices: int | None = None):
    """Step scores ``[P, N, K]`` and mask of every pooled solution (fixed-size chunks, each with
    its own key; ``devices`` of them side by side, see :mod:`ttc.parallel`: the scores do not
    depend on the device count)."""
    p, n, t = samples.tokens.shape
    tokens = samples.tokens.reshape(p * n, t)
    plen = np.repeat(problems.prompt_len, n)
    gold = np.repeat(problems.gold, n, axis=0)
    length = samples.length.reshape(-1)
    key = jax.random.key(10_000 + seed)
    chunks = []
    for i in range(0, p * n, chunk):
        idx = np.arange(i, i + chunk)
        key, sub = jax.random.split(key)
        chunks.append((np.where(idx < p * n, idx, i), sub, min(chunk, p * n - i)))
    d = min(resolve_devices(devices), len(chunks))
    outs, masks = [], []
    for group, padded in device_groups(chunks, d):
        idx = np.concatenate([c[0] for c in padded])
        sc, mk = _score_pool(src.params, jnp.asarray(tokens[idx]), jnp.asarray(plen[idx]),
                             jnp.asarray(length[idx]), jnp.asarray(gold[idx]),
                             jnp.stack([c[1] for c in padded]), spec=src.spec, task=task,
                             devices=d)
        sc, mk = np.asarray(sc), np.asarray(mk)
        for j, (_, _, keep) in enumerate(group):
            outs.append(sc[j * chunk:j * chunk + keep])
            masks.append(mk[j * chunk:j * chunk + keep])
    k = outs[0].shape[1]
    return np.concatenate(outs).reshape(p, n, k), np.concatenate(masks).reshape(p, n, k)


def _pool_reward_ledger(led: F.Ledger, src: RewardSource, samples: Samples,
                        problems: ProblemSet, k: int) -> None:
    if src.cfg is None:  # the oracle verifier is free
        led.add("reward", 0.0, 0.0)
        return
    t = samples.cache_len
    led.add("reward_prefill", F.prefill_useful(src.cfg, problems.prompt_len).mean(), 0.0)
    dec = F.decode_useful(src.cfg, samples.useful_tokens, samples.useful_ctx).mean()
    led.add("reward", k * dec, k * t * src.cfg.flops_per_token(t))


def _search_ledger(policy_cfg, src: RewardSource, res, problems: ProblemSet) -> F.Ledger:
    w = {k: v.mean() for k, v in res.work.items()}
    led = F.Ledger()
    t = res.cache_len
    lp_pad = problems.prompts.shape[1]
    led.add("policy_prefill", F.prefill_useful(policy_cfg, problems.prompt_len).mean(),
            F.prefill_executed(policy_cfg, lp_pad, t))
    led.add("policy_decode", F.decode_useful(policy_cfg, w["dec_tokens"], w["dec_ctx"]),
            F.decode_executed(policy_cfg, w["dec_steps"], t))
    look_u = F.decode_useful(policy_cfg, w["look_tokens"], w["look_ctx"])
    look_e = F.decode_executed(policy_cfg, w["look_steps"], t)
    if src.cfg is not None:
        rc = src.cfg
        tr = t + res.window
        led.add("reward_prefill", F.prefill_useful(rc, problems.prompt_len).mean(),
                F.prefill_executed(rc, lp_pad, tr))
        led.add("reward", F.decode_useful(rc, w["rew_tokens"], w["rew_ctx"]),
                w["rew_calls"] * res.window * rc.flops_per_token(tr))
        look_u += F.decode_useful(rc, w["look_rew_tokens"], w["look_rew_ctx"])
        look_e += w["look_rew_calls"] * res.window * rc.flops_per_token(tr)
    if w["look_tokens"] > 0:
        led.add("lookahead", look_u, look_e)
    return led


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
    """
    rewards = dict(rewards or {})
    for m in methods:
        if m.reward in ("prm", "orm") and m.reward not in rewards:
            raise ConfigError(f"method {m.label!r} needs a {m.reward} reward model")
    problems = task.problems(cfg.n_problems, seed=cfg.problem_seed, split="test")
    sp = SamplingParams.make(cfg.temperature, cfg.top_k, cfg.top_p)
    tag = run_tag(policy, task, cfg, rewards)
    n_max = max(cfg.budgets)

    def source(m: MethodSpec) -> RewardSource:
        kind, flip, noise = reward_key(m)
        if kind == "oracle":
            return RewardSource(spec=R.RewardSpec(kind="oracle", window=task.max_step_len,
                                                  flip=flip, noise=noise), params=None, cfg=None)
        return rewards[kind]

    def record(m: MethodSpec, b: int, seed: int, key: str, per, led: F.Ledger, tokens: float,
               wall: float, extra: dict | None = None) -> dict:
        src_meta = rewards[m.reward].meta if m.reward in rewards else {}
        return {
            "key": key, "method": m.label, "name": m.name, "budget": b, "seed": int(seed),
            "oracle": m.oracle, "n_problems": len(problems), "generations": b,
            "tokens": float(tokens), **_summary(per, problems, seed), **led.as_record(),
            "wall_time_s": wall, **(extra or {}),
            # per-problem (expected) correctness, in problem order: difficulty-bin analyses
            "per_problem": [round(float(x), 4) for x in np.asarray(per, np.float64)],
            "config": {"method": dict(m.params), "eval": dataclasses.asdict(cfg),
                       "reward_model": {"id": src_meta.get("id"),
                                        "quality": src_meta.get("quality")},
                       **(run_config or {})},
        }

    new = []
    bar = tqdm(total=0, desc="cells", disable=not progress)
    for seed in cfg.seeds:
        todo = []
        for m in methods:
            budgets = ((1,) if m.name == "single" else
                       cfg.search_budgets if m.kind == "search" else cfg.budgets)
            for b in budgets:
                key = cell_key(m.label, int(b), int(seed), tag)
                if not store.has(key):
                    todo.append((m, int(b), key))
        if not todo:
            log.info("seed %d: every cell is already in %s", seed, store.path)
            continue
        bar.total += len(todo)
        bar.refresh()
        pool_cells = [c for c in todo if c[0].kind == "pool"]
        if pool_cells:
            samples, pool_time = _get_pool(policy, task, problems, cfg, sp, seed, n_max, tag,
                                           run_dir, progress)
            scored: dict[tuple, tuple] = {}
            for m, b, key in pool_cells:
                t1 = time.time()
                sample_time = pool_time
                led = F.pool_ledger(policy.cfg, samples, problems, b)
                if m.reward is None:
                    per = pool.per_problem_correct(
                        m.name, samples, problems, b, key=jax.random.key(seed + 7919 * b),
                        subsets=cfg.majority_subsets,
                        length_normalize=bool(m.get("length_normalize", True)))
                else:
                    src = source(m)
                    rk = reward_key(m)
                    if rk not in scored:
                        t2 = time.time()
                        scored[rk] = (*score_pool(src, task, samples, problems, seed),
                                      time.time() - t2)
                    steps, mask, score_time = scored[rk]
                    agg = str(m.get("aggregation", "last"))
                    w = np.asarray(R.aggregate(jnp.asarray(steps.reshape(-1, steps.shape[-1])),
                                               jnp.asarray(mask.reshape(-1, mask.shape[-1])),
                                               agg)).reshape(steps.shape[:2])
                    valid = samples.answers != -1
                    correct = samples.answers == problems.answers[:, None]
                    if m.name == "bon":
                        per = expected_best_of_k(np.where(valid, w, -np.inf), correct, b)
                    else:
                        per = pool.weighted_majority_at_k(
                            samples.answers, w, problems.answers, b,
                            key=jax.random.key(seed + 7919 * b), subsets=cfg.majority_subsets)
                    _pool_reward_ledger(led, src, samples, problems, b)
                    sample_time += score_time
                wall = sample_time * b / n_max
                rec = record(m, b, seed, key, per, led, b * samples.useful_tokens.mean(),
                             wall + time.time() - t1)
                store.add(rec)
                new.append(rec)
                bar.update()
        for m, b, key in (c for c in todo if c[0].kind == "search"):
            src = source(m)
            t1 = time.time()
            res = run_search(
                policy.graphdef, policy.params, src.spec, src.params, task, problems.prompts,
                problems.prompt_len, problems.gold, cfg=m.search_config(), num_samples=b,
                sampling=sp, key=jax.random.key(seed * 1_000_003 + b), hp=m.search_params(),
                max_rows=cfg.max_rows)
            per = (res.chosen == problems.answers).astype(np.float64)
            led = _search_ledger(policy.cfg, src, res, problems)
            tokens = (res.work["dec_tokens"] + res.work["look_tokens"]).mean()
            rec = record(m, b, seed, key, per, led, tokens, time.time() - t1,
                         {"iterations": float(res.work["iterations"].mean())})
            store.add(rec)
            new.append(rec)
            bar.update()
    bar.close()
    return new


def _get_pool(policy, task, problems, cfg, sp, seed, n_max, tag, run_dir, progress):
    pool_path = run_dir / "pools" / f"pool-{tag}-seed{seed}-n{n_max}.npz"
    pool_path.parent.mkdir(parents=True, exist_ok=True)
    samples = _load_pool(pool_path)
    if samples is not None:
        return samples, float(pool_path.with_suffix(".time").read_text())
    t0 = time.time()
    samples = generate_solutions(
        policy.graphdef, policy.params, task, problems.prompts, problems.prompt_len,
        num_samples=n_max, sampling=sp, key=jax.random.key(seed), max_rows=cfg.max_rows,
        progress=progress,
    )
    pool_time = time.time() - t0
    _save_pool(pool_path, samples)
    pool_path.with_suffix(".time").write_text(str(pool_time))
    return samples, pool_time


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
