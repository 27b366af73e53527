"""Append-only results store: one JSON record per (method, budget, seed) cell.

A store is one ``results.jsonl`` file (one JSON object per line, each with a string ``"key"``
made by :func:`cell_key`) plus two side paths next to it:

* ``results.jsonl.locks/``: ``store.lock`` (the store-wide lock) and one ``cell-<hash>.lock``
  per claimed cell;
* ``results.jsonl.rejected``: lines that were set aside (see below), appended verbatim.

Guarantees:

* **Nothing duplicated.** Every append happens under an exclusive store-wide lock, after
  re-reading what other writers appended; a record whose key is already in the file is skipped.
  :meth:`ResultsStore.has` lets a run skip finished cells, so re-running a command resumes.
* **Nothing lost.** A record is written as one line with a single ``write`` + ``flush`` +
  ``fsync`` before :meth:`ResultsStore.add` returns. Lines are never deleted: a line that is
  not a record is moved to the side file before the main file is rewritten without it.
* **Concurrent writers** (a Hydra multirun with a parallel launcher, a SLURM job array) may
  share one store. Before computing a cell, a writer calls :meth:`ResultsStore.claim`; it gets
  the cell only if no record for it exists and no other live process holds it. A claim is an
  exclusive ``flock`` on the cell's lock file, held through an open descriptor, so the kernel
  releases it when the process exits in any way, SIGKILL and crashes included: a cell claimed
  by a dead process is simply claimable again, with no timeout or pid heuristics. Lock files
  are unlinked only by their holder while it holds the lock, and a claimer re-checks after
  locking that the path still names the file it locked, so two processes can never both hold
  one cell. The file of a claim whose holder was killed is removed when the cell is claimed
  again or the next time a store is opened on the file.
* **SIGKILL** during a run loses at most the cells being computed (their claims die with the
  process); an append interrupted mid-line leaves a torn last line, which the next reader or
  writer sets aside before appending, so it can never merge with the next record.
* **Damaged lines.** A line that is not valid JSON, valid JSON that is not an object with a
  string ``"key"`` (a foreign line), a torn last line (no trailing newline), and a second line
  with an already-seen key are set aside: appended verbatim to ``results.jsonl.rejected``, the
  main file atomically rewritten without them (temporary file, ``fsync``, ``os.replace``,
  under the store lock), and a :class:`ResultsStoreWarning` names the file, the line numbers
  and the side file. The first record of a duplicated key is the one kept. The side file is
  written and synced before the main file is replaced, so a crash in between can at worst
  leave a line in both (it is then set aside a second time), never in neither. A whole last
  record that only lacks its newline is kept, and ended before the next append.

Limits: ``flock`` is reliable on local file systems. On NFS, Linux maps it onto NFS byte-range
locks, which need a working lock manager (NFSv4, or NFSv3 with ``lockd``) and are lost if the
server loses its lock state; Lustre needs the ``flock`` mount option. A process that forks
without ``exec`` shares its locks with the child. A store whose directory cannot be written
(an archived, read-only run) is read without locks and without repairs: bad lines are skipped
with a warning.

An optional mirror (e.g. :class:`ttc.logging.WandbMirror`) receives every record this store
adds (not the ones other writers added).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import socket
import warnings
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path

from ttc.fsutil import fsync_dir


class ResultsStoreWarning(UserWarning):
    """Lines of a results file were set aside, or could not be."""


def cell_key(method: str, budget: int, seed: int, tag: str = "") -> str:
    """The key of one result cell: ``"method|budget|seed|tag"``."""
    return f"{method}|{budget}|{seed}|{tag}"


class ResultsStore:
    """Results of one run directory (``results.jsonl``), shared safely between processes.

    Attributes:
        path: the ``results.jsonl`` file.
        records: every record read or added so far, in file order of first appearance.
        mirror: called with each record this store adds.
    """

    def __init__(self, path: str | os.PathLike, mirror: Callable[[dict], None] | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.mirror = mirror
        self.records: list[dict] = []
        self._keys: set[str] = set()
        self._file: tuple[int, int] | None = None  # (st_dev, st_ino) of the file read so far
        self._offset = 0  # bytes of that file already read into ``records``
        self._lock_dir = self.path.with_name(self.path.name + ".locks")
        self._rejected = self.path.with_name(self.path.name + ".rejected")
        self._claims: dict[str, tuple[int, Path]] = {}
        self._store_fd = self._open_store_lock()
        self._finalizer = weakref.finalize(self, _close_all, self._claims, self._store_fd)
        self.refresh()
        if self._store_fd is not None:
            _sweep_dead_claims(self._lock_dir)

    # -- public API --------------------------------------------------------------------------

    def has(self, key: str) -> bool:
        """Whether a record with this key has been read or added (see :meth:`refresh`)."""
        return key in self._keys

    def refresh(self) -> list[dict]:
        """Reads the records other writers appended since the last read (setting damaged
        lines aside), adds them to :attr:`records` and returns them."""
        with self._locked():
            return self._sync()

    def claim(self, key: str) -> bool:
        """Claims the cell ``key`` for this process before computing it.

        Returns:
            ``True`` if this store now holds the claim (or already held it); ``False`` if a
            record with this key is in the file (re-read under the lock) or another live
            process holds the claim. A claim dies with its process, so the cells of a killed
            writer can be claimed again. Claims belong to this store object: two stores
            opened on one file in the same process exclude each other too.
        """
        if key in self._claims:
            return True
        if key in self._keys:
            return False
        self._lock_dir.mkdir(exist_ok=True)
        path = self._lock_dir / f"cell-{hashlib.sha256(key.encode()).hexdigest()[:32]}.lock"
        fd = _lock_cell(path)
        if fd is None:
            return False
        self._claims[key] = (fd, path)
        os.ftruncate(fd, 0)
        os.write(fd, f"{key}\n{socket.gethostname()} {os.getpid()}\n".encode())
        self.refresh()
        if key in self._keys:
            self.release(key)
            return False
        return True

    def release(self, key: str) -> None:
        """Drops this store's claim of ``key`` (no-op if it holds none)."""
        held = self._claims.pop(key, None)
        if held is not None:
            _unlock_cell(*held)

    def add(self, record: dict) -> None:
        """Appends ``record`` unless its key is already in the file, then releases its claim.

        The line is written under the store lock after reading what other writers appended,
        with one ``write`` + ``flush`` + ``fsync``. Raises ``ValueError`` if ``record`` has no
        string ``"key"``.
        """
        key = record.get("key") if isinstance(record, dict) else None
        if not isinstance(key, str):
            raise ValueError("record needs a string 'key' (see cell_key)")
        line = (json.dumps(record, sort_keys=True, default=_default) + "\n").encode()
        try:
            with self._locked():
                self._sync()
                if key in self._keys:
                    return
                self._append(line)
            self.records.append(record)
            self._keys.add(key)
        finally:
            self.release(key)
        if self.mirror is not None:
            self.mirror(record)

    def close(self) -> None:
        """Releases every claim and the store lock's descriptor (also done at exit)."""
        self._finalizer()

    # -- locking -----------------------------------------------------------------------------

    def _open_store_lock(self) -> int | None:
        try:
            self._lock_dir.mkdir(exist_ok=True)
            return os.open(self._lock_dir / "store.lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            return None  # a read-only run directory: read without locking, never repair

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        if not self._finalizer.alive:
            raise ValueError(f"results store {self.path} is closed")
        if self._store_fd is None:
            yield
            return
        fcntl.flock(self._store_fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._store_fd, fcntl.LOCK_UN)

    # -- reading, repairing, appending (callers hold the store lock) -------------------------

    def _sync(self) -> list[dict]:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return []
        same = self._file == (st.st_dev, st.st_ino) and st.st_size >= self._offset
        start = self._offset if same else 0
        with open(self.path, "rb") as f:
            f.seek(start)
            data = f.read()
        good, bad = _parse(data, self._keys if same else set())
        if bad:
            if self._store_fd is None:
                _warn_unrepaired(self.path, bad)
            else:
                return self._repair()
        self._file, self._offset = (st.st_dev, st.st_ino), start + len(data)
        return self._take(good)

    def _repair(self) -> list[dict]:
        good, bad = _parse(self.path.read_bytes(), set())
        if bad:
            self._set_aside(good, bad)
        st = os.stat(self.path)
        self._file, self._offset = (st.st_dev, st.st_ino), st.st_size
        return self._take(good)

    def _set_aside(self, good: list, bad: list) -> None:
        with open(self._rejected, "ab") as f:
            f.write(b"".join(raw if raw.endswith(b"\n") else raw + b"\n" for _, raw, _ in bad))
            f.flush()
            os.fsync(f.fileno())
        tmp = self.path.with_name(f"{self.path.name}.tmp-{os.getpid()}")
        with open(tmp, "wb") as f:
            f.write(b"".join(raw if raw.endswith(b"\n") else raw + b"\n" for _, raw in good))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        fsync_dir(self.path.parent)
        lines = ", ".join(f"{n} ({why})" for n, _, why in bad)
        warnings.warn(f"{self.path}: set aside line(s) {lines}; they were appended verbatim to "
                      f"{self._rejected} and the file was rewritten without them",
                      ResultsStoreWarning, stacklevel=5)

    def _take(self, good: list[tuple[dict, bytes]]) -> list[dict]:
        new = [r for r, _ in good if r["key"] not in self._keys]
        self.records.extend(new)
        self._keys.update(r["key"] for r in new)
        return new

    def _append(self, line: bytes) -> None:
        with open(self.path, "a+b") as f:
            if f.seek(0, os.SEEK_END) and os.pread(f.fileno(), 1, f.tell() - 1) != b"\n":
                line = b"\n" + line  # a whole last record without its newline: end it first
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        st = os.stat(self.path)
        self._file, self._offset = (st.st_dev, st.st_ino), st.st_size


def _parse(data: bytes, seen: set[str]) -> tuple[list, list]:
    """Splits ``data`` (whole lines of a results file) into records and bad lines.

    Returns:
        ``[(record, raw line)]`` and ``[(line number, raw line, reason)]``, numbered from 1
        within ``data``. A last line without a newline is bad unless it is a whole record.
        Keys in ``seen`` (and repeats within ``data``) count as duplicates.
    """
    good, bad, keys = [], [], set()
    pieces = [x + b"\n" for x in data.split(b"\n")]
    pieces[-1] = pieces[-1][:-1]  # what follows the last newline (usually nothing)
    for n, raw in enumerate(pieces, 1):
        if not raw.strip():
            continue
        rec, why = _record(raw)
        if rec is not None and (rec["key"] in seen or rec["key"] in keys):
            rec, why = None, f"duplicate key {rec['key']!r}"
        if rec is None:
            torn = not raw.endswith(b"\n")
            bad.append((n, raw, f"torn last line: {why}" if torn else why))
        else:
            keys.add(rec["key"])
            good.append((rec, raw))
    return good, bad


def _record(raw: bytes) -> tuple[dict | None, str]:
    try:
        rec = json.loads(raw)
    except ValueError:
        return None, "not valid JSON"
    if not isinstance(rec, dict) or not isinstance(rec.get("key"), str):
        return None, "not a JSON object with a string 'key'"
    return rec, ""


def _warn_unrepaired(path: Path, bad: list) -> None:
    lines = ", ".join(f"{n} ({why})" for n, _, why in bad)
    warnings.warn(f"{path}: skipped line(s) {lines} (the file is not writable, so they were not "
                  "set aside)", ResultsStoreWarning, stacklevel=5)


def _lock_cell(path: Path, create: bool = True) -> int | None:
    """An open descriptor holding an exclusive ``flock`` on ``path`` (created if missing and
    ``create``), or ``None`` if another open file holds it."""
    while True:
        fd = os.open(path, os.O_RDWR | (os.O_CREAT if create else 0), 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            st = os.stat(path)
        except FileNotFoundError:
            st = None
        mine = os.fstat(fd)
        if st is not None and (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino):
            return fd
        os.close(fd)  # the holder unlinked it between our open and our lock: try again


def _sweep_dead_claims(lock_dir: Path) -> None:
    """Removes the lock files of claims whose holder died (nobody holds their lock)."""
    for path in lock_dir.glob("cell-*.lock"):
        with contextlib.suppress(OSError):
            fd = _lock_cell(path, create=False)
            if fd is not None:
                _unlock_cell(fd, path)


def _unlock_cell(fd: int, path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)  # while still locked, so no one else can hold this inode's lock
    os.close(fd)


def _close_all(claims: dict[str, tuple[int, Path]], store_fd: int | None) -> None:
    for key in list(claims):
        _unlock_cell(*claims.pop(key))
    if store_fd is not None:
        with contextlib.suppress(OSError):
            os.close(store_fd)


def _default(o):
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serializable: {type(o)}")


def load_records(path: str | os.PathLike) -> list[dict]:
    """All records of a ``results.jsonl`` (or of every ``results.jsonl`` under a directory)."""
    p = Path(path)
    files = sorted(p.rglob("results.jsonl")) if p.is_dir() else [p]
    out, seen = [], set()
    for f in files:
        store = ResultsStore(f)
        store.close()
        for r in store.records:
            if r["key"] not in seen:
                seen.add(r["key"])
                out.append(r)
    return out
