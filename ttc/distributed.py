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
multi-controller JAX). Checkpoints are restored by each process on its own (no orbax barrier).
The one synchronisation is :func:`barrier` at the end, through the coordinator's key-value
service (no device collective, so no collective timeout however long the last cell takes),
after which the first process writes ``frontier.csv`` and ``pareto.png`` of the merged store.
A process whose evaluation fails waits at that barrier too, then raises, so the others finish
their cells; a process that stops before evaluating (a configuration error that only it sees)
ends the run, as JAX's coordination service stops the processes of a run that lost one.

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


WEEK_S = 7 * 24 * 3600
"""Default wait of the end barrier for the slowest process (seconds)."""


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
    barrier_timeout_s: int = WEEK_S

    def __post_init__(self) -> None:
        check_settings(self, "distributed")


def _host_port(text: str) -> bool:
    host, _, port = text.rpartition(":")
    return bool(host) and port.isdigit() and 0 < int(port) < 65536


def check_settings(cfg: DistributedConfig, path: str) -> None:
    """Checks that ``cfg``'s settings go together (keys named under ``path``).

    Raises:
        ValueError: naming the keys, their values and what is allowed.
    """
    if cfg.initialize not in MODES:
        raise ValueError(f"{path}.initialize must be one of {MODES}, got {cfg.initialize!r}")
    explicit = {"num_processes": cfg.num_processes, "process_id": cfg.process_id}
    if cfg.coordinator is None:
        if any(v is not None for v in explicit.values()):
            raise ValueError(f"{path}.num_processes and {path}.process_id go with "
                             f"{path}.coordinator (host:port of process 0), which is null; "
                             f"got {explicit}")
        return
    if cfg.initialize == "off":
        raise ValueError(f"{path}.coordinator={cfg.coordinator!r} asks for a multi-process "
                         f"run, but {path}.initialize=off; set {path}.initialize=auto (or on)")
    if not _host_port(cfg.coordinator):
        raise ValueError(f"{path}.coordinator must be host:port (e.g. 10.0.0.1:1234), got "
                         f"{cfg.coordinator!r}")
    missing = [f"{path}.{k}" for k, v in explicit.items() if v is None]
    if missing:
        raise ValueError(f"{path}.coordinator={cfg.coordinator!r} needs "
                         f"{' and '.join(missing)} as well")
    if cfg.process_id >= cfg.num_processes:
        raise ValueError(f"{path}.process_id must be in [0, {path}.num_processes="
                         f"{cfg.num_processes}), got {cfg.process_id}")


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


def processes() -> tuple[int, int]:
    """``(process_index, process_count)`` of this run, without starting JAX's backends (so
    that ``host_devices`` can still split the CPU afterwards): ``(0, 1)`` unless
    :func:`initialize` joined a multi-process run."""
    from jax._src import distributed

    state = distributed.global_state
    if state.client is None:
        return 0, 1
    return int(state.process_id), int(state.num_processes)


def initialize(cfg: DistributedConfig) -> tuple[int, int]:
    """Joins the run's processes (``jax.distributed.initialize``) if :func:`wanted`; returns
    :func:`processes`. Call it before any JAX computation; it starts no backend. Cross-process
    collectives of the CPU backend use gloo (the only one that needs no MPI).

    Raises:
        ConfigError: JAX cannot join the run (no cluster found for ``initialize=on``, an
            unreachable coordinator), naming the ``distributed`` settings.
    """
    if not wanted(cfg) or jax.distributed.is_initialized():
        return processes()
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    kwargs = {}
    if cfg.coordinator is not None:
        kwargs = {"coordinator_address": cfg.coordinator, "num_processes": cfg.num_processes,
                  "process_id": cfg.process_id}
    try:
        jax.distributed.initialize(**kwargs)
    except (ValueError, RuntimeError) as e:  # XlaRuntimeError is a RuntimeError
        raise ConfigError(
            f"distributed: cannot join a multi-process run with initialize={cfg.initialize}, "
            f"coordinator={cfg.coordinator}, num_processes={cfg.num_processes}, process_id="
            f"{cfg.process_id} ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else e}); "
            "set distributed.coordinator, distributed.num_processes and "
            "distributed.process_id, or distributed.initialize=off for one process") from None
    process, count = processes()
    log.info("process %d of %d", process, count)
    return process, count


def is_primary() -> bool:
    """Whether this is process 0 (the one that writes the run's merged outputs)."""
    return processes()[0] == 0


_passed: dict[str, int] = {}  # barriers of each name this process has passed


def barrier(name: str, timeout_s: int = WEEK_S) -> None:
    """Waits until every process of the run reaches ``barrier(name)``; a no-op for one
    process. It uses the coordinator's key-value barrier, not a device collective, so it holds
    however long the slowest process takes (up to ``timeout_s``). The k-th call with a name
    meets the other processes' k-th call with it (as in a multirun of several jobs)."""
    from jax._src import distributed

    client = distributed.global_state.client
    if client is None:  # one process
        return
    k = _passed.get(name, 0)
    _passed[name] = k + 1
    client.wait_at_barrier(f"{name}/{k}", timeout_s * 1000)


def require_single(what: str, path: object) -> None:
    """Refuses to train ``what`` (to be cached at ``path``) in a multi-process run: the
    processes would each train and save it. Raises a :class:`ConfigError` saying to train it
    first in one process."""
    process, count = processes()
    if count > 1:
        raise ConfigError(
            f"{what} is not cached at {path}, and a multi-process run (process "
            f"{process} of {count}) evaluates cached models only: "
            "train the models first in one process with `ttc-train` and the same overrides "
            "(or a single-process `ttc-run`), then start the multi-process run")
