"""The one-process side of ``ttc.distributed``: when a run joins several processes, and what a
process that has not joined reports (the two-process runs are in tests/test_scale_out.py)."""

import pytest

from ttc import distributed as D
from ttc.errors import ConfigError


@pytest.mark.parametrize(("env", "several"), [
    ({}, False),
    ({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "1", "SLURM_STEP_ID": "0"}, False),  # a sweep job
    ({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "4"}, False),   # the batch script, not an srun step
    ({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "4", "SLURM_STEP_ID": "0"}, True),
    ({"TPU_WORKER_HOSTNAMES": "t0"}, False),
    ({"TPU_WORKER_HOSTNAMES": "t0,t1,t2,t3"}, True),
])
def test_cluster_detected(env, several):
    assert D.cluster_detected(env) is several
    assert D.wanted(D.DistributedConfig(), env) is several
    assert D.wanted(D.DistributedConfig(initialize="off"), env) is False
    assert D.wanted(D.DistributedConfig(initialize="on"), env) is True


def test_a_coordinator_asks_for_several_processes():
    cfg = D.DistributedConfig(coordinator="h:1", num_processes=2, process_id=1)
    assert D.wanted(cfg, {}) is True


@pytest.mark.parametrize(("kwargs", "key"), [
    ({"initialize": "sometimes"}, "distributed.initialize"),
    ({"process_id": 0}, "distributed.coordinator"),
    ({"coordinator": "h:1", "num_processes": 2}, "distributed.process_id"),
    ({"coordinator": "h", "num_processes": 2, "process_id": 0}, "distributed.coordinator"),
    ({"coordinator": "h:1", "num_processes": 2, "process_id": 2}, "distributed.process_id"),
    ({"initialize": "off", "coordinator": "h:1", "num_processes": 2, "process_id": 0},
     "distributed.initialize"),
])
def test_settings_that_do_not_go_together(kwargs, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        D.DistributedConfig(**kwargs)


def test_one_process_is_primary_passes_barriers_and_may_train():
    assert D.processes() == (0, 1)
    assert D.is_primary()
    D.barrier("nobody-else")  # a no-op: returns at once
    D.require_single("the policy", "/nowhere")  # one process may train
    assert D.initialize(D.DistributedConfig(initialize="off")) == (0, 1)


def test_multi_process_runs_refuse_to_train(monkeypatch):
    monkeypatch.setattr(D, "processes", lambda: (1, 2))
    assert not D.is_primary()
    with pytest.raises(ConfigError, match="ttc-train"):
        D.require_single("the policy", "/nowhere")
