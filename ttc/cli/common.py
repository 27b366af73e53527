"""Config → objects, shared by the Hydra entry points; config mistakes become ConfigError."""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ttc.errors import ConfigError
from ttc.models.transformer import TransformerConfig
from ttc.tasks import make_task
from ttc.tasks.base import Task
from ttc.train import TrainConfig

log = logging.getLogger("ttc")
for _noisy in ("absl", "jax._src.xla_bridge", "orbax"):  # INFO chatter of dependencies
    logging.getLogger(_noisy).setLevel(logging.WARNING)



def _conf_dir() -> Path:
    """The Hydra config directory: ``ttc/conf`` inside an installed wheel, else the source
    checkout's top-level ``conf/`` (an editable install or a plain checkout). Absolute, so the
    console scripts find it from any working directory."""
    pkg = Path(__file__).resolve().parent.parent
    for candidate in (pkg / "conf", pkg.parent / "conf"):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise RuntimeError(f"ttc's Hydra configs are missing: neither {pkg / 'conf'} nor "
                       f"{pkg.parent / 'conf'} holds config.yaml; reinstall ttc")


CONF_DIR = str(_conf_dir())


def build_task(cfg: DictConfig) -> Task:
    try:
        return make_task(**OmegaConf.to_container(cfg.task, resolve=True))
    except (TypeError, ValueError) as e:
        raise ConfigError(f"task: {e}") from None


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


def hydra_entry(run: Callable[[DictConfig], None]) -> Callable[[], None]:
    """A console-script entry point running ``run`` on the composed ``conf/config.yaml``."""
    import hydra

    @hydra.main(version_base=None, config_path=CONF_DIR, config_name="config")
    def _main(cfg: DictConfig) -> None:
        run(cfg)

    return _main


def same_data_config(cfg: DictConfig, task: Task, name: str,
                     steps: int) -> tuple[TransformerConfig, TrainConfig]:
    """The model and training configs of :func:`same_data_policy`: ``conf/policy/<name>.yaml``
    on the main policy's data stream (same batch and seed) for ``steps`` optimiser steps,
    without early stopping."""
    path = Path(CONF_DIR) / "policy" / f"{name}.yaml"
    if not path.exists():
        choices = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise ConfigError(f"no policy config {name!r}; choose one of {choices}")
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
