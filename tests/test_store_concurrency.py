"""Several real processes share one results store (``tests/store_writer.py`` is the writer).

Run with ``pytest -s`` to see the figures of each test.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from ttc.results import ResultsStore

WRITER = str(Path(__file__).with_name("store_writer.py"))
TIMEOUT = 60  # seconds; a writer normally finishes in well under one


def _writer(store: Path, name: str, keys: int, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, WRITER, str(store), "--name", name,
                             "--keys", str(keys), *extra], stdout=subprocess.PIPE, text=True)


def _result(proc: subprocess.Popen) -> dict:
    out, _ = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0, out
    return json.loads(out.strip().splitlines()[-1])


def _file_keys(store: Path) -> list[str]:
    return [json.loads(line)["key"] for line in store.read_text().splitlines()]


def _together(store: Path, n_procs: int, n_keys: int, *extra: str) -> list[dict]:
    """Runs ``n_procs`` writers that start looping at the same moment; their summaries."""
    go = store.with_name("go")
    procs = [_writer(store, f"w{i}", n_keys, "--seed", str(i), "--go", str(go), *extra)
             for i in range(n_procs)]
    deadline = time.time() + TIMEOUT
    while not all(Path(f"{go}.ready-w{i}").exists() for i in range(n_procs)):
        assert time.time() < deadline and all(p.poll() is None for p in procs)
        time.sleep(0.01)
    go.touch()  # every writer has opened the store
    return [_result(p) for p in procs]


def test_concurrent_writers_write_every_cell_once(tmp_path):
    store, n_keys, n_procs = tmp_path / "results.jsonl", 50, 4
    results = _together(store, n_procs, n_keys)
    keys = _file_keys(store)
    counts = collections.Counter(keys)
    duplicates = sum(c - 1 for c in counts.values())
    per_writer = {r["name"]: len(r["added"]) for r in results}
    print(f"\nstore concurrency: cells={n_keys} processes={n_procs} lines={len(keys)} "
          f"duplicates={duplicates} missing={n_keys - len(counts)} added per writer={per_writer}")
    assert duplicates == 0 and sorted(counts) == sorted(f"k{i}" for i in range(n_keys))
    assert sum(per_writer.values()) == n_keys
    assert sum(r["skipped"] for r in results) == (n_procs - 1) * n_keys
    by_key = {json.loads(line)["key"]: json.loads(line)["writer"]
              for line in store.read_text().splitlines()}
    for r in results:  # each record was written by the writer that claimed it
        assert all(by_key[k] == r["name"] for k in r["added"])
    assert len(ResultsStore(store).records) == n_keys
    assert not store.with_name("results.jsonl.rejected").exists()
    assert sorted(os.listdir(store.with_name("results.jsonl.locks"))) == ["store.lock"]


def test_unclaimed_adds_are_not_duplicated(tmp_path):
    store, n_keys, n_procs = tmp_path / "results.jsonl", 30, 3
    _together(store, n_procs, n_keys, "--no-claim", "--sleep", "0")
    keys = _file_keys(store)
    print(f"\nunclaimed adds: cells={n_keys} processes={n_procs} lines={len(keys)} "
          f"duplicates={len(keys) - len(set(keys))}")
    assert sorted(keys) == sorted(f"k{i}" for i in range(n_keys))


def test_claims_of_a_killed_writer_are_taken_over(tmp_path):
    store, n_keys, n_held = tmp_path / "results.jsonl", 12, 4
    holder = _writer(store, "holder", n_keys, "--hold", str(n_held))
    try:
        held = json.loads(holder.stdout.readline())["held"]
        assert len(held) == n_held
        # while the holder lives, nobody else gets its cells
        first = _result(_writer(store, "first", n_keys, "--sleep", "0"))
        assert sorted(first["added"]) == sorted(set(_file_keys(store)))
        assert not set(held) & set(_file_keys(store)) and len(first["added"]) == n_keys - n_held
        locks = store.with_name("results.jsonl.locks")
        assert len(list(locks.glob("cell-*.lock"))) == n_held  # the live holder's claims
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=TIMEOUT)
        assert len(list(locks.glob("cell-*.lock"))) == n_held  # left behind by SIGKILL
    finally:
        if holder.poll() is None:
            holder.kill()
        holder.stdout.close()
    second = _result(_writer(store, "second", n_keys, "--sleep", "0"))
    keys = _file_keys(store)
    print(f"\nstale claims: cells={n_keys} held by the killed writer={n_held} "
          f"taken over={len(second['added'])} lines={len(keys)} "
          f"duplicates={len(keys) - len(set(keys))}")
    assert sorted(second["added"]) == sorted(held)
    assert sorted(keys) == sorted(f"k{i}" for i in range(n_keys))
    assert sorted(os.listdir(store.with_name("results.jsonl.locks"))) == ["store.lock"]
