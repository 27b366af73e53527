"""Reproductions of published test-time-compute claims, one Hydra experiment file per claim.

    ttc-reproduce +experiment=compute_optimal     # Snell et al. 2024, >4x over best-of-N
    ttc-reproduce +experiment=method_by_difficulty
    ttc-reproduce +experiment=model_size          # small + TTC vs a ~14x larger policy
    ttc-reproduce +experiment=particle_filtering  # Puri et al. 2025
    ttc-reproduce +experiment=coverage            # Brown et al. 2024
    ttc-reproduce +experiment=verifier_free       # Wang et al. 2025
    ttc-reproduce +experiment=verifier_quality
    scripts/reproduce_all.sh                      # all of them, then docs/RESULTS.md

Each run first runs the main job's evaluation for the experiment's methods and budgets (so it
resumes, trains what is missing, and shares records and sample pools with every experiment of
the same ``name``), then checks the claim on the records (``ttc.claims``) and writes
``outputs/<name>/<claim>.md`` (table, verdict, command), ``<claim>.png`` and a line in
``outputs/<name>/claims.jsonl``. Any other override works as in ``ttc-run``, e.g.
``ttc-reproduce +experiment=coverage task=graph``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf, open_dict

from ttc import claims as C
from ttc import distributed
from ttc.cli.common import CONF_DIR, friendly_errors, hydra_entry, same_data_policy
from ttc.cli.run import RunOutcome, run
from ttc.cli.schema import validate
from ttc.errors import ConfigError

log = logging.getLogger("ttc.reproduce")


def _command() -> str:
    try:
        from hydra.core.hydra_config import HydraConfig

        overrides = HydraConfig.get().overrides.task
    except ValueError:  # called without Hydra (tests)
        overrides = []
    return "ttc-reproduce " + " ".join(overrides)


def _bins(cs: dict[str, C.Curve], rc: DictConfig) -> np.ndarray:
    return C.oracle_bins(cs, int(rc.get("n_bins", 5)))


def _large_policy(cfg: DictConfig, small: RunOutcome) -> tuple[RunOutcome, float]:
    """Trains/evaluates the larger policy on the same data as the small one (same optimiser
    steps and batch: equal pretraining tokens D_pre), single sample only."""
    rc = cfg.reproduce
    large = same_data_policy(cfg, small.task, small.policy, str(rc.large_policy),
                             progress=cfg.progress)
    cfg2 = cfg.copy()
    with open_dict(cfg2):
        cfg2.name = f"{cfg.name}_{rc.large_policy}"
        cfg2.out_dir = str(Path(cfg.out_dir).parent / cfg2.name)
        cfg2.methods = [{"name": "single"}]
        cfg2.reproduce = None  # its claim reads the small policy's grid, not this one
        cfg2.policy = OmegaConf.load(Path(CONF_DIR) / "policy" / f"{rc.large_policy}.yaml")
        cfg2.policy.checkpoint = str(Path(cfg.cache_dir) / large.meta["id"])
    out = run(cfg2)
    steps = large.meta["train"]["steps_run"]
    d_pre = float(steps * cfg.train.batch_size
                  * (small.task.max_prompt_len + small.task.max_solution_len))
    return out, d_pre


def check(cfg: DictConfig, outcome: RunOutcome) -> C.ClaimReport:
    """Checks the experiment's claim on the records of ``outcome``."""
    rc = cfg.reproduce
    claim = str(rc.claim)
    cs = C.curves(outcome.records)
    fig = str(outcome.run_dir / f"{claim}.png")
    if claim == "compute_optimal":
        return C.check_compute_optimal(cs, baseline=rc.baseline, candidates=list(rc.candidates),
                                       bins=_bins(cs, rc), figure=fig,
                                       threshold=float(rc.get("threshold", 4.0)))
    if claim == "method_by_difficulty":
        return C.check_method_by_difficulty(cs, baseline=rc.baseline,
                                            candidates=list(rc.candidates), bins=_bins(cs, rc),
                                            figure=fig)
    if claim == "model_size":
        large, d_pre = _large_policy(cfg, outcome)
        lc = C.curves(large.records)
        if "single" not in lc:
            raise ConfigError("the larger policy's run produced no `single` records")
        ratio = large.policy.cfg.matmul_params / outcome.policy.cfg.matmul_params
        return C.check_model_size(cs, lc["single"], baseline=rc.baseline,
                                  candidates=list(rc.candidates), bins=_bins(cs, rc),
                                  n_params=float(outcome.policy.cfg.matmul_params),
                                  size_ratio=float(ratio), d_pretrain=d_pre, figure=fig)
    if claim == "particle_filtering":
        pairs = [(str(p.particle), list(p.against)) for p in rc.pairs]
        return C.check_particle_filtering(cs, pairs=pairs, figure=fig,
                                          threshold=float(rc.get("threshold", 4.0)))
    if claim == "coverage":
        return C.check_coverage(cs, coverage=rc.coverage, selectors=list(rc.selectors),
                                figure=fig, n_samples=int(max(cfg.budgets)))
    if claim == "verifier_free":
        return C.check_verifier_free(cs, majority=rc.majority, others=list(rc.others),
                                     figure=fig)
    if claim == "verifier_quality":
        ladder = [(float(x.noise), str(x.label)) for x in rc.ladder]
        return C.check_verifier_quality(cs, ladder=ladder, coverage=rc.coverage, figure=fig)
    raise ConfigError(f"reproduce.claim={claim!r} is not a known claim")


@friendly_errors
def reproduce(cfg: DictConfig) -> C.ClaimReport | None:
    """Runs the experiment's grid and checks its claim, after validating ``cfg``
    (:func:`ttc.cli.schema.validate`: a ``reproduce`` section is required). In a
    multi-process run only process 0 checks the claim (``None`` elsewhere)."""
    validate(cfg, command="reproduce")
    outcome = run(cfg)
    if not distributed.is_primary():  # process 0 checks the claim on the merged store
        return None
    try:
        report = check(cfg, outcome)
    except C.ClaimError as e:
        raise ConfigError(f"experiment {cfg.reproduce.claim}: {e}") from None
    md = outcome.run_dir / f"{report.claim}.md"
    md.write_text(report.markdown(_command()))
    line = {"claim": report.claim, "held": report.held, "summary": report.summary,
            "task": dataclasses.asdict(outcome.task) if dataclasses.is_dataclass(outcome.task)
            else str(outcome.task), "tag": outcome.tag, "command": _command()}
    with open(outcome.run_dir / "claims.jsonl", "a") as f:
        f.write(json.dumps(line, default=str) + "\n")
    print(f"\n[{report.claim}] {report.verdict}: {report.summary}\n  -> {md}")
    return report


main = hydra_entry(reproduce, "reproduce")


if __name__ == "__main__":
    main()
