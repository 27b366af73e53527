"""Orbax checkpoints that carry their own config, so a model reloads without guessing shapes.

Layout of a checkpoint directory::

    <dir>/meta.json      {"model": {"family": ..., config fields}, "task": {...}, "info": {...}}
    <dir>/params/        orbax StandardCheckpointer tree of the model's parameters
    <dir>/files.json     {"params/<file>": [size, CRC-32]} of every file under params/

Saving is atomic: :func:`save` writes everything into a sibling
``<dir>.tmp-<host>-<pid>-<random>``, syncs it to disk and renames it onto ``<dir>`` (a checkpoint
already there is first renamed out of the way, then removed). An interrupted save therefore
never leaves a directory that :func:`exists` reports, and concurrent saves of one directory
never write into each other's files (the last to finish wins). The next save of the same
directory on the same host removes what saves of dead processes left behind. Resume snapshots
(:func:`save_snapshot`, :class:`ResumePoint`) are single ``.npz`` files written the same way.

Damage (a truncated, altered or missing file, unreadable or inconsistent metadata, parameters
whose shapes disagree with the config) never surfaces as an orbax traceback. The parameter
files are checked against ``files.json`` before orbax reads them (checkpoints written without
it are read directly, with orbax's error output silenced), and :func:`load` raises
:class:`DamagedCheckpointError` (a :class:`ttc.errors.ConfigError`) naming the directory and
what to do. A directory that is a cache entry is read with :func:`load_cached`, which moves a
damaged entry aside (``<dir>.damaged-<n>``, never deleted) with a warning and returns
``None``, so the caller trains it again; a damaged resume snapshot is moved aside the same way
and training starts over.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import gc
import json
import logging
import os
import secrets
import shutil
import socket
import sys
import time
import warnings
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from ttc.errors import ConfigError
from ttc.fsutil import fsync_dir
from ttc.models import (
    PolicyConfig,
    check_model_split,
    config_from_dict,
    config_to_dict,
    create,
    partition_rules,
)
from ttc.parallel import Layout, place

log = logging.getLogger(__name__)

_FILES = "files.json"  # size and CRC-32 of every file under params/, written by save
_SNAPSHOT_ERRORS = (OSError, ValueError, TypeError, KeyError, EOFError, zipfile.BadZipFile,
                    zlib.error)


class DamagedCheckpointError(ConfigError):
    """A checkpoint directory (or resume snapshot) that is damaged or incomplete.

    Attributes:
        path: the checkpoint directory.
        reason: what is wrong with it, in a few words.
    """

    def __init__(self, path: Path, reason: str):
        self.path, self.reason = path, reason
        super().__init__(
            f"the checkpoint at {path} is damaged or incomplete: {reason}. Delete it "
            f"(rm -r '{path}') and train it again (a cached model is retrained automatically), "
            "or point to another checkpoint.")


class CheckpointDamageWarning(UserWarning):
    """A damaged cache entry or resume snapshot was moved aside."""


@dataclasses.dataclass(frozen=True)
class LoadedModel:
    """A model split for jit: static ``graphdef`` + parameter ``params`` + its config."""

    cfg: PolicyConfig
    graphdef: nnx.GraphDef
    params: nnx.State
    meta: dict

    @classmethod
    def from_module(cls, module: nnx.Module, meta: dict | None = None) -> LoadedModel:
        graphdef, params = nnx.split(module, nnx.Param)
        return cls(cfg=module.cfg, graphdef=graphdef, params=params, meta=dict(meta or {}))

    def on_mesh(self, layout: Layout) -> LoadedModel:
        """This model with its parameters on ``layout``'s mesh, split over its ``model`` axis
        by the family's partition rules (:func:`ttc.parallel.place`).

        Raises:
            ValueError: the ``model`` axis does not divide the heads or MLP width.
        """
        check_model_split(self.cfg, layout.model)
        rules = partition_rules(self.cfg, layout.model)
        return dataclasses.replace(self, params=place(self.params, layout, rules))

    def on_host(self) -> LoadedModel:
        """This model with its parameters as host numpy arrays (as :func:`load` returns them),
        so that it no longer belongs to the device it was trained on."""
        params = jax.tree.map(np.asarray, self.params)
        return dataclasses.replace(self, params=params)


def _write_params(path: Path, params: nnx.State) -> None:
    ckptr = ocp.StandardCheckpointer()
    ckptr.save(path.absolute(), nnx.to_pure_dict(params))
    ckptr.wait_until_finished()


def save(directory: str | os.PathLike, model: LoadedModel) -> Path:
    """Saves ``model`` (parameters + config + meta) atomically to ``directory``, replacing any
    checkpoint there; returns the directory."""
    final = Path(directory)
    final.parent.mkdir(parents=True, exist_ok=True)
    _sweep(final)
    tmp = _sibling(final, "tmp")
    tmp.mkdir()
    try:
        _write_params(tmp / "params", model.params)
        (tmp / _FILES).write_text(json.dumps(_file_list(tmp), indent=1))
        meta = {"model": config_to_dict(model.cfg), **model.meta}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2, default=_json_default))
        _fsync_tree(tmp)
        _install(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def exists(directory: str | os.PathLike) -> bool:
    """Whether ``directory`` holds a complete-looking checkpoint (``meta.json`` and
    ``params/``); damage inside the files is found by :func:`load`."""
    d = Path(directory)
    return (d / "meta.json").is_file() and (d / "params").is_dir()


def load(directory: str | os.PathLike) -> LoadedModel:
    """Loads a checkpoint written by :func:`save`, parameters as host numpy arrays.

    Raises:
        ConfigError: there is no checkpoint at ``directory``.
        DamagedCheckpointError: the checkpoint is damaged or incomplete (its message says
            which part and what to do).
    """
    d = Path(directory)
    if not (d / "meta.json").exists() and not (d / "params").exists():
        raise ConfigError(
            f"no ttc checkpoint at {d} (expected {d}/meta.json and {d}/params/). Point to a "
            "directory written by ttc.checkpoint.save (e.g. by `python -m experiments.train`).")
    if not exists(d):
        missing = "meta.json" if not (d / "meta.json").is_file() else "params/"
        raise DamagedCheckpointError(d, f"{missing} is missing")
    meta = _read_meta(d)
    try:
        cfg = config_from_dict(meta.pop("model"))
    except (KeyError, TypeError, ValueError) as e:
        raise DamagedCheckpointError(
            d, f"meta.json does not describe a model ({type(e).__name__}: {e})") from None
    module = create(cfg)
    graphdef, params = nnx.split(module, nnx.Param)
    nnx.replace_by_pure_dict(params, _read_params(d, nnx.to_pure_dict(params)))
    return LoadedModel(cfg=cfg, graphdef=graphdef, params=params, meta=meta)


def load_cached(directory: str | os.PathLike) -> LoadedModel | None:
    """The model of the cache entry ``directory``, or ``None`` if there is none.

    An entry that cannot be loaded (damaged, incomplete, not a checkpoint) is renamed to
    ``<dir>.damaged-<n>`` (never deleted) with a :class:`CheckpointDamageWarning`, and ``None``
    is returned so that the caller trains the model again. An entry replaced by a concurrent
    :func:`save` while it was being read is read again instead.
    """
    d = Path(directory)
    for _ in range(2):
        if not (d.exists() or d.is_symlink()):
            return None
        before = _identity(d)
        try:
            return load(d)
        except ConfigError as e:
            err = e
        if _identity(d) == before:
            break
    aside = _move_aside(d)
    if aside is not None:
        reason = err.reason if isinstance(err, DamagedCheckpointError) else "not a checkpoint"
        warnings.warn(f"cached model {d} is damaged or incomplete ({reason}); moved it to "
                      f"{aside}, training it again", CheckpointDamageWarning, stacklevel=2)
    return None


def _read_meta(d: Path) -> dict:
    try:
        meta = json.loads((d / "meta.json").read_bytes())
    except (OSError, ValueError) as e:
        raise DamagedCheckpointError(d, f"meta.json cannot be read ({e})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("model"), dict):
        raise DamagedCheckpointError(d, "meta.json has no 'model' config object")
    return meta


def _restore_on_one_device(path: Path) -> dict:
    """The arrays saved at ``path``, restored onto this process's first device whatever devices
    saved them (orbax alone refuses a checkpoint written by a process with another device count,
    e.g. a two-device ``ttc-run`` read back with ``host_devices=1``). In a multi-process run
    each process restores on its own, with no barrier across processes (orbax's default would
    wait for every process at each restore)."""
    me = jax.process_index()
    alone = ocp.options.MultiprocessingOptions(primary_host=me, active_processes={me})
    ckptr = ocp.StandardCheckpointer(multiprocessing_options=alone)
    meta = ckptr.metadata(path)
    tree = getattr(meta, "item_metadata", meta)
    one = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return ckptr.restore(path, jax.tree.map(
        lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=one), tree))


def _read_params(d: Path, like: dict) -> dict:
    """The parameter tree in ``d/params`` as numpy arrays, checked against the pure-dict
    tree ``like`` (same paths, same shapes)."""
    _check_files(d)
    restored = None
    with _quiet_orbax():
        try:
            restored = _restore_on_one_device((d / "params").absolute())
            restored = jax.tree.map(np.asarray, nnx.restore_int_paths(restored))
        except Exception as e:  # orbax/tensorstore raise bare Exceptions for unreadable data
            log.debug("reading %s/params failed: %s", d, type(e).__name__)
            restored = None
        if restored is None:
            _settle_failed_restore()
    if restored is None:  # raised outside the handler, so orbax's frames are not kept alive
        raise DamagedCheckpointError(d, f"its parameter arrays in {d / 'params'} cannot be read")
    got, want = _shapes(restored), _shapes(like)
    if got != want:
        bad = sorted(set(got) ^ set(want)) or [k for k in want if got[k] != want[k]]
        k = bad[0]
        raise DamagedCheckpointError(
            d, f"its parameters do not match the model in meta.json ({len(bad)} differ, e.g. "
               f"{k}: saved {got.get(k, 'nothing')}, expected {want.get(k, 'nothing')})")
    return restored


def _file_list(d: Path) -> dict[str, list[int]]:
    """``{path relative to d: [size, crc32]}`` of every file under ``d/params``."""
    return {p.relative_to(d).as_posix(): [p.stat().st_size, _crc32(p)]
            for p in sorted((d / "params").rglob("*")) if p.is_file()}


def _crc32(path: Path) -> int:
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            crc = zlib.crc32(chunk, crc)
    return crc


def _check_files(d: Path) -> None:
    """Checks the parameter files against the ``files.json`` that :func:`save` wrote, so that
    orbax never reads a missing, truncated or altered file (checkpoints written before
    ``files.json`` existed are not checked)."""
    try:
        listed = json.loads((d / _FILES).read_bytes())
        listed = {str(k): (int(v[0]), int(v[1])) for k, v in listed.items()}
    except FileNotFoundError:
        return
    except (OSError, ValueError, TypeError, AttributeError, IndexError):
        raise DamagedCheckpointError(d, f"{_FILES} cannot be read") from None
    for rel, (size, crc) in listed.items():
        p = d / rel
        if not p.is_file():
            raise DamagedCheckpointError(d, f"its parameter file {rel} is missing")
        if p.stat().st_size != size:
            raise DamagedCheckpointError(
                d, f"its parameter file {rel} is truncated or damaged ({p.stat().st_size} "
                   f"bytes, {size} were written)")
        if _crc32(p) != crc:
            raise DamagedCheckpointError(
                d, f"its parameter file {rel} is damaged (its checksum differs from the one "
                   "written)")


def _settle_failed_restore(quiet_rounds: int = 5, max_rounds: int = 60) -> None:
    """Lets a failed restore's pending reads finish and be finalized while their errors are
    still silenced: orbax's reader threads may hold them for a while, so garbage is collected
    until ``quiet_rounds`` rounds in a row (50 ms apart) report nothing, at most
    ``max_rounds``. Only a damaged checkpoint pays this wait."""
    quiet = 0
    for _ in range(max_rounds):
        before = _SILENCED[0]
        gc.collect()
        time.sleep(0.05)
        quiet = quiet + 1 if _SILENCED[0] == before else 0
        if quiet >= quiet_rounds:
            return


_SILENCED = [0]   # errors silenced by _quiet_orbax so far (read by _settle_failed_restore)


def _silence(what: str, message: object) -> None:
    _SILENCED[0] += 1
    log.debug("during a restore, %s: %s", what, message)


@contextlib.contextmanager
def _quiet_orbax() -> Iterator[None]:
    """Keeps a failing orbax restore from printing tracebacks: the errors of its pending
    reads ("Exception ignored in ...", asyncio's "exception was never retrieved") go to this
    module's debug log instead while the restore runs."""
    hook = sys.unraisablehook
    sys.unraisablehook = lambda info: _silence("unraisable", repr(info.exc_value))
    drop = _DropFilter()
    logging.getLogger("asyncio").addFilter(drop)
    try:
        yield
    finally:
        logging.getLogger("asyncio").removeFilter(drop)
        sys.unraisablehook = hook


class _DropFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        _silence("asyncio", record.getMessage().splitlines()[0])
        return False


def _shapes(tree: Any) -> dict[str, tuple]:
    return {jax.tree_util.keystr(p): tuple(np.shape(x))
            for p, x in jax.tree_util.tree_leaves_with_path(tree)}


def save_snapshot(path: str | os.PathLike, trees: dict[str, Any], meta: dict) -> None:
    """Atomically writes pytrees (as their flattened leaves) and a JSON ``meta`` to ``path``
    (one ``.npz`` file): the periodic resume point of a training loop."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {f"{name}/{i}": np.asarray(x)
              for name, tree in trees.items() for i, x in enumerate(jax.tree.leaves(tree))}
    arrays["__meta__"] = np.frombuffer(json.dumps(meta, default=_json_default).encode(), np.uint8)
    _sweep(path)
    tmp = _sibling(path, "tmp", suffix=".npz")
    try:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def load_snapshot(path: str | os.PathLike, like: dict[str, Any]) -> tuple[dict, dict] | None:
    """Reads a :func:`save_snapshot` file into the structures of ``like`` (same names, same
    tree structure); ``None`` if there is no snapshot or it does not match. A damaged
    snapshot is moved aside (``<path>.damaged-<n>``) with a warning, and ``None`` returned."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return _read_snapshot(path, like)
    except _SNAPSHOT_ERRORS as e:
        _set_aside_snapshot(path, f"{type(e).__name__}: {e}")
        return None


def _read_snapshot(path: Path, like: dict[str, Any]) -> tuple[dict, dict] | None:
    with np.load(path) as z:
        if "__meta__" not in z.files:
            raise ValueError("no metadata")
        meta = json.loads(bytes(z["__meta__"]).decode())
        if not isinstance(meta, dict):
            raise ValueError("metadata is not an object")
        out = {}
        for name, tree in like.items():
            leaves, treedef = jax.tree.flatten(tree)
            names = [f"{name}/{i}" for i in range(len(leaves))]
            if any(n not in z.files for n in names):
                return None
            new = [z[n] for n in names]
            if any(np.shape(a) != np.shape(b) for a, b in zip(new, leaves, strict=True)):
                return None
            out[name] = jax.tree.unflatten(treedef, [jax.numpy.asarray(a) for a in new])
    return out, meta


def _set_aside_snapshot(path: Path, reason: str) -> None:
    aside = _move_aside(path)
    if aside is not None:
        warnings.warn(f"resume snapshot {path} is damaged or incomplete ({reason}); moved it to "
                      f"{aside}, training starts from the beginning", CheckpointDamageWarning,
                      stacklevel=3)


@dataclasses.dataclass(frozen=True)
class ResumePoint:
    """The resume point of a training loop that saves to ``out_dir``: a :func:`save_snapshot`
    file ``<out_dir>.resume.npz`` (pytrees, data-order RNG state, step, history and any extra
    metadata), used only by a run whose ``cfg`` (a JSON-able dict) is the one that wrote it.

    A disabled point (``out_dir=None``) loads nothing and saves nothing. A damaged snapshot is
    moved aside with a warning and loads nothing."""

    path: Path | None
    cfg: dict

    @classmethod
    def at(cls, out_dir: str | os.PathLike | None, cfg: dict) -> ResumePoint:
        return cls(None if out_dir is None else Path(str(out_dir) + ".resume.npz"), cfg)

    def load(self, like: dict[str, Any], rng: np.random.Generator) -> tuple[dict, dict] | None:
        """The saved trees and metadata (and ``rng`` set to its saved state), or ``None`` if
        there is no snapshot for this configuration."""
        got = None if self.path is None else load_snapshot(self.path, like)
        if got is None or got[1].get("cfg") != self.cfg:
            return None
        rng.bit_generator.state = got[1]["rng"]
        return got

    def save(self, trees: dict[str, Any], rng: np.random.Generator, *, step: int,
             history: list, **extra: Any) -> None:
        if self.path is not None:
            save_snapshot(self.path, trees, {"step": step, "rng": rng.bit_generator.state,
                                             "history": history, "cfg": self.cfg, **extra})

    def clear(self) -> None:
        """Removes the snapshot (call once the final checkpoint is saved)."""
        if self.path is not None:
            self.path.unlink(missing_ok=True)


# -- file-system helpers ---------------------------------------------------------------------

_HOST = socket.gethostname().replace("-", "_")


def _sibling(final: Path, kind: str, suffix: str = "") -> Path:
    """A fresh name next to ``final`` for this process: ``<final>.<kind>-<host>-<pid>-<hex>``."""
    return final.with_name(
        f"{final.name}.{kind}-{_HOST}-{os.getpid()}-{secrets.token_hex(4)}{suffix}")


def _sweep(final: Path) -> None:
    """Removes the temporary siblings of ``final`` left by dead processes of this host (and the
    fixed-name temporary of earlier versions)."""
    prefixes = tuple(f"{final.name}.{kind}-{_HOST}-" for kind in ("tmp", "old"))
    legacy = {f"{final.name}.tmp", f"{final.name}.tmp.npz"}
    with contextlib.suppress(FileNotFoundError):
        for p in final.parent.iterdir():
            if p.name in legacy:
                _remove(p)
            elif p.name.startswith(prefixes):
                pid = p.name.split("-")[-2] if p.name.count("-") >= 2 else ""
                if pid.isdigit() and not _alive(int(pid)):
                    _remove(p)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        p.unlink(missing_ok=True)


def _install(tmp: Path, final: Path) -> None:
    """Renames the finished directory ``tmp`` onto ``final``, replacing what is there."""
    while True:
        old = None
        if final.exists() or final.is_symlink():
            old = _sibling(final, "old")
            try:
                os.rename(final, old)
            except FileNotFoundError:
                old = None
        try:
            os.rename(tmp, final)
            break
        except OSError as e:
            if e.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise  # else another save installed its copy meanwhile: replace it in turn
        finally:
            if old is not None:
                _remove(old)
    fsync_dir(final.parent)


def _move_aside(p: Path) -> Path | None:
    """Renames ``p`` to the first free ``<p>.damaged-<n>``; ``None`` if ``p`` is gone."""
    n = 1
    while True:
        target = p.with_name(f"{p.name}.damaged-{n}")
        if not (target.exists() or target.is_symlink()):
            try:
                os.rename(p, target)
                return target
            except FileNotFoundError:
                return None
            except OSError as e:
                if e.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
        n += 1


def _identity(d: Path) -> tuple | None:
    try:
        st, meta = os.stat(d), os.stat(d / "meta.json")
    except OSError:
        return None
    return st.st_dev, st.st_ino, meta.st_ino, meta.st_mtime_ns


def _fsync_tree(root: Path) -> None:
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(dirpath))


def _json_default(o: Any):
    if isinstance(o, np.generic):
        return o.item()
    if dataclasses.is_dataclass(o):
        return dataclasses.asdict(o)
    raise TypeError(f"not JSON serializable: {type(o)}")
