"""Optional wandb mirror of the results store (offline by default; never needs network)."""

from __future__ import annotations

import os
from pathlib import Path


class WandbMirror:
    """Logs every record (flattened scalars) and, at the end, the Pareto plot to wandb."""

    def __init__(self, *, project: str, name: str, run_dir: Path, config: dict,
                 mode: str = "offline"):
        import wandb

        if mode not in ("offline", "online", "disabled"):
            from ttc.errors import ConfigError

            raise ConfigError(f"logger.mode must be offline|online|disabled, got {mode!r}")
        os.environ.setdefault("WANDB_SILENT", "true")
        self._wandb = wandb
        self.run = wandb.init(project=project, name=name, dir=str(run_dir), mode=mode,
                              config=config, reinit="finish_previous")

    def __call__(self, record: dict) -> None:
        flat = {k: v for k, v in record.items() if isinstance(v, int | float | bool)}
        flat["method"] = record["method"]
        self.run.log(flat)

    def finish(self, plot_path: Path | None = None) -> None:
        if plot_path is not None and plot_path.exists():
            self.run.log({"pareto": self._wandb.Image(str(plot_path))})
        self.run.finish()
