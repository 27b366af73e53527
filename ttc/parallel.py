"""Data parallelism of the samplers over local devices (a CPU host split into one device per core).

Why: on a CPU, XLA runs every op of these small models on *one* thread. A profile of the decode
loop at d=256, B=256 (``--xla_cpu_enable_xprof_traceme``) shows each matmul and attention op on
one of the two Eigen threads, never split across both. A one-device JAX process therefore
leaves a core idle during the decode loops, while PyTorch splits each op over its threads. The
fix follows the accelerator recipe: expose the host as ``k`` CPU devices (``jax_num_cpu_devices``,
one per usable core) and shard *independent problems* over them with ``jax.shard_map``. Each
device then runs its own ``while_loop`` on its share of the rows, with no collectives and no
lockstep.

The same code path shards over GPUs or TPU cores when there are several, and is a no-op with
one device. :func:`ttc.decode.generate_solutions` uses it. Its samples do not depend on the
device count, since each sample has its own key.

The cost: every device holds its own copy of the parameters and reads all of them at every
decode step. That is negligible for the default world's models (0.1M parameters), but it is
a loss where reading the weights dominates a step, as for a 100M-parameter model decoding a few
rows (measured by ``scripts/bench.py``, docs/BENCHMARKS.md). Use ``host_devices=1`` for such
models on a CPU.

Conventions: the mesh has one axis, :data:`ROWS`; arrays sharded on it are split along their
leading (problem) axis into equal contiguous blocks, in device order.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import threading
from collections.abc import Callable, Collection, Iterator, Sequence
from typing import TypeVar

import jax
from jax.sharding import Mesh, PartitionSpec

log = logging.getLogger(__name__)

T = TypeVar("T")

ROWS = "rows"
"""Name of the mesh axis that problems (and their sample rows) are sharded over."""


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, not the machine's core count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def configure_host_devices(n: int | str | None = "auto") -> int:
    """Splits the CPU into ``n`` JAX devices (``'auto'``: one per usable core); returns the
    number of devices the samplers will shard over.

    It must run before JAX initialises its backends (the first computation or
    ``jax.devices()`` call). After that, the split is fixed: a different request is logged and
    ignored. ``n=1`` (or ``None``) keeps one CPU device. A count the user set already
    (``--xla_force_host_platform_device_count`` in ``XLA_FLAGS``, or ``JAX_NUM_CPU_DEVICES``)
    takes precedence over ``'auto'``.
    Only the CPU platform is split: on a GPU or TPU host the samplers use the accelerators.

    Raises:
        ValueError: ``n`` is neither ``'auto'`` nor a positive integer.
    """
    if n is None:
        n = 1
    if n == "auto":
        if ("xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", "")
                or "JAX_NUM_CPU_DEVICES" in os.environ):
            return sampler_devices()
        want = usable_cores()
    else:
        ok = (isinstance(n, int) and not isinstance(n, bool)) or str(n).strip().isdigit()
        want = int(n) if ok else 0
        if want < 1:
            raise ValueError(f"host_devices must be 'auto' or a positive integer, got {n!r}")
    from jax._src import xla_bridge

    if xla_bridge.backends_are_initialized():
        have = jax.local_device_count("cpu")
        if have != want:
            log.warning("JAX is already initialised with %d CPU device(s); host_devices=%s "
                        "ignored (set it before the first computation)", have, n)
        return sampler_devices()
    jax.config.update("jax_num_cpu_devices", want)
    return sampler_devices()


_pin = threading.local()


@contextlib.contextmanager
def pinned(device: jax.Device | None = None) -> Iterator[jax.Device]:
    """Runs this thread's JAX work on ``device`` alone (default: the first local device): it
    becomes the thread's default device and :func:`sampler_devices` reports 1, so the samplers
    do not shard. Thread-local; nests."""
    dev = device if device is not None else jax.local_devices()[0]
    prev = getattr(_pin, "device", None)
    _pin.device = dev
    try:
        with jax.default_device(dev):
            yield dev
    finally:
        _pin.device = prev


def sampler_devices() -> int:
    """Devices of JAX's default backend that the samplers shard problems over (1 inside
    :func:`pinned`)."""
    if getattr(_pin, "device", None) is not None:
        return 1
    return jax.local_device_count()


def row_mesh(devices: int) -> Mesh:
    """A one-axis (:data:`ROWS`) mesh over the first ``devices`` devices of the default backend."""
    have = jax.local_devices()
    if not 1 <= devices <= len(have):
        raise ValueError(f"devices={devices}, but this process has {len(have)} device(s)")
    return jax.make_mesh((devices,), (ROWS,), axis_types=(jax.sharding.AxisType.Auto,),
                         devices=have[:devices])


def resolve_devices(devices: int | None) -> int:
    """``devices`` checked against this process (``None``: all of :func:`sampler_devices`)."""
    have = sampler_devices()
    if devices is None:
        return have
    if not 1 <= int(devices) <= have:
        raise ValueError(f"devices={devices}, but this process has {have} device(s)")
    return int(devices)


def over_rows(fn: Callable, devices: int, *, split: Collection[str] = ()) -> Callable:
    """``fn`` run on ``devices`` devices side by side.

    Args:
        fn: the per-device function, called with positional arguments only (a
            ``functools.partial`` may bind leading and keyword arguments: they are not counted).
        devices: how many devices; ``fn`` itself is returned when it is 1.
        split: names of ``fn``'s positional parameters whose arguments are cut along their
            leading axis into one equal block per device; every other argument is replicated.

    Returns:
        A traceable function of the same positional arguments whose every output is
        concatenated along its leading axis over the devices (so a per-device scalar must be
        returned as ``[1]``).

    Raises:
        ValueError: a name in ``split`` is not a positional parameter of ``fn``.
    """
    spec = _row_specs(fn, split)
    if devices == 1:
        return fn
    return jax.shard_map(fn, mesh=row_mesh(devices), in_specs=spec,
                         out_specs=PartitionSpec(ROWS), check_vma=False)


def _row_specs(fn: Callable, split: Collection[str]) -> tuple[PartitionSpec, ...]:
    """One ``PartitionSpec`` per positional parameter of ``fn``: :data:`ROWS` for those named in
    ``split``, replicated for the others."""
    if isinstance(split, str):
        raise TypeError(f"split must be a collection of parameter names, got the string {split!r}")
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    names = [p.name for p in inspect.signature(fn).parameters.values() if p.kind in kinds]
    unknown = sorted(set(split) - set(names))
    if unknown:
        raise ValueError(f"split names {unknown}, but the positional parameters of "
                         f"{getattr(fn, '__name__', fn)!r} are {names}")
    return tuple(PartitionSpec(ROWS) if n in split else PartitionSpec() for n in names)


def fetch(tree: T) -> T:
    """``jax.device_get(tree)`` after ``jax.block_until_ready(tree)``: the samplers' and
    searches' one way of bringing a (possibly sharded) result to the host."""
    return jax.device_get(jax.block_until_ready(tree))


def device_groups(items: Sequence[T], devices: int) -> Iterator[tuple[list[T], list[T]]]:
    """Consecutive groups of ``devices`` items, one per device of an :func:`over_rows` call:
    ``(group, padded)``, ``padded`` filled up to ``devices`` items by repeating the group's last
    (the spare devices redo its work; callers charge it to that item)."""
    for first in range(0, len(items), devices):
        group = list(items[first:first + devices])
        yield group, group + [group[-1]] * (devices - len(group))


def side_by_side(jobs: Sequence[Callable[[], T]], devices: int | None = None) -> list[T]:
    """Runs independent ``jobs`` at once, one thread per device, each thread :func:`pinned` to
    its device and taking the next job when it finishes one; returns their results in order.

    This is task parallelism for work that a single device does not spread over the cores, such
    as training two small models: XLA:CPU runs most ops of these models on one thread (see the
    module docstring). A training step of the default policy already keeps part of the second
    core busy, so two at once gain less than 2x (``scripts/bench.py --sections train``).

    A job computes exactly what it computes alone: the same programs run on a device of the same
    kind, with their samplers unsharded (:func:`pinned`), and the samplers' results do not
    depend on the device count (``tests/test_parallel.py`` checks training bit-for-bit). With
    one device or one job, the jobs run in turn in this thread, unpinned.

    Arrays a job returns live on its thread's device. A caller that mixes them with other
    devices' work moves them first (for a model, :meth:`ttc.checkpoint.LoadedModel.on_host`).

    If jobs fail, the first failure (in job order) is raised once every job has ended; a
    ``KeyboardInterrupt`` is raised at once (the threads are daemons, and the trainers'
    resume snapshots keep what they had done).
    """
    d = resolve_devices(devices)
    if d == 1 or len(jobs) < 2:
        return [job() for job in jobs]
    results: list = [None] * len(jobs)
    errors: list[BaseException | None] = [None] * len(jobs)
    queue = iter(range(len(jobs)))
    lock = threading.Lock()

    def worker(device: jax.Device) -> None:
        with pinned(device):
            while True:
                with lock:
                    i = next(queue, None)
                if i is None:
                    return
                try:
                    results[i] = jobs[i]()
                except BaseException as e:  # re-raised in the caller's thread
                    errors[i] = e

    threads = [threading.Thread(target=worker, args=(dev,), daemon=True,
                                name=f"ttc-side-by-side-{dev.id}")
               for dev in jax.local_devices()[:min(d, len(jobs))]]
    for t in threads:
        t.start()
    for t in threads:
        while t.is_alive():
            t.join(0.2)
    for e in errors:
        if e is not None:
            raise e
    return results
