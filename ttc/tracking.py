"""Optional wandb mirror of the results store (offline by default; never needs network)."""

from __future__ import annotations

import os
from pathlib import Path


def job_name(name: str) -> str:
    """The wandb run name of this job: ``name`` itself, or ``<name>-<job number>`` in a Hydra
    multirun (one wandb run per job of a sweep; the sweep's jobs share one group).

    Args:
        name: the run name (``cfg.name``).

    Returns:
        The job's wandb run name; plain ``name`` outside a Hydra app (e.g. a config made with
        ``hydra.compose``).
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return name
    hc = HydraConfig.get()
    if hc.mode != RunMode.MULTIRUN or hc.job.get("num") is None:
        return name
    return f"{name}-{hc.job.num}"


class WandbMirror:
    """Logs every record (flattened scalars) and, at the end, the Pareto plot to wandb.

    Args:
        project: the wandb project.
        name: this run's name (:func:`job_name`: one run per job of a sweep).
        run_dir: the run directory; wandb writes under ``<run_dir>/wandb``.
        config: the resolved configuration, stored with the run.
        mode: ``offline`` (default: nothing leaves the machine), ``online`` or ``disabled``.
        group: the wandb group gathering the runs of one sweep (``None``: no group).
    """

    def __init__(self, *, project: str, name: str, run_dir: Path, config: dict,
                 mode: str = "offline", group: str | None = None):
        import wandb

        if mode not in ("offline", "online", "disabled"):
            from ttc.errors import ConfigError

            raise ConfigError(f"logger.mode must be offline|online|disabled, got {mode!r}")
        os.environ.setdefault("WANDB_SILENT", "true")
        self._wandb = wandb
        self.run = wandb.init(project=project, name=name, group=group,
                              dir=str(run_dir), mode=mode, config=config,
                              reinit="finish_previous")

    def __call__(self, record: dict) -> None:
        flat = {k: v for k, v in record.items() if isinstance(v, int | float | bool)}
        flat["method"] = record["method"]
        self.run.log(flat)

    def finish(self, plot_path: Path | None = None) -> None:
        if plot_path is not None and plot_path.exists():
            self.run.log({"pareto": self._wandb.Image(str(plot_path))})
        self.run.finish()
