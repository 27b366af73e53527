"""Append-only results store: one JSON record per (method, budget, seed) cell.

* Each record is written as one line with a single ``write`` + ``fsync``; on open, a torn last
  line (an interrupted write) is cut off, so the file never holds a half record.
* Records are keyed by :func:`cell_key`; :meth:`ResultsStore.has` lets a run skip finished cells,
  so re-running a command resumes instead of recomputing, and never duplicates a record.
* An optional mirror (e.g. :class:`ttc.logging.WandbMirror`) receives every new record.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path


def cell_key(method: str, budget: int, seed: int, tag: str = "") -> str:
    return f"{method}|{budget}|{seed}|{tag}"


class ResultsStore:
    """Results of one run directory (``results.jsonl``)."""

    def __init__(self, path: str | os.PathLike, mirror: Callable[[dict], None] | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.mirror = mirror
        self._repair()
        self.records: list[dict] = list(self._read())
        self._keys = {r["key"] for r in self.records}

    def _repair(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            cut = data.rfind(b"\n") + 1
            with open(self.path, "r+b") as f:
                f.truncate(cut)

    def _read(self) -> Iterable[dict]:
        if not self.path.exists():
            return
        with open(self.path) as f:
            for line in f:
                line = line.strip()
                if line:
                    yield json.loads(line)

    def has(self, key: str) -> bool:
        return key in self._keys

    def add(self, record: dict) -> None:
        if "key" not in record:
            raise ValueError("record needs a 'key' (see cell_key)")
        if record["key"] in self._keys:
            return
        line = json.dumps(record, sort_keys=True, default=_default) + "\n"
        with open(self.path, "a") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        self.records.append(record)
        self._keys.add(record["key"])
        if self.mirror is not None:
            self.mirror(record)


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
        for r in ResultsStore(f).records:
            if r["key"] not in seen:
                seen.add(r["key"])
                out.append(r)
    return out
