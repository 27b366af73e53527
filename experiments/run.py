"""Main job: train (or reuse) the policy, evaluate every method over a budget grid, write
``outputs/<name>/{results.jsonl,frontier.csv,pareto.png}`` and print a table.

    ttc-run                                   # the default grid (resumes if run before)
    ttc-run name=quick budgets=[1,4,16] eval.n_problems=64
    ttc-run method=majority logger=wandb
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import time
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from experiments.common import (
    CONF_DIR,
    as_path,
    build_task,
    friendly_errors,
    policy_config,
    train_config,
)
from ttc.errors import ConfigError
from ttc.evaluate import EvalConfig, MethodSpec, evaluate, format_table
from ttc.plots import frontier_rows, plot_pareto
from ttc.results import ResultsStore
from ttc.search.pool import POOL_METHODS
from ttc.train import get_policy

log = logging.getLogger("ttc.run")

KNOWN_METHODS = set(POOL_METHODS)


def method_specs(cfg: DictConfig) -> list[MethodSpec]:
    specs = []
    for m in cfg.methods:
        m = OmegaConf.to_container(m, resolve=True)
        if not isinstance(m, dict) or "name" not in m:
            raise ConfigError(f"each entry of `methods` needs a name, got {m!r}")
        name = m.pop("name")
        if name not in KNOWN_METHODS:
            raise ConfigError(f"unknown method {name!r}; available: {sorted(KNOWN_METHODS)}")
        specs.append(MethodSpec(name=name, params=tuple(sorted(m.items()))))
    return specs


def eval_config(cfg: DictConfig) -> EvalConfig:
    e = OmegaConf.to_container(cfg.eval, resolve=True)
    try:
        budgets = tuple(int(b) for b in cfg.budgets)
        seeds = tuple(int(s) for s in cfg.seeds)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"budgets and seeds must be lists of integers: {err}") from None
    try:
        return EvalConfig(budgets=budgets, seeds=seeds, **e)
    except TypeError as err:
        raise ConfigError(f"eval: {err}") from None


def write_outputs(store: ResultsStore, run_dir: Path) -> Path:
    records = store.records
    front = frontier_rows(records)
    with open(run_dir / "frontier.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["method", "budget", "seed", "accuracy", "flops_useful", "flops_executed"])
        for r in front:
            w.writerow([r["method"], r["budget"], r["seed"], f"{r['accuracy']:.4f}",
                        f"{r['flops_useful']:.6g}", f"{r['flops_executed']:.6g}"])
    plot = run_dir / "pareto.png"
    plot_pareto(records, plot)
    return plot


@friendly_errors
def run(cfg: DictConfig) -> None:
    t0 = time.time()
    run_dir = Path(cfg.out_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    task = build_task(cfg)
    methods = method_specs(cfg)
    ecfg = eval_config(cfg)
    pcfg = policy_config(cfg, task)
    tcfg = train_config(cfg.train)
    mirror = None
    if cfg.logger.name == "wandb":
        from ttc.tracking import WandbMirror

        mirror = WandbMirror(project=cfg.logger.project, name=cfg.name, run_dir=run_dir,
                             config=OmegaConf.to_container(cfg, resolve=True),
                             mode=cfg.logger.mode)
    elif cfg.logger.name != "local":
        raise ConfigError(f"logger must be local or wandb, got {cfg.logger.name!r}")
    store = ResultsStore(run_dir / "results.jsonl", mirror=mirror)
    policy = get_policy(task, pcfg, tcfg, cache_dir=cfg.cache_dir,
                        checkpoint_path=as_path(cfg.policy.checkpoint), progress=cfg.progress)
    run_config = {"task": dataclasses.asdict(task), "policy": dataclasses.asdict(pcfg),
                  "policy_id": policy.meta.get("id")}
    new = evaluate(policy, task, methods, ecfg, store, run_dir=run_dir, run_config=run_config,
                   progress=cfg.progress)
    plot = write_outputs(store, run_dir)
    if mirror is not None:
        mirror.finish(plot)
    print(format_table(store.records))
    print(f"\n{len(new)} new record(s), {len(store.records)} in {store.path}; "
          f"frontier.csv and pareto.png in {run_dir} ({time.time() - t0:.0f}s)")


@hydra.main(version_base=None, config_path=CONF_DIR, config_name="config")
def _hydra_main(cfg: DictConfig) -> None:
    run(cfg)


def main() -> None:
    _hydra_main()


if __name__ == "__main__":
    main()
