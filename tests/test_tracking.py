"""The wandb mirror (``logger=wandb``): one wandb run per job, named after the job of a Hydra
multirun, and one group per sweep; offline unless told otherwise."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from test_run import TINY

from ttc.cli.common import CONF_DIR, VERSION_BASE
from ttc.tracking import WandbMirror, job_name


def _compose(*overrides: str, hydra: bool = False):
    with initialize_config_dir(config_dir=CONF_DIR, **VERSION_BASE):
        return compose("config", overrides=list(overrides), return_hydra_config=hydra)


@pytest.fixture
def hydra_job():
    """Makes this process look like one job of a Hydra app: ``set_job(mode, num)``."""

    def set_job(mode: str, num: int) -> None:
        HydraConfig.instance().set_config(
            _compose(f"hydra.mode={mode}", f"hydra.job.num={num}", hydra=True))

    HydraConfig.instance().cfg = None   # not a Hydra app until set_job
    yield set_job
    HydraConfig.instance().cfg = None


def test_job_name_is_the_run_name_plus_the_job_number_in_a_multirun(hydra_job):
    assert job_name("sweep") == "sweep"   # no Hydra app (a config made with compose)
    hydra_job("RUN", 0)
    assert job_name("sweep") == "sweep"
    hydra_job("MULTIRUN", 3)
    assert job_name("sweep") == "sweep-3"


class _Stop(Exception):
    """Raised by the stubbed ``wandb.init``: the job stops there."""


@pytest.mark.parametrize(("extra", "group"), [([], "swp"), (["logger.group=paper-v2"], "paper-v2"),
                                              (["logger.group=null"], "swp")])
def test_run_gives_wandb_the_sweep_group_and_the_job_name(tmp_path, monkeypatch, hydra_job,
                                                          extra, group):
    import wandb

    from ttc.cli.run import run

    seen = {}

    def init(**kwargs):
        seen.update(kwargs)
        raise _Stop

    monkeypatch.setattr(wandb, "init", init)
    cfg = _compose(*TINY, "logger=wandb", "name=swp", f"out_dir={tmp_path}/run",
                   f"cache_dir={tmp_path}/ckpt", "compilation_cache=false", *extra)
    assert cfg.logger.group == (None if "logger.group=null" in extra else group)
    hydra_job("MULTIRUN", 2)
    with pytest.raises(_Stop):
        run(cfg)
    assert seen["name"] == "swp-2" and seen["group"] == group
    assert seen["mode"] == "offline" and seen["project"] == "ttc"
    assert seen["dir"] == str(tmp_path / "run") and seen["config"]["name"] == "swp"


def test_offline_mirror_writes_a_grouped_run(tmp_path):
    mirror = WandbMirror(project="ttc", name="swp-1", run_dir=tmp_path, config={"name": "swp"},
                         mode="offline", group="swp")   # explicit: CI sets WANDB_MODE=disabled
    assert (mirror.run.name, mirror.run.group) == ("swp-1", "swp")
    mirror({"method": "majority", "budget": 4, "accuracy": 0.5, "config": {}})
    mirror.finish()
    (run_dir,) = (tmp_path / "wandb").glob("offline-run-*")
    assert Path(run_dir, f"run-{run_dir.name.rsplit('-', 1)[1]}.wandb").stat().st_size > 0
