"""Several processes in one run: JAX's distributed runtime, the work split and the end barrier.

One ``ttc-run`` may span several processes (hosts of a SLURM allocation, workers of a TPU pod
slice, or processes started by hand with a coordinator address). Each calls
``jax.distributed.initialize`` before any JAX computation (:func:`initialize`), so the
runtime knows the job's processes; each then runs the whole main job on its *own* devices
(``jax.local_devices()``: its ``policy.mesh`` / ``reward.mesh`` are meshes of local devices).

The work is split by cell: every process walks the same cell list and computes only the cells
it claims in the shared results store (:meth:`ttc.results.ResultsStore.claim`, a ``flock``
per cell, so the store must live on a file system shared by the processes with POSIX locks, as
NFSv4, Lustre and GPFS provide). A cell's record depends only on the cell (each sample has its
own key), so the records are those of one process, and no collective ever runs inside a
sampler's loop, whose trip count differs between processes (the documented hang of
multi-controller JAX). The one synchronisation is :func:`barrier` at the end, through the
coordinator's key-value service (no device collective, so no collective timeout however long
the last cell takes), after which the first process writes ``frontier.csv`` and
``pareto.png`` of the merged store.

Models are trained by one process (``ttc-train``) before a multi-process run: a
multi-process run reads cached checkpoints and refuses to train (:func:`require_single`).
"""

from __future__ import annotations

import dataclasses
import logging
import os

import jax

from ttc.errors import ConfigError

log = logging.getLogger(__name__)

MODES = ("auto", "on", "off")
"""``distributed.initialize``: ``auto`` (under a multi-task SLURM step, a multi-host TPU slice,
or when a coordinator address is given), ``on`` (always; JAX detects the cluster), ``off``."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class DistributedConfig:
    """How this process joins a multi-process run (the ``distributed`` config section).

    Attributes:
        initialize: ``auto`` | ``on`` | ``off`` (:data:`MODES`).
        coordinator: ``host:port`` of process 0's coordinator service; ``None`` lets JAX find
            it (SLURM, TPU pods, Open MPI).
        num_processes: processes in the run; ``None``: from the cluster environment.
        process_id: this process's index in ``0 .. num_processes - 1``; ``None``: from the
            cluster environment.
        barrier_timeout_s: how long the end barrier waits for the slowest process.
    """

    initialize: str = "auto"
    coordinator: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    barrier_timeout_s: int = 7 * 24 * 3600

    def __post_init__(self) -> None:
        if self.initialize not in MODES:
            raise ValueError(f"initialize must be one of {MODES}, got {self.initialize!r}")
        explicit = (self.num_processes, self.process_id)
        if any(v is not None for v in explicit) and self.coordinator is None:
            raise ValueError("num_processes and process_id need coordinator (host:port)")
        if self.coordinator is not None and None in explicit:
            raise ValueError("coordinator needs num_processes and process_id as well")
        if None not in explicit and not 0 <= self.process_id < self.num_processes:
            raise ValueError(f"process_id must be in [0, num_processes), got "
                             f"{self.process_id} of {self.num_processes}")


def cluster_detected(env: dict[str, str] | None = None) -> bool:
    """Whether this process is one of several tasks of a cluster job: a SLURM step with
    ``SLURM_NTASKS`` > 1 (one ``srun`` task per process), or a Cloud TPU slice with more than
    one worker host (``TPU_WORKER_HOSTNAMES``). A single-task SLURM job (one job of a sweep
    array) is not."""
    env = os.environ if env is None else env
    if env.get("SLURM_STEP_ID") is not None and int(env.get("SLURM_NTASKS", "1") or 1) > 1:
        return True
    return len([h for h in env.get("TPU_WORKER_HOSTNAMES", "").split(",") if h]) > 1


def wanted(cfg: DistributedConfig, env: dict[str, str] | None = None) -> bool:
    """Whether :func:`initialize` joins a multi-process run under ``cfg``."""
    if cfg.initialize == "off":
        return False
    return cfg.initialize == "on" or cfg.coordinator is not None or cluster_detected(env)


def initialize(cfg: DistributedConfig) -> tuple[int, int]:
    """Joins the run's processes (``jax.distributed.initialize``) if :func:`wanted`; returns
    ``(process_index, process_count)``. Call it before any JAX computation. Cross-process
    collectives of the CPU backend use gloo (the only one that needs no MPI)."""
    if not wanted(cfg) or jax.distributed.is_initialized():
        return jax.process_index(), jax.process_count()
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    kwargs = {}
    if cfg.coordinator is not None:
        kwargs = {"coordinator_address": cfg.coordinator, "num_processes": cfg.num_processes,
                  "process_id": cfg.process_id}
    jax.distributed.initialize(**kwargs)
    log.info("process %d of %d (%d local device(s))", jax.process_index(),
             jax.process_count(), jax.local_device_count())
    return jax.process_index(), jax.process_count()


def is_primary() -> bool:
    """Whether this is process 0 (the one that writes the run's merged outputs)."""
    return jax.process_index() == 0


def barrier(name: str, timeout_s: int = 7 * 24 * 3600) -> None:
    """Waits until every process of the run reaches ``barrier(name)``; a no-op for one
    process. It uses the coordinator's key-value barrier, not a device collective, so it holds
    however long the slowest process takes (up to ``timeout_s``)."""
    if jax.process_count() == 1:
        return
    from jax._src import distributed

    client = distributed.global_state.client
    if client is None:  # not started by jax.distributed.initialize
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)
        return
    client.wait_at_barrier(name, timeout_s * 1000)


def require_single(what: str, path: object) -> None:
    """Refuses to train ``what`` (to be cached at ``path``) in a multi-process run: the
    processes would each train and save it. Raises a :class:`ConfigError` saying to train it
    first in one process."""
    if jax.process_count() > 1:
        raise ConfigError(
            f"{what} is not cached at {path}, and a multi-process run (process "
            f"{jax.process_index()} of {jax.process_count()}) evaluates cached models only: "
            "train the models first in one process with `ttc-train` and the same overrides "
            "(or a single-process `ttc-run`), then start the multi-process run")
