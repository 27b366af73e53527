"""Memory planning: how many sample rows a sampler runs at once on a layout's devices.

:func:`plan_rows` weighs a policy's memory per device against the device's free memory
(:func:`device_free_bytes`) and chooses the largest row count, at most the one asked for, that
fits; a configuration that cannot hold its parameters and the rows one problem needs stops with
a :class:`ttc.errors.ConfigError` that names the numbers, before anything is compiled.
:func:`ttc.decode.generate_solutions` caps its decode rows by the plan (its samples do not
depend on how many rows run at once); :func:`ttc.search.loop.run_search`, whose results
depend on how problems are grouped into chunks, stops instead when a chunk does not fit, naming
the ``eval.max_rows`` that would. With ample memory nothing changes.

Conventions (all sizes in bytes, per device of the layout):

* Parameters: each parameter's size in its dtype, divided by ``model`` where the family's
  partition rules split it (:func:`ttc.models.partition_rules`, as
  :meth:`ttc.checkpoint.LoadedModel.on_mesh` places it) and whole where they replicate it.
  Every device of a ``data x model`` mesh holds one such share.
* A row: one sample's KV cache of ``cache_len`` slots (:meth:`PolicyConfig.init_cache`),
  divided by ``model`` where the partition rules split the key/value projections, i.e. where
  ``model`` divides the key/value heads (the cache is then split like its heads), plus an
  estimate of one decode step's working set (:func:`activation_bytes_per_row`). Rows are dealt
  to the ``data`` slices, so a device holds ``ceil(rows / data)`` of them.
* Free memory: :func:`device_free_bytes` of each of the layout's devices (the least of them),
  measured while the parameters are loaded (as they are when a sampler plans; so their bytes
  are added back), of which the fraction :data:`SAFETY` is planned (XLA's workspace and
  fragmentation take the rest).

What it does not count: a sampler's queues (the prefilled prompt caches of the problems waiting
for a row, the finished samples' tokens) and a reward model run in the same program (a step-level
search's PRM); the safety fraction is the margin for them.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from pathlib import Path

import jax
import numpy as np
from flax import nnx
from jax.sharding import PartitionSpec

from ttc.errors import ConfigError
from ttc.models import create, param_specs
from ttc.models.interface import PolicyConfig
from ttc.parallel import MODEL, Layout, param_path

__all__ = ["SAFETY", "MemoryPlan", "activation_bytes_per_row", "cache_bytes_per_row",
           "check_chunk_fits",
           "device_free_bytes", "host_available_bytes", "param_bytes_per_device", "plan_rows"]

SAFETY = 0.9
"""Fraction of a device's free memory that a plan fills."""

GIB = 2 ** 30


@dataclasses.dataclass(frozen=True, kw_only=True)
class MemoryPlan:
    """How many rows a sampler runs at once, and the numbers behind it (bytes, per device).

    Attributes:
        param_bytes: the parameters' bytes on each device.
        cache_bytes_per_row: one row's KV cache on each device.
        act_bytes_per_row: one row's decode-step working set (logits in float32 and more).
        free_bytes: the least free memory of the layout's devices; ``None`` where it is unknown
            (the plan then takes the rows asked for).
        device_rows: the most rows one device holds (``floor((SAFETY * free_bytes -
            param_bytes) / (cache_bytes_per_row + act_bytes_per_row))``; the rows asked for
            where free memory is unknown).
        rows: the rows chosen, over all ``data`` slices: ``min(want_rows, device_rows * data)``.
        device: the device the numbers are for, in words.
    """

    param_bytes: int
    cache_bytes_per_row: int
    act_bytes_per_row: int
    free_bytes: int | None
    device_rows: int
    rows: int
    device: str

    @property
    def row_bytes(self) -> int:
        """One row's bytes on each device: cache and working set."""
        return self.cache_bytes_per_row + self.act_bytes_per_row


def plan_rows(cfg: PolicyConfig, *, cache_len: int, want_rows: int, layout: Layout | None = None,
              dtype: str | None = None, free_bytes: int | None = None,
              min_rows: int = 1) -> MemoryPlan:
    """The largest row count ``<= want_rows`` whose parameters and rows fit on ``layout``.

    Args:
        cfg: the policy's config.
        cache_len: KV-cache slots per row (prompt + most new tokens).
        want_rows: the rows the sampler would run at once, over all ``data`` slices.
        layout: the devices (default: one, the first); parameters split over its ``model``
            axis, rows over its ``data`` slices.
        dtype: the parameters' (and, for a family with a ``dtype`` field, the cache's) dtype
            name; default: the config's (``cfg.dtype``, else float32).
        free_bytes: free memory per device before the parameters are loaded (default:
            :func:`device_free_bytes` of the least free of the layout's devices, measured
            while the parameters are loaded, as they are when a sampler plans, plus their
            bytes).
        min_rows: rows per device below which the sampler cannot run (a search's rows of one
            problem).

    Returns:
        The :class:`MemoryPlan`.

    Raises:
        ConfigError: the parameters and ``min_rows`` rows do not fit; the message names the
            numbers and what to change.
        ValueError: the layout needs more devices than this process has, or ``dtype`` is not
            float32 for a family without a ``dtype`` field.
    """
    layout = Layout() if layout is None else layout
    cfg = _with_dtype(cfg, dtype)
    devices = layout.devices()
    params = param_bytes_per_device(cfg, layout.model)
    cache = cache_bytes_per_row(cfg, cache_len, layout.model)
    act = activation_bytes_per_row(cfg, cache_len)
    if free_bytes is None:  # measured with the parameters loaded: they count as free here
        known = [f for f in map(device_free_bytes, devices) if f is not None]
        free_bytes = min(known) + params if len(known) == len(devices) else None
    kind = devices[0].device_kind
    where = f"{devices[0]}{'' if kind in str(devices[0]) else f' ({kind})'}, layout {layout}"
    if free_bytes is None:
        fit = want_rows
    else:
        fit = max(0, int(free_bytes * SAFETY) - params) // (cache + act)
        if fit < min_rows:
            raise ConfigError(_too_big(params, cache, act, free_bytes, where, cache_len,
                                       min_rows))
    return MemoryPlan(param_bytes=params, cache_bytes_per_row=cache, act_bytes_per_row=act,
                      free_bytes=free_bytes, device_rows=fit,
                      rows=min(want_rows, fit * layout.data), device=where)


def check_chunk_fits(cfg: PolicyConfig, *, rows: int, cache_len: int, layout: Layout,
                     min_rows: int = 1) -> MemoryPlan:
    """Checks, before anything compiles, that a step-level search's chunk of ``rows`` rows fits
    on one ``data`` slice of ``layout`` (:func:`plan_rows`). A search's results depend on how
    its problems are grouped into chunks, so a chunk is never shrunk to fit: a chunk that does
    not fit stops the run, naming the ``eval.max_rows`` that would.

    Raises:
        ConfigError: the chunk (or one problem's ``min_rows``) does not fit.
    """
    plan = plan_rows(cfg, cache_len=cache_len, want_rows=rows, layout=layout, min_rows=min_rows)
    if plan.rows < rows:
        raise ConfigError(
            f"a search chunk of {rows} rows does not fit in the memory of {plan.device}: "
            f"{_gib(plan.free_bytes)} free holds the parameters ({_gib(plan.param_bytes)}) and "
            f"{plan.rows} rows of {_gib(plan.row_bytes)} each. Set eval.max_rows={plan.rows} "
            "or lower (the search then runs its problems in smaller chunks, with other random "
            "draws), or split the model over more devices.")
    return plan


def _with_dtype(cfg: PolicyConfig, dtype: str | None) -> PolicyConfig:
    """``cfg`` with parameters in ``dtype`` (its own where ``None``)."""
    if dtype is None:
        return cfg
    if any(f.name == "dtype" for f in dataclasses.fields(cfg)):
        return dataclasses.replace(cfg, dtype=dtype)
    if np.dtype(dtype) != np.float32:
        raise ValueError(f"{type(cfg).__name__} holds float32 parameters only, not {dtype}")
    return cfg


def _gib(n: int | float) -> str:
    return f"{n / GIB:.3g} GiB"


def _too_big(params: int, cache: int, act: int, free: int, where: str, cache_len: int,
             min_rows: int) -> str:
    """The one-paragraph message of a configuration that cannot fit."""
    rows = "one sample row" if min_rows == 1 else f"{min_rows} sample rows (one problem's)"
    return (
        f"the policy does not fit in the memory of {where}: its parameters take "
        f"{_gib(params)} per device and each sample row {_gib(cache)} of KV cache (cache "
        f"length {cache_len}) plus {_gib(act)} of activations, so the parameters and "
        f"{rows} need {_gib(params + min_rows * (cache + act))}, but only {_gib(free)} is free "
        f"on the device (of which {SAFETY:.0%} is planned). Split the parameters over more "
        "devices (a larger model axis of the layout), load the model in bfloat16 "
        "(dtype=bfloat16), or shorten the cache (fewer max new tokens)."
    )


@functools.lru_cache(maxsize=64)
def _shapes_and_specs(cfg: PolicyConfig, model: int) -> tuple[tuple[str, tuple, str, bool], ...]:
    """``(path, shape, dtype, split over MODEL)`` of each parameter of a shape-only module of
    ``cfg`` under its family's partition rules for a ``model``-way split."""
    params = nnx.state(nnx.eval_shape(lambda: create(cfg)), nnx.Param)
    specs = param_specs(cfg, params, model)
    is_spec = lambda s: isinstance(s, PartitionSpec)  # noqa: E731
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    out = []
    for (path, x), spec in zip(flat, jax.tree.leaves(specs, is_leaf=is_spec), strict=True):
        split = any(MODEL in (a if isinstance(a, tuple) else (a,)) for a in spec)
        out.append((param_path(path), tuple(x.shape), str(x.dtype), split))
    return tuple(out)


def param_bytes_per_device(cfg: PolicyConfig, model: int = 1) -> int:
    """The parameters' bytes on each device of a ``model``-way split (module conventions),
    from a shape-only module of ``cfg`` (nothing is allocated)."""
    return sum(math.ceil(math.prod(shape) / (model if split else 1)) * np.dtype(dt).itemsize
               for _, shape, dt, split in _shapes_and_specs(cfg, model))


@functools.lru_cache(maxsize=64)
def cache_bytes_per_row(cfg: PolicyConfig, cache_len: int, model: int = 1) -> int:
    """One row's KV cache of ``cache_len`` slots on each device of a ``model``-way split: split
    where the family's partition rules split the key/value projections (so the cache is split
    like its heads), whole otherwise (as for the synthetic decoder's fused ``qkv``)."""
    cache = jax.eval_shape(lambda: cfg.init_cache(1, cache_len))
    total = sum(math.prod(x.shape) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(cache))
    split = model > 1 and any(split and re.search(r"(^|/)(k|v)/kernel$", path)
                              for path, _, _, split in _shapes_and_specs(cfg, model))
    return math.ceil(total / model) if split else total


def activation_bytes_per_row(cfg: PolicyConfig, cache_len: int) -> int:
    """An estimate of one row's working set in a decode step, in 4-byte words: four float32
    copies of its outputs (the kept logits, the new ones, two sampling temporaries), three of
    the MLP's hidden units, two of the attention scores over the cache (scores and
    probabilities, every head) and the row's int32 tokens."""
    out = getattr(cfg, "out_dim", cfg.vocab_size)
    words = (4 * out + 3 * getattr(cfg, "d_ff", 0)
             + 2 * getattr(cfg, "n_heads", 1) * cache_len + cache_len)
    return 4 * words


def device_free_bytes(device: jax.Device) -> int | None:
    """Free memory of ``device``: ``bytes_limit - bytes_in_use`` of its ``memory_stats()``
    (GPU, TPU); for a CPU device, which has none, :func:`host_available_bytes` divided among
    the process's CPU devices. ``None`` where neither is known."""
    stats = device.memory_stats()
    if stats and "bytes_limit" in stats:
        return max(0, int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0)))
    if device.platform != "cpu":
        return None
    host = host_available_bytes()
    return None if host is None else host // max(1, len(jax.local_devices(backend="cpu")))


def host_available_bytes() -> int | None:
    """Memory this process may still take on the host: ``psutil``'s available memory where it
    is installed, else ``MemAvailable`` of ``/proc/meminfo``; at most what a cgroup v2 memory
    limit leaves (a container's ``memory.max - memory.current``). ``None`` where unknown."""
    try:
        import psutil
    except ImportError:
        host = _meminfo_available()
    else:
        host = int(psutil.virtual_memory().available)
    limit = _cgroup_left()
    if limit is not None:
        host = limit if host is None else min(host, limit)
    return host


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _cgroup_left(root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """What this process's cgroup v2 memory limit leaves: ``memory.max`` less
    ``memory.current`` without the reclaimable page cache (``inactive_file`` of
    ``memory.stat``); ``None`` where there is no limit."""
    try:
        rel = ""
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            if line.startswith("0::"):
                rel = line[3:].strip().lstrip("/")
        d = root / rel if (root / rel / "memory.max").exists() else root
        limit = (d / "memory.max").read_text().strip()
        if limit == "max":
            return None
        used = int((d / "memory.current").read_text())
        stat = dict(ln.split() for ln in (d / "memory.stat").read_text().splitlines()
                    if len(ln.split()) == 2)
        return max(0, int(limit) - used + int(stat.get("inactive_file", 0)))
    except (OSError, ValueError):
        return None
