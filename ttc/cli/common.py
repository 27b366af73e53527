"""Config → objects, shared by the Hydra entry points; config mistakes become ConfigError.

Every entry point validates the whole configuration first (:func:`ttc.cli.schema.validate`);
the console scripts do it once more before Hydra starts (:func:`precheck`), so that a mistake
leaves nothing behind, not even Hydra's run directory.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ttc.cli.schema import CONF_DIR, VERSION_BASE, policy_file, validate
from ttc.errors import ConfigError
from ttc.models import TransformerConfig
from ttc.tasks.base import Task
from ttc.train import TrainConfig

log = logging.getLogger("ttc")
for _noisy in ("absl", "jax._src.xla_bridge", "orbax"):  # INFO chatter of dependencies
    logging.getLogger(_noisy).setLevel(logging.WARNING)


def policy_config(cfg: DictConfig, task: Task) -> TransformerConfig:
    p = cfg.policy
    try:
        return TransformerConfig(
            vocab_size=task.tokenizer.vocab_size, d_model=p.d_model, n_layers=p.n_layers,
            n_heads=p.n_heads, d_ff=p.d_ff, max_len=task.max_prompt_len + task.max_solution_len,
        )
    except (TypeError, ValueError) as e:
        raise ConfigError(f"policy: {e}") from None


def train_config(section: DictConfig) -> TrainConfig:
    try:
        return TrainConfig(**OmegaConf.to_container(section, resolve=True))
    except (TypeError, ValueError) as e:
        raise ConfigError(f"train: {e}") from None


def friendly_errors(fn: Callable) -> Callable:
    """Prints a ConfigError as one paragraph and exits 2 instead of showing a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ConfigError as e:
            print(f"\nttc: configuration error: {e}\n", file=sys.stderr)
            sys.exit(2)

    return wrapper


def setup_devices(cfg: DictConfig) -> int:
    """Splits the CPU into ``cfg.host_devices`` JAX devices (``auto``: one per usable core) for
    the samplers to shard over (:mod:`ttc.parallel`); returns their number. Call it before
    any JAX computation."""
    from ttc.parallel import configure_host_devices

    try:
        n = configure_host_devices(cfg.get("host_devices", "auto"))
    except ValueError as e:
        raise ConfigError(str(e)) from None
    log.info("samplers shard over %d device(s)", n)
    return n


def enable_compilation_cache(cache_dir: str | Path) -> None:
    """JAX's persistent compilation cache under ``cache_dir/jax``: a second run of the same
    sweep reuses every compiled sampler instead of recompiling it."""
    import jax

    path = Path(cache_dir).absolute() / "jax"
    path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


def hydra_entry(run: Callable[[DictConfig], object], command: str) -> Callable[[], None]:
    """A console-script entry point running ``run`` on the composed ``conf/config.yaml``,
    after :func:`precheck` of the command line (``command``: ``run|train|reproduce``)."""
    import hydra

    @hydra.main(**VERSION_BASE, config_path=CONF_DIR, config_name="config")
    def _main(cfg: DictConfig) -> None:
        run(cfg)

    def main() -> None:
        precheck(sys.argv[1:], command)
        _main()

    return main


_SWEEP_FLAGS = ("-m", "--multirun")


def precheck(argv: Sequence[str], command: str) -> None:
    """Validates the configuration of a command line before Hydra runs it (Hydra creates the
    run directory before calling the job); on a mistake prints it and exits with status 2.

    Overrides that Hydra rejects (``eval.n_problem=3`` without ``+``, ``method=nope``) are
    reported the same way. A multirun (``-m``) checks every point of its sweep, and leaves
    sweeps that the basic sweeper cannot expand to Hydra. Command lines with other Hydra flags
    (``--cfg``, ``--help``, ``-cn``, ...) are left to Hydra.
    """
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    overrides = [a for a in argv if a not in _SWEEP_FLAGS]
    if any(a.startswith("-") for a in overrides):
        return
    sweep = len(overrides) < len(argv)
    try:
        points = _sweep_points(overrides) if sweep else [overrides]
        cfgs = _compose(points)
    except (HydraException, OmegaConfBaseException) as e:
        if sweep:
            return
        friendly_errors(_hydra_error)(e)
    for point, cfg in zip(points, cfgs, strict=True):
        friendly_errors(_validate_point)(cfg, command, [o for o in point
                                                        if any(o not in p for p in points)])


def _sweep_points(overrides: list[str]) -> list[list[str]]:
    """The overrides of every job of a basic-sweeper multirun."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides=overrides)
    return [list(p) for batch in BasicSweeper.split_arguments(parsed, None) for p in batch]


def _compose(points: list[list[str]]) -> list[DictConfig]:
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=CONF_DIR, **VERSION_BASE):
        return [compose("config", overrides=p) for p in points]


def _hydra_error(e: BaseException) -> None:
    """Raises Hydra's composition error ``e`` (and its causes) as one paragraph."""
    override = getattr(e, "override", None)  # a parse error names its override
    parts = [f"cannot parse the override {override!r}:"] if override else []
    while e is not None:
        text = str(e).split("Config search path:")[0].replace(":\n\t", ": ")
        text = text.replace("\n\t", ", ")
        parts += [ln.strip() for ln in text.splitlines()
                  if ln.strip() and not ln.strip().startswith(("full_key:", "object_type="))]
        e = e.__cause__
    raise ConfigError(" ".join(p if p.endswith((".", ":")) or p is parts[-1] else p + ";"
                               for p in parts))


def _validate_point(cfg: DictConfig, command: str, swept: list[str]) -> None:
    try:
        validate(cfg, command=command)
    except ConfigError as e:
        if not swept:
            raise
        raise ConfigError(f"{e} (in the sweep job {' '.join(swept)})") from None


def same_data_config(cfg: DictConfig, task: Task, name: str,
                     steps: int) -> tuple[TransformerConfig, TrainConfig]:
    """The model and training configs of :func:`same_data_policy`: ``conf/policy/<name>.yaml``
    on the main policy's data stream (same batch and seed) for ``steps`` optimiser steps,
    without early stopping."""
    path = policy_file(name, "policy config")
    mcfg = policy_config(OmegaConf.create({"policy": OmegaConf.load(path)}), task)
    if int(steps) < 1:
        raise ConfigError(f"reward.base_steps must be a positive integer, got {steps}")
    tcfg = train_config(OmegaConf.merge(cfg.train, {"steps": int(steps), "stop_accuracy": 1.01}))
    return mcfg, tcfg


def same_data_policy(cfg: DictConfig, task: Task, policy, name: str, *, steps: int | None = None,
                     progress: bool = True, label: str | None = None):
    """The policy config ``conf/policy/<name>.yaml`` trained on the main policy's data stream
    (same batch and seed) for ``steps`` optimiser steps (default: as many as the main policy:
    equal pretraining tokens), without early stopping. Trained on first use and cached like any
    policy; ``label`` names it in logs and progress bars. Returns the loaded model."""
    from ttc.train import get_policy

    if steps is None:
        steps = int(policy.meta.get("train", {}).get("steps_run", cfg.train.steps))
    mcfg, tcfg = same_data_config(cfg, task, name, steps)
    return get_policy(task, mcfg, tcfg, cache_dir=cfg.cache_dir, progress=progress,
                      label=label or f"{name} policy (same data)")


def as_path(p: str | None) -> Path | None:
    return None if p in (None, "", "null") else Path(p)
