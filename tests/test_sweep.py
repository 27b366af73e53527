"""Cluster sweeps: ``scripts/sweep.sh`` with the local parallel launcher (submitit) runs a
multirun whose jobs share one results store and overlap in cells; every cell is computed and
written once, and the merged store is re-plotted to one ``frontier.csv`` and ``pareto.png``.
The SLURM preset is checked up to the ``sbatch`` script it submits (no cluster here)."""

import collections
import csv
import json
import os
import pickle
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from test_run import TINY

from ttc.cli.common import CONF_DIR, VERSION_BASE
from ttc.cli.train import run as train
from ttc.plots import frontier_rows

ROOT = Path(__file__).resolve().parent.parent
# a verifier-free method only (no reward model to train): 3 cells per seed, one sampler
METHODS = "methods=[{name:majority}]"
# four jobs, each seed in two of them: the cell claims decide which job computes a cell
POINTS = ("[0,1]", "[1,2]", "[2,3]", "[3,0]")
SEEDS = "seeds=" + ",".join(POINTS)
JOBS = 4


def _env() -> dict[str, str]:
    """This interpreter's console scripts (``ttc-run``) first on PATH."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def _sweep(tmp_path: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(ROOT / "scripts" / "sweep.sh"), *args], cwd=tmp_path,
                          env=_env(), capture_output=True, text=True, timeout=timeout)


def test_local_parallel_sweep_fills_one_store(tmp_path, capsys):
    store = tmp_path / "store"
    args = [*TINY, METHODS, f"cache_dir={tmp_path}/ckpt", f"out_dir={store}",
            "compilation_cache=false"]
    with initialize_config_dir(config_dir=CONF_DIR, **VERSION_BASE):
        train(compose("config", overrides=args))   # the policy, cached for the jobs
    capsys.readouterr()
    t0 = time.time()
    res = _sweep(tmp_path, "--launcher", "local", "--jobs", str(JOBS), "sweep", *args, SEEDS,
                 "host_devices=1")
    wall = time.time() - t0
    assert res.returncode == 0, (res.stdout[-3000:], res.stderr[-3000:])

    # the jobs ran through submitit, as separate processes, and every one of them succeeded
    from hydra.core.utils import JobStatus

    results = sorted((store / "multirun" / ".submitit").glob("*/*_result.pkl"))
    assert len(results) == JOBS, results
    outcomes = [pickle.loads(p.read_bytes()) for p in results]
    assert all(kind == "success" and ret.status == JobStatus.COMPLETED
               for kind, ret in outcomes), outcomes
    assert len({p.parent.name for p in results}) == JOBS   # one submitit job (pid) per sweep job
    assert sorted(o for _, ret in outcomes for o in ret.overrides if o.startswith("seeds=")) \
        == sorted(f"seeds={p}" for p in POINTS)

    # every cell exactly once, though each seed was asked for by two jobs
    lines = (store / "results.jsonl").read_text().splitlines()
    records = [json.loads(x) for x in lines]
    keys = collections.Counter(r["key"] for r in records)
    cells = 4 * 3   # seeds 0-3 × majority at N=1,2,4
    assert len(keys) == cells and max(keys.values()) == 1, keys
    assert {(r["method"], r["budget"], r["seed"]) for r in records} == {
        ("majority", b, s) for s in range(4) for b in (1, 2, 4)}
    assert not (store / "results.jsonl.rejected").exists()
    logs = [p.read_text() for p in (store / "multirun" / ".submitit").glob("*/*_log.out")]
    new = [int(m.group(1)) for log in logs for m in re.finditer(r"(\d+) new record\(s\)", log)]
    assert len(new) == JOBS and sum(new) == cells, new   # each cell computed by one job only

    # one merged frontier.csv and pareto.png over the whole store
    assert "wrote" in res.stdout and f"({cells} records)" in res.stdout
    assert (store / "pareto.png").stat().st_size > 1000
    with open(store / "frontier.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    want = frontier_rows(records)
    assert rows and sorted((r["method"], int(r["budget"]), int(r["seed"])) for r in rows) == \
        sorted((r["method"], r["budget"], r["seed"]) for r in want)
    assert sorted(p.name for p in store.iterdir() if p.suffix in (".csv", ".png")) == [
        "frontier.csv", "pareto.png"]
    print(f"\n{JOBS} local parallel jobs (submitit), seeds overlapping: {len(lines)} records for "
          f"{cells} cells, new records per job {sorted(new)}, {wall:.0f}s for the sweep")


def test_sweep_point_mistake_stops_before_any_job(tmp_path):
    store = tmp_path / "store"
    res = _sweep(tmp_path, "--launcher", "local", "bad", f"out_dir={store}",
                 "seeds=[0,1],[1,-2]", timeout=120)
    assert res.returncode == 2, res.stderr[-3000:]
    assert "seeds must be non-negative integers" in res.stderr
    assert "in the sweep job seeds=[1,-2]" in res.stderr
    assert "Traceback" not in res.stderr
    assert not store.exists()   # no job started, not even Hydra's sweep directory


def test_sweep_rejects_an_unknown_launcher(tmp_path):
    res = _sweep(tmp_path, "--launcher", "ray", "x", timeout=60)
    assert res.returncode == 2 and "--launcher must be basic, local or slurm" in res.stderr


def _hydra_cfg(tmp_path: Path, *overrides: str):
    with initialize_config_dir(config_dir=CONF_DIR, **VERSION_BASE):
        return compose("config", overrides=[f"out_dir={tmp_path}/store", *overrides],
                       return_hydra_config=True)


def test_launcher_presets_pass_precheck_and_the_schema(tmp_path):
    from ttc.cli.common import precheck
    from ttc.cli.schema import validate

    for preset, target in (("local", "LocalLauncher"), ("slurm", "SlurmLauncher")):
        overrides = [f"hydra/launcher={preset}", "hydra.launcher.timeout_min=30",
                     "hydra.sweeper.max_batch_size=2"]
        cfg = _hydra_cfg(tmp_path, *overrides)
        assert cfg.hydra.launcher.timeout_min == 30
        assert cfg.hydra.launcher._target_.endswith(target)
        with initialize_config_dir(config_dir=CONF_DIR, **VERSION_BASE):
            validate(compose("config", overrides=overrides))   # the job's config, as Hydra's
        precheck(["-m", *overrides, "seeds=[0],[1]"], "run")   # returns: nothing to report
        with pytest.raises(SystemExit) as stop:   # while a mistake in one point is reported
            precheck(["-m", *overrides, "seeds=[0],[1]", "eval.top_p=0.5,2.0"], "run")
        assert stop.value.code == 2
    assert not (tmp_path / "store").exists()


class _Submitted(Exception):
    """Raised in place of running ``sbatch``."""


def test_slurm_preset_submits_one_job_array(tmp_path, monkeypatch):
    """The preset through hydra-submitit-launcher's own SlurmLauncher, up to the ``sbatch``
    script it would submit (no cluster here: ``srun``/``sbatch`` are stubbed)."""
    from hydra.utils import instantiate
    from submitit.slurm.slurm import SlurmExecutor

    scripts = []

    def fake_sbatch(self, path: Path) -> list[str]:
        scripts.append(Path(path).read_text())
        raise _Submitted

    monkeypatch.setattr(SlurmExecutor, "affinity", classmethod(lambda cls: 1))
    monkeypatch.setattr(SlurmExecutor, "_make_submission_command", fake_sbatch)
    cfg = _hydra_cfg(tmp_path, "hydra/launcher=slurm", "hydra.launcher.partition=gpu",
                     "hydra.launcher.gpus_per_task=2", "hydra.launcher.array_parallelism=3")
    launcher = instantiate(cfg.hydra.launcher)   # as Hydra does
    launcher.setup(hydra_context=None, task_function=None, config=cfg)
    try:
        launcher.launch([[f"seeds=[{s}]"] for s in range(4)], initial_job_idx=0)
    except _Submitted:
        pass
    (script,) = scripts
    for line in ("--partition=gpu", "--gpus-per-task=2", "--time=240", "--cpus-per-task=8",
                 "--mem=64GB", "--nodes=1", "--ntasks-per-node=1", "--array=0-3%3"):
        assert f"#SBATCH {line}\n" in script, (line, script)
    assert f"{tmp_path}/store/multirun/.submitit/" in script
