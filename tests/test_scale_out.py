"""The main job scaled out: on device meshes set in the config (``policy.mesh`` /
``reward.mesh``, 8 CPU devices) and split over two processes joined by
``jax.distributed`` (CPU collectives through gloo, on localhost), it writes the records that
one process on one device writes."""

from __future__ import annotations

import collections
import json
import os
import re
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from test_run import TINY

from ttc.cli.common import CONF_DIR, VERSION_BASE
from ttc.cli.train import run as train

# pool methods, one with the learned PRM, and step-level searches with the PRM and the oracle
METHODS = ("methods=[{name:single},{name:majority},{name:bon,reward:prm},"
           "{name:particle,label:pf_prm,reward:prm},"
           "{name:beam,label:beam_oracle,reward:oracle,beam_width:2}]")
SAME = ("accuracy", "per_problem", "tokens", "generations", "flops_useful", "by_difficulty")
"""Record fields that must not depend on the mesh or the number of processes (wall time and
executed FLOPs, padding included, do)."""


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> list[str]:
    """Overrides of a tiny run whose policy and PRM are trained and cached (in this process)."""
    tmp = tmp_path_factory.mktemp("scale")
    # trained enough to be right on some problems, so that the records' correctness says something
    args = [*TINY, "task.modulus=5", "train.steps=250", "train.batch_size=64",
            "train.eval_every=50", METHODS, "seeds=[0,1]", "search_budgets=[2,4]",
            f"cache_dir={tmp}/ckpt", "compilation_cache=false"]
    with initialize_config_dir(config_dir=CONF_DIR, **VERSION_BASE):
        train(compose("config", overrides=args))
    return args


def _env(devices: int | None) -> dict[str, str]:
    """The environment of a ``ttc-run`` subprocess: ``devices`` CPU devices forced through
    ``XLA_FLAGS``, or (``None``) none forced, so that ``host_devices`` splits the CPU."""
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_NUM_CPU_DEVICES")}
    env["JAX_PLATFORMS"] = "cpu"
    if devices is None:
        return env
    return {**env, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}


def _start(args: list[str], out_dir: Path, devices: int, *extra: str,
           force: bool = True) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "ttc.cli.run", *args, f"out_dir={out_dir}",
                             f"host_devices={devices}", *extra],
                            env=_env(devices if force else None),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _communicate(procs: list[subprocess.Popen], timeout: int) -> list[tuple[str, str]]:
    """Every process's ``(stdout, stderr)``, read at once (one blocked on a full pipe cannot
    stall the others); all of them are killed if one times out or the caller fails."""
    with ThreadPoolExecutor(len(procs)) as pool:
        try:
            return list(pool.map(lambda p: p.communicate(timeout=timeout), procs))
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()


def _finish(procs: list[subprocess.Popen]) -> list[str]:
    outs = _communicate(procs, 900)
    for p, (_out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-4000:]
    return [out for out, _ in outs]


def _records(out_dir: Path) -> dict[str, dict]:
    lines = (out_dir / "results.jsonl").read_text().splitlines()
    keys = collections.Counter(json.loads(x)["key"] for x in lines)
    assert max(keys.values()) == 1, "a cell recorded twice"
    return {r["key"]: r for r in map(json.loads, lines)}


def _assert_same_records(got: dict[str, dict], want: dict[str, dict]) -> None:
    assert sorted(got) == sorted(want)
    for key, rec in want.items():
        for f in SAME:
            assert got[key][f] == rec[f], (key, f)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_config_meshes_give_the_records_of_one_device(trained, tmp_path):
    ref, meshed = tmp_path / "ref", tmp_path / "meshed"
    _finish([_start(trained, ref, 1, "seeds=[0]")])  # one device
    # the policy on a 2x2 mesh (MLP split in two) on devices 0-3, the PRM on 1x4 on devices 4-7
    out = _finish([_start(trained, meshed, 8, "seeds=[0]", "policy.mesh.data=2",
                          "policy.mesh.model=2", "reward.mesh.data=1", "reward.mesh.model=4",
                          "reward.mesh.first=4")])
    want, got = _records(ref), _records(meshed)
    assert len(want) == 1 + 2 * 3 + 2 * 2  # single; majority, bon at N=1,2,4; searches at 2,4
    _assert_same_records(got, want)
    assert any(0 < r["accuracy"] < 1 for r in want.values())  # correctness is compared too
    assert "new record(s)" in out[0]
    assert (meshed / "frontier.csv").is_file() and (meshed / "pareto.png").is_file()


def test_mesh_larger_than_the_process_is_a_config_error(trained, tmp_path):
    # no device count forced: host_devices=3 itself splits the CPU (nothing starts JAX's
    # backends before it), and the message counts those 3
    proc = _start(trained, tmp_path / "run", 3, "policy.mesh.model=4", force=False)
    [(_out, err)] = _communicate([proc], 300)
    assert proc.returncode == 2, err[-2000:]
    assert "Traceback" not in err and "policy.mesh" in err and "host_devices=4" in err
    assert "this process has 3" in err
    assert not (tmp_path / "run" / "results.jsonl").exists()  # (Hydra made the run directory)


def test_two_processes_write_the_records_of_one(trained, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    _finish([_start(trained, one, 1)])
    port = _free_port()
    procs = [_start(trained, two, 1, f"distributed.coordinator=127.0.0.1:{port}",
                    "distributed.num_processes=2", f"distributed.process_id={i}")
             for i in range(2)]
    outs = _finish(procs)
    _assert_same_records(_records(two), _records(one))
    assert any(0 < r["accuracy"] < 1 for r in _records(one).values())
    new = [int(re.search(r"(\d+) new record\(s\)", out).group(1)) for out in outs]
    print(f"\ntwo processes: new records per process {new} of {len(_records(one))} cells")
    assert sum(new) == len(_records(one))  # (how they split depends on which claims first)
    assert "process 0 writes the merged outputs" in outs[1]
    frontier = (two / "frontier.csv").read_text().splitlines()
    assert frontier[0].startswith("method,budget") and len(frontier) > 1
    assert (two / "pareto.png").stat().st_size > 1000


def test_a_multi_process_run_refuses_to_train(tmp_path):
    port = _free_port()
    args = [*TINY, "methods=[{name:single}]", f"cache_dir={tmp_path}/ckpt",
            "compilation_cache=false", f"distributed.coordinator=127.0.0.1:{port}",
            "distributed.num_processes=2"]
    procs = [_start(args, tmp_path / "run", 1, f"distributed.process_id={i}") for i in range(2)]
    for p, (_out, err) in zip(procs, _communicate(procs, 300), strict=True):
        assert p.returncode == 2, err[-2000:]
        assert "Traceback" not in err and "ttc-train" in err
    assert not (tmp_path / "ckpt").exists() or not any((tmp_path / "ckpt").glob("policy-*"))
