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

Meshes: a :class:`Layout` names the devices one model's samplers run on, as a
``data x model`` mesh (``jax.sharding.Mesh`` with axes :data:`DATA` and :data:`MODEL`) over the
local devices ``first .. first + data * model - 1``. Problems are split over ``data`` (each
slice runs its own loop, as above, in a ``jax.shard_map`` manual over ``data`` only); the
parameters are split over ``model`` by their family's partition rules
(:func:`partition_specs`: attention heads and MLP hidden units, Megatron-style column/row
splits, Shoeybi et al. 2019, "Megatron-LM"), and XLA's SPMD partitioner (GSPMD) runs each
layer on its ``model`` devices, with the KV cache split like its heads. No collective crosses
``data``, so the slices' loops may run different numbers of iterations. The sampled tokens do
not depend on the layout (each sample has its own key); where a ``model`` split changes a
sum's order, logits differ in the last bits (tests/test_mesh.py checks both).

Conventions: arrays sharded on :data:`DATA` are split along their leading (problem) axis into
equal contiguous blocks, in device order.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import logging
import os
import re
import threading
from collections.abc import Callable, Collection, Iterator, Sequence
from typing import Any, TypeVar

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

log = logging.getLogger(__name__)

T = TypeVar("T")

DATA = "data"
"""Name of the mesh axis that problems (and their sample rows) are sharded over."""

MODEL = "model"
"""Name of the mesh axis that parameters are split over (tensor parallelism)."""


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


@dataclasses.dataclass(frozen=True, kw_only=True)
class Layout:
    """Where one model's samplers run: a ``data x model`` mesh over local devices
    ``first .. first + data * model - 1`` (frozen and hashable: a static jit argument).

    Attributes:
        data: slices that problems are split over (each runs its own decode loop).
        model: devices each slice splits the parameters, heads and KV cache over.
        first: index (in ``jax.local_devices()``) of the mesh's first device; a policy and a
            reward model may live on disjoint sub-meshes of one host.
    """

    data: int = 1
    model: int = 1
    first: int = 0

    def __post_init__(self) -> None:
        for name in ("data", "model", "first"):
            v = getattr(self, name)
            least = 0 if name == "first" else 1
            if not isinstance(v, int) or isinstance(v, bool) or v < least:
                raise ValueError(f"Layout.{name} must be an integer >= {least}, got {v!r}")

    @property
    def size(self) -> int:
        """Devices of the mesh: ``data * model``."""
        return self.data * self.model

    @property
    def plain(self) -> bool:
        """Whether this is the default data-parallel layout: no ``model`` split, starting at
        device 0 (the parameters then need no placement; ``shard_map`` replicates them)."""
        return self.model == 1 and self.first == 0

    def with_data(self, data: int) -> Layout:
        """This layout with ``data`` slices."""
        return dataclasses.replace(self, data=data)

    def devices(self) -> list[jax.Device]:
        """The mesh's devices, in order.

        Raises:
            ValueError: this process has too few local devices.
        """
        have = jax.local_devices()
        if self.first + self.size > len(have):
            raise ValueError(
                f"a {self.data}x{self.model} (data x model) mesh from device {self.first} needs "
                f"{self.first + self.size} devices, but this process has {len(have)}")
        return have[self.first:self.first + self.size]

    def __str__(self) -> str:
        at = f" from device {self.first}" if self.first else ""
        return f"{self.data}x{self.model} (data x model){at}"


@functools.lru_cache(maxsize=64)
def mesh_of(layout: Layout) -> Mesh:
    """The ``jax.sharding.Mesh`` of ``layout``: axes ``(DATA, MODEL)``, or only :data:`DATA`
    when ``model`` is 1."""
    if layout.model == 1:
        return jax.make_mesh((layout.data,), (DATA,), axis_types=(jax.sharding.AxisType.Auto,),
                             devices=layout.devices())
    return jax.make_mesh((layout.data, layout.model), (DATA, MODEL),
                         axis_types=(jax.sharding.AxisType.Auto,) * 2, devices=layout.devices())


def resolve_devices(devices: int | None) -> int:
    """``devices`` checked against this process (``None``: all of :func:`sampler_devices`)."""
    have = sampler_devices()
    if devices is None:
        return have
    if not 1 <= int(devices) <= have:
        raise ValueError(f"devices={devices}, but this process has {have} device(s)")
    return int(devices)


_layouts = threading.local()

ROLES = ("policy", "reward")
"""Whose samplers a :class:`Layout` is for: the policy's (sampling, searches) or the reward
model's (scoring pools of finished solutions)."""


@contextlib.contextmanager
def use_layouts(*, policy: Layout | None = None, reward: Layout | None = None
                ) -> Iterator[None]:
    """Within this block (this thread), samplers called without ``devices`` run the policy on
    ``policy`` and score with the reward model on ``reward`` (``None``: the default, every
    device on :data:`DATA`). Step-level searches run policy and reward model in one program,
    on the policy's layout. Nests."""
    prev = {r: getattr(_layouts, r, None) for r in ROLES}
    _layouts.policy, _layouts.reward = policy, reward
    try:
        yield
    finally:
        for r, v in prev.items():
            setattr(_layouts, r, v)


def resolve_layout(devices: int | Layout | None, role: str = "policy") -> Layout:
    """The layout a sampler runs on: ``devices`` itself (a :class:`Layout`, checked against
    this process), ``Layout(data=devices)`` for a device count, or (``None``) the layout of
    :func:`use_layouts` for ``role``, else every :func:`sampler_devices` device on
    :data:`DATA`. Inside :func:`pinned` it is always one device."""
    if isinstance(devices, Layout):
        devices.devices()
        return devices
    if devices is None and getattr(_pin, "device", None) is None:
        active = getattr(_layouts, role, None)
        if active is not None:
            return active
    return Layout(data=resolve_devices(devices))


def fit_layout(devices: int | Layout | None, role: str, most: int) -> Layout:
    """:func:`resolve_layout`, with at most ``most`` ``data`` slices (no slice without work)."""
    layout = resolve_layout(devices, role)
    return layout.with_data(max(1, min(layout.data, most)))


def over_rows(fn: Callable, devices: int | Layout, *, split: Collection[str] = ()) -> Callable:
    """``fn`` run on the ``data`` slices of a layout side by side.

    Args:
        fn: the per-slice function, called with positional arguments only (a
            ``functools.partial`` may bind leading and keyword arguments: they are not counted).
        devices: a :class:`Layout`, or a device count (``Layout(data=devices)``); ``fn`` itself
            is returned for one plain device.
        split: names of ``fn``'s positional parameters whose arguments are cut along their
            leading axis into one equal block per ``data`` slice; every other argument is
            replicated over ``data`` (and keeps its own ``model`` sharding: within a slice
            XLA partitions ``fn`` over ``model`` from its inputs' shardings).

    Returns:
        A traceable function of the same positional arguments whose every output is
        concatenated along its leading axis over the slices (so a per-slice scalar must be
        returned as ``[1]``).

    Raises:
        ValueError: a name in ``split`` is not a positional parameter of ``fn``.
    """
    layout = devices if isinstance(devices, Layout) else Layout(data=devices)
    spec = _row_specs(fn, split)
    if layout.size == 1 and layout.first == 0:
        return fn
    return jax.shard_map(fn, mesh=mesh_of(layout), in_specs=spec,
                         out_specs=PartitionSpec(DATA), axis_names={DATA}, check_vma=False)


Rules = Sequence[tuple[str, tuple]]
"""Partition rules: ``(regex, spec)`` pairs; a parameter whose ``/``-joined path (e.g.
``blocks/0/q/kernel``) matches ``regex`` (``re.search``; first match wins) is split as
``PartitionSpec(*spec)``; unmatched parameters are replicated."""


def param_path(path) -> str:
    """The ``/``-joined name of a pytree key path (``blocks/0/q/kernel``; nnx's trailing
    ``value`` dropped)."""
    name = jax.tree_util.keystr(path, simple=True, separator="/")
    return name[:-len("/value")] if name.endswith("/value") else name


def partition_specs(params: Any, rules: Rules) -> Any:
    """A tree like ``params`` of each parameter's ``PartitionSpec`` under ``rules``."""
    compiled = [(re.compile(pat), PartitionSpec(*spec)) for pat, spec in rules]

    def one(path, _):
        name = param_path(path)
        return next((spec for pat, spec in compiled if pat.search(name)), PartitionSpec())

    return jax.tree_util.tree_map_with_path(one, params)


def place(params: Any, layout: Layout, rules: Rules = ()) -> Any:
    """``params`` put on ``layout``'s mesh: split over :data:`MODEL` by ``rules`` (ignored when
    ``model`` is 1), replicated over :data:`DATA`. A plain layout returns ``params`` as they
    are."""
    if layout.plain:
        return params
    mesh = mesh_of(layout)
    specs = partition_specs(params, rules if layout.model > 1 else ())
    return jax.tree.map(lambda x, s: jax.device_put(x, NamedSharding(mesh, s)), params, specs)


def on_layout(params: Any, layout: Layout) -> Any:
    """``params`` moved onto ``layout``'s mesh, each keeping its :data:`MODEL` split where it
    has one (from :func:`place` on another mesh) and replicated otherwise: how a sampler
    brings a model placed for one layout (a reward model on its own sub-mesh) into a program
    on another (a step-level search on the policy's). A no-op where they are already there,
    and for a plain layout."""
    if layout.plain:
        return params
    mesh = mesh_of(layout)

    def one(x):
        spec = PartitionSpec()
        sh = getattr(x, "sharding", None)
        if layout.model > 1 and isinstance(sh, NamedSharding) and MODEL in sh.mesh.axis_names:
            spec = sh.spec
        target = NamedSharding(mesh, spec)
        if isinstance(sh, NamedSharding) and sh.is_equivalent_to(target, x.ndim):
            return x
        return jax.device_put(x, target)

    return jax.tree.map(one, params)


def _row_specs(fn: Callable, split: Collection[str]) -> tuple[PartitionSpec, ...]:
    """One ``PartitionSpec`` per positional parameter of ``fn``: :data:`DATA` for those named in
    ``split``, replicated for the others."""
    if isinstance(split, str):
        raise TypeError(f"split must be a collection of parameter names, got the string {split!r}")
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    names = [p.name for p in inspect.signature(fn).parameters.values() if p.kind in kinds]
    unknown = sorted(set(split) - set(names))
    if unknown:
        raise ValueError(f"split names {unknown}, but the positional parameters of "
                         f"{getattr(fn, '__name__', fn)!r} are {names}")
    return tuple(PartitionSpec(DATA) if n in split else PartitionSpec() for n in names)


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
