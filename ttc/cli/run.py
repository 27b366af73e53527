"""Main job: train (or reuse) the policy, evaluate every method over a budget grid, write
``outputs/<name>/{results.jsonl,frontier.csv,pareto.png}`` and print a table.

    ttc-run                                   # the default grid (resumes if run before)
    ttc-run name=quick budgets=[1,4,16] eval.n_problems=64
    ttc-run method=majority logger=wandb
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ttc import checkpoint, distributed
from ttc.checkpoint import LoadedModel
from ttc.cli.common import (
    as_path,
    enable_compilation_cache,
    friendly_errors,
    hydra_entry,
    policy_config,
    same_data_config,
    same_data_policy,
    setup_devices,
)
from ttc.cli.meshes import check_split, mesh_layouts
from ttc.cli.schema import RunConfig, validate
from ttc.errors import ConfigError
from ttc.evaluate import RewardSource, evaluate, format_table, run_tag
from ttc.methods import MethodSpec
from ttc.parallel import Layout, sampler_devices, side_by_side, use_layouts
from ttc.plots import plot_pareto, write_frontier_csv
from ttc.results import ResultsStore
from ttc.rewards import RewardSpec
from ttc.tasks.base import describe_task
from ttc.train import TrainConfig, get_policy, policy_path
from ttc.train_reward import LabelConfig, get_reward_model

log = logging.getLogger("ttc.run")


@dataclasses.dataclass(frozen=True, kw_only=True)
class RewardSettings:
    """The validated ``reward`` section: head, trunk choice, labelling and training configs."""

    head: str
    init_from_policy: bool
    base: str | None
    base_steps: int | None
    labels: LabelConfig
    train: TrainConfig


def reward_settings(rc: RunConfig) -> RewardSettings:
    """The library configs of the validated ``reward`` section."""
    r = rc.reward
    return RewardSettings(head=r.head, init_from_policy=r.init_from_policy, base=r.base,
                          base_steps=r.base_steps, labels=r.labels.config(),
                          train=r.train.config())


def reward_kinds(methods: list[MethodSpec]) -> list[str]:
    """The learned reward models (``prm``, ``orm``) that ``methods`` need, sorted."""
    return sorted({m.reward for m in methods if m.reward in ("prm", "orm")})


def reward_trunk_config(cfg: DictConfig, task, pcfg, rs: RewardSettings):
    """The architecture of the learned verifiers: ``reward.base``'s policy config, else the
    policy's own (:func:`train_models`)."""
    if rs.base is None:
        return pcfg
    return same_data_config(cfg, task, rs.base, rs.base_steps or 1)[0]


def _host(job: Callable[[], LoadedModel]) -> Callable[[], LoadedModel]:
    return lambda: job().on_host()


def train_models(cfg: DictConfig, task, methods: list[MethodSpec], pcfg, tcfg,
                 rs: RewardSettings) -> tuple[LoadedModel, LoadedModel | None]:
    """The policy and, if the verifiers need one of their own, the verifier's trunk LM (a
    policy config trained on the policy's data, ``reward.base``/``reward.base_steps``).

    When both still have to be trained and the trunk does not depend on the policy
    (``reward.base_steps`` set), they train at once, one per device
    (:func:`ttc.parallel.side_by_side`): the same models, bit for bit, as one after the other.
    One training step already keeps part of the second core busy, so two at once gain less
    than 2x (measured by ``python scripts/bench.py --sections train``, docs/BENCHMARKS.md).
    """
    policy_job = functools.partial(get_policy, task, pcfg, tcfg, cache_dir=cfg.cache_dir,
                                   checkpoint_path=as_path(cfg.policy.checkpoint),
                                   progress=cfg.progress)
    if not reward_kinds(methods) or not (rs.base or rs.base_steps):
        return policy_job(), None
    name = rs.base or str(cfg.policy.name)
    label = f"verifier LM ({name})"
    if rs.base_steps is None:  # the trunk trains as many steps as the policy did
        policy = policy_job()
        return policy, same_data_policy(cfg, task, policy, name, progress=cfg.progress,
                                        label=label)
    mcfg, trunk_tcfg = same_data_config(cfg, task, name, rs.base_steps)
    trunk_job = functools.partial(get_policy, task, mcfg, trunk_tcfg, cache_dir=cfg.cache_dir,
                                  progress=cfg.progress, label=label)
    untrained = (as_path(cfg.policy.checkpoint) is None
                 and not checkpoint.exists(policy_path(task, pcfg, tcfg, cache_dir=cfg.cache_dir))
                 and not checkpoint.exists(policy_path(task, mcfg, trunk_tcfg,
                                                       cache_dir=cfg.cache_dir)))
    if untrained and sampler_devices() > 1:
        return tuple(side_by_side([_host(policy_job), _host(trunk_job)]))
    return policy_job(), trunk_job()


def reward_sources(cfg: DictConfig, methods, task, policy, rs: RewardSettings,
                   trunk: LoadedModel | None = None) -> dict[str, RewardSource]:
    """Trains (or loads cached) the PRM/ORM models that the methods need, as ``rs`` (from
    :func:`reward_settings`) configures them, on ``trunk`` (default: the policy)."""
    kinds = reward_kinds(methods)
    out = {}
    if not kinds:
        return out
    base = policy if trunk is None else trunk
    if trunk is not None:
        tr = base.meta.get("train", {})
        print(f"verifier trunk {base.meta.get('id')} ({rs.base or cfg.policy.name}, "
              f"{tr.get('steps_run')} steps): "
              f"single-sample accuracy {tr.get('val_accuracy', float('nan')):.3f}")
    rcfg = dataclasses.replace(base.cfg, head=rs.head)
    # in turn: trained side by side (ttc.parallel.side_by_side) they took as long in all
    for kind in kinds:
        m = get_reward_model(kind, policy, task, rcfg, rs.labels, rs.train,
                             cache_dir=cfg.cache_dir, init_from_policy=rs.init_from_policy,
                             base=None if base is policy else base, progress=cfg.progress)
        q = m.meta.get("quality", {})
        log.info("%s %s quality: %s", kind, m.meta.get("id"), q)
        print(f"{kind} {m.meta.get('id')}: " + ", ".join(f"{k}={v:.3f}" for k, v in q.items()))
        out[kind] = RewardSource(
            spec=RewardSpec(kind=kind, graphdef=m.graphdef, window=task.max_step_len),
            params=m.params, cfg=m.cfg, meta=m.meta)
    return out


def hub_reward_sources(rc: RunConfig, methods) -> dict[str, RewardSource]:
    """``reward=hf``: the pretrained reward model (:func:`ttc.hub.load_reward`) as the source
    of the methods' ``reward`` kind (``prm`` for PRM formats, ``orm`` for ``orm``)."""
    from ttc import hub

    r = rc.reward
    if r.kind not in reward_kinds(methods):
        return {}
    try:
        scorer = hub.load_reward(r.path, format=r.format, dtype=r.dtype)
    except (OSError, ValueError, KeyError) as e:
        raise ConfigError(f"reward.path={r.path!r}: cannot load it as a {r.format} reward "
                          f"model ({type(e).__name__}: {e})") from None
    ident = f"hf-{Path(r.path).expanduser().resolve().name}-{r.format}-{r.dtype}"
    spec = RewardSpec(kind=r.kind, graphdef=scorer.graphdef, window=1, external=True)
    return {r.kind: RewardSource(spec=spec, params=None, cfg=scorer.cfg, scorer=scorer,
                                 meta={"id": ident, "path": str(r.path), "format": r.format})}


def write_outputs(records: list[dict], run_dir: Path) -> Path:
    write_frontier_csv(records, run_dir / "frontier.csv")
    plot = run_dir / "pareto.png"
    plot_pareto(records, plot)
    return plot


@dataclasses.dataclass(frozen=True)
class RunOutcome:
    """What :func:`run` produced: the store, the records of this configuration and its pieces."""

    store: ResultsStore
    tag: str
    task: object
    policy: object
    rewards: dict
    run_dir: Path

    @property
    def records(self) -> list[dict]:
        return [r for r in self.store.records if r["key"].endswith("|" + self.tag)]


def load_pretrained(rc: RunConfig, layout: Layout | None = None):
    """The ``policy=hf`` checkpoint (:func:`ttc.hub.load`), loaded straight onto ``layout``'s
    mesh if given; a loading error (an unsupported architecture, a missing tensor, a mesh that
    does not divide the heads) is a configuration error naming ``policy.path``."""
    from ttc import hub

    t0 = time.time()
    try:
        model = hub.load(rc.policy.path, dtype=rc.policy.dtype, layout=layout)
    except ValueError as e:
        mesh = "" if layout is None else f" on policy.mesh={layout}"
        raise ConfigError(f"policy.path={rc.policy.path!r}{mesh}: {e}") from None
    if model.tokenizer is None:
        raise ConfigError(f"policy.path={rc.policy.path!r} has no tokenizer files "
                          "(tokenizer.json / tokenizer_config.json): text tasks need one")
    log.info("loaded %s (%s, %.0fM parameters) in %.0fs", rc.policy.path, model.cfg.family,
             model.cfg.n_params / 1e6, time.time() - t0)
    return model


def hub_tokenizer(model):
    """The task-side tokenizer of a pretrained model (its vocabulary size is the model's)."""
    from ttc.tasks import HFTokenizer

    return HFTokenizer(model.tokenizer, vocab_size=model.cfg.vocab_size)


@friendly_errors
def run(cfg: DictConfig) -> RunOutcome:
    """The main job on ``cfg``: validated first (:func:`ttc.cli.schema.validate`), so a
    configuration mistake stops it before anything is trained, compiled or written."""
    rc = validate(cfg, command="run")
    t0 = time.time()
    process, processes = distributed.initialize(rc.distributed.config())
    setup_devices(cfg)
    meshes = mesh_layouts(rc)
    hub = load_pretrained(rc, meshes.policy) if rc.hub_policy else None
    task = rc.build_task(None if hub is None else hub_tokenizer(hub))
    methods = list(rc.methods)
    hub_rewards = hub_reward_sources(rc, methods) if rc.hub_reward else None
    pcfg = hub.cfg if hub is not None else policy_config(cfg, task)
    rsettings = None if rc.hub_reward else reward_settings(rc)
    check_split(meshes.policy, pcfg, "policy.mesh")
    if rsettings is not None and reward_kinds(methods):
        trunk_cfg = reward_trunk_config(cfg, task, pcfg, rsettings)
        check_split(meshes.reward, trunk_cfg, "reward.mesh")
        if any(m.kind == "search" and m.reward in ("prm", "orm") for m in methods):
            # a step-level search runs the reward model on the policy's mesh
            check_split(meshes.policy, trunk_cfg, "policy.mesh")
    run_dir = Path(cfg.out_dir)  # created once the pretrained models loaded
    run_dir.mkdir(parents=True, exist_ok=True)
    if rc.compilation_cache:
        enable_compilation_cache(cfg.cache_dir)
    ecfg = rc.eval_config()
    tcfg = rc.train.config()
    mirror = None
    if rc.logger.name == "wandb":
        from ttc.tracking import WandbMirror, job_name

        proc = f"-p{process}" if processes > 1 else ""  # one wandb run per process
        mirror = WandbMirror(project=cfg.logger.project, name=job_name(cfg.name) + proc,
                             run_dir=run_dir, config=OmegaConf.to_container(cfg, resolve=True),
                             mode=cfg.logger.mode, group=rc.logger.group or cfg.name)
    store = ResultsStore(run_dir / "results.jsonl", mirror=mirror)
    if hub is not None:
        policy, trunk = hub.policy, None
    else:
        policy, trunk = train_models(cfg, task, methods, pcfg, tcfg, rsettings)
    run_config = {"task": describe_task(task), "policy": dataclasses.asdict(pcfg),
                  "policy_id": policy.meta.get("id")}
    rewards = (hub_rewards if hub_rewards is not None
               else reward_sources(cfg, methods, task, policy, rsettings, trunk))
    placed, placed_rewards = meshes.place_policy(policy), meshes.place_rewards(rewards)
    try:
        with use_layouts(policy=meshes.policy, reward=meshes.reward):
            new = evaluate(placed, task, methods, ecfg, store, run_dir=run_dir,
                           rewards=placed_rewards, run_config=run_config, progress=cfg.progress)
    except Exception:  # the other processes finish their cells (and process 0 the outputs)
        distributed.barrier("ttc-run-end", rc.distributed.barrier_timeout_s)
        raise
    outcome = RunOutcome(store=store, tag=run_tag(policy, task, ecfg, rewards), task=task,
                         policy=policy, rewards=rewards, run_dir=run_dir)
    if processes > 1:  # every process's cells are in the store before the merged outputs
        distributed.barrier("ttc-run-end", rc.distributed.barrier_timeout_s)
        store.refresh()
        if process != 0:
            if mirror is not None:
                mirror.finish()
            print(f"process {process} of {processes}: {len(new)} new record(s) in "
                  f"{store.path}; process 0 writes the merged outputs")
            return outcome
    # the outputs show this configuration only: results.jsonl keeps every configuration run
    # into this directory (a changed model or test set gets a new key tag)
    records = outcome.records
    plot = write_outputs(records, run_dir)
    if mirror is not None:
        mirror.finish(plot)
    print(format_table(records))
    older = len(store.records) - len(records)
    print(f"\n{len(new)} new record(s), {len(records)} of this configuration in {store.path}"
          + (f" (and {older} of earlier configurations)" if older else "")
          + f"; frontier.csv and pareto.png in {run_dir} ({time.time() - t0:.0f}s)")
    return outcome


main = hydra_entry(run, "run")


if __name__ == "__main__":
    main()
