"""Pools of complete solutions, sampled once per (configuration, seed) and cached under the run
directory, so that an interrupted evaluation does not re-sample.

Files: ``<run_dir>/pools/pool-<tag>-seed<seed>-n<N>.npz`` (the :class:`ttc.decode.Samples`
arrays) and a ``.time`` file beside it (the seconds sampling took). Both are written under a
name unique to the writing process, synced, then renamed into place (``os.replace``), the
``.time`` file first: a pool file that exists is complete and has its time.

Concurrent writers sharing a results store (:meth:`ttc.results.ResultsStore.claim`) also claim
the pool, under :meth:`PoolFile.claim_key`, before sampling it. A writer that needs a pool which
another live process is sampling waits for the file instead of sampling it a second time; if
that process dies, its claim dies with it and the waiting writer samples the pool itself.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ttc.decode import Samples
from ttc.results import ResultsStore

log = logging.getLogger(__name__)

POLL_S = 2.0
"""Seconds between looks at a pool that another process is sampling."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Pool:
    """A pool and the wall time its sampling took (shared by every budget it serves)."""

    samples: Samples
    seconds: float


@dataclasses.dataclass(frozen=True, kw_only=True)
class PoolFile:
    """Where the pool of one (configuration ``tag``, ``seed``, size ``n``) lives."""

    run_dir: Path
    tag: str
    seed: int
    n: int

    @property
    def path(self) -> Path:
        return self.run_dir / "pools" / f"pool-{self.tag}-seed{self.seed}-n{self.n}.npz"

    @property
    def time_path(self) -> Path:
        return self.path.with_suffix(".time")

    @property
    def claim_key(self) -> str:
        """The key this pool is claimed under in the results store (never a record's key)."""
        return f"pool|{self.path.stem}"

    def load(self) -> Pool | None:
        """The pool, or ``None`` if it has not been written."""
        if not self.path.exists():
            return None
        with np.load(self.path) as z:
            d = {k: z[k] for k in z.files}
        d["cache_len"] = int(d["cache_len"])
        return Pool(samples=Samples(**d), seconds=self._seconds())

    def _seconds(self) -> float:
        try:
            return float(self.time_path.read_text())
        except FileNotFoundError:  # a pool written by an older version that died in between
            log.warning("%s has no sampling time (%s); its cells record 0 s for it", self.path,
                        self.time_path)
            return 0.0

    def save(self, pool: Pool) -> None:
        """Writes the pool atomically (its time first)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        s = pool.samples
        _write_atomic(self.time_path, lambda f: f.write(str(pool.seconds).encode()))
        _write_atomic(self.path, lambda f: np.savez_compressed(
            f, **{fl.name: getattr(s, fl.name) for fl in dataclasses.fields(s)}))


def _write_atomic(path: Path, write: Callable) -> None:
    """Writes ``path`` through a file unique to this process, synced, then renamed into place."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def obtain_pool(file: PoolFile, store: ResultsStore, sample: Callable[[], Samples], *,
                poll_s: float = POLL_S) -> Pool:
    """The pool of ``file``: read if written, else sampled by ``sample()`` and written, unless
    another live process holds its claim, in which case this waits for that process's file
    (or for its claim to die, then samples the pool itself)."""
    waiting = False
    while True:
        pool = file.load()
        if pool is not None:
            return pool
        if store.claim(file.claim_key):
            try:
                pool = file.load()  # written by another process just before this claim?
                return pool if pool is not None else _sample_and_save(file, sample)
            finally:
                store.release(file.claim_key)
        if not waiting:
            log.info("waiting for %s: another process is sampling it", file.path)
            waiting = True
        time.sleep(poll_s)


def _sample_and_save(file: PoolFile, sample: Callable[[], Samples]) -> Pool:
    t0 = time.time()
    samples = sample()
    pool = Pool(samples=samples, seconds=time.time() - t0)
    file.save(pool)
    return pool
