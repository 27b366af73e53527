"""The evaluation loop with concurrent writers: claimed cells are left to their claimer, a pool is
sampled once, claims are released on failure, and pool files are written atomically."""

import json

import numpy as np
import pytest

from ttc.errors import ConfigError
from ttc.evaluate import EvalConfig, evaluate, run_tag
from ttc.evaluate import core as evaluate_core
from ttc.evaluate import pools as P
from ttc.evaluate.cells import seed_cells
from ttc.methods import make_spec
from ttc.results import ResultsStore

METHODS = [
    {"name": "single"}, {"name": "majority"},
    {"name": "bon", "label": "bon_oracle", "reward": "oracle", "noise": 0.2},
    {"name": "beam", "label": "beam_oracle", "reward": "oracle", "beam_width": 2},
]
CFG = EvalConfig(budgets=(1, 2), search_budgets=(2,), n_problems=4, max_rows=16)


def _run(policy, task, store, run_dir, methods=METHODS):
    return evaluate(policy, task, [make_spec(m) for m in methods], CFG, store, run_dir=run_dir,
                    progress=False)


def _comparable(records):
    return {r["key"]: {k: v for k, v in r.items() if k != "wall_time_s"} for r in records}


def _file_records(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_cells_claimed_elsewhere_are_left_to_their_claimer(tmp_path, task, tiny_policy):
    ref_dir, run_dir = tmp_path / "ref", tmp_path / "run"
    _run(tiny_policy, task, ResultsStore(ref_dir / "results.jsonl"), ref_dir)
    ref = _comparable(_file_records(ref_dir / "results.jsonl"))
    assert len(ref) == 1 + 2 + 2 + 1
    keys = sorted(ref)
    other = ResultsStore(run_dir / "results.jsonl")  # another writer: it holds two cells
    held = [k for k in keys if k.startswith(("majority|2|", "beam_oracle|"))]
    assert len(held) == 2 and all(other.claim(k) for k in held)
    mine = ResultsStore(run_dir / "results.jsonl")
    first = _run(tiny_policy, task, mine, run_dir)
    assert sorted(r["key"] for r in first) == sorted(set(keys) - set(held))
    # the other writer records one of its cells; the end-of-run refresh shows it
    other.add(next(r for r in _file_records(ref_dir / "results.jsonl") if r["key"] == held[0]))
    assert _run(tiny_policy, task, mine, run_dir, methods=[]) == []
    assert mine.has(held[0]) and not mine.has(held[1])
    other.release(held[1])  # ... and gives the other one up: a re-run does just that cell
    second = _run(tiny_policy, task, mine, run_dir)
    assert [r["key"] for r in second] == [held[1]]
    got = _comparable(_file_records(run_dir / "results.jsonl"))
    assert got == ref  # the same records as one writer's run, every field but wall time
    assert not list((run_dir / "pools").glob("*.tmp")) and not list(
        (run_dir / "pools").glob(".*"))


def test_claims_are_released_when_a_cell_fails(tmp_path, task, tiny_policy, monkeypatch):
    def broken(*a, **k):
        raise RuntimeError("sampler failed")

    monkeypatch.setattr(evaluate_core, "generate_solutions", broken)
    store = ResultsStore(tmp_path / "results.jsonl")
    with pytest.raises(RuntimeError, match="sampler failed"):
        _run(tiny_policy, task, store, tmp_path)
    later = ResultsStore(tmp_path / "results.jsonl")
    tag = run_tag(tiny_policy, task, CFG)
    cells = seed_cells([make_spec(m) for m in METHODS], CFG, 0, tag)
    pool = P.PoolFile(run_dir=tmp_path, tag=tag, seed=0, n=CFG.pool_size)
    for key in [c.key for c in cells] + [pool.claim_key]:
        assert later.claim(key), key  # nothing is left held by the failed run
    assert not store._claims and store.records == []


def test_a_bad_beam_width_for_the_budgets_fails_before_any_work(tmp_path, task, tiny_policy):
    store = ResultsStore(tmp_path / "results.jsonl")
    bad = [{"name": "beam", "label": "b3", "reward": "oracle", "beam_width": 3}]
    with pytest.raises(ConfigError, match="beam_width=3"):
        evaluate(tiny_policy, task, [make_spec(m) for m in bad],
                 EvalConfig(budgets=(1,), search_budgets=(4,), n_problems=2), store,
                 run_dir=tmp_path, progress=False)
    assert store.records == []


class _FakeStore:
    """Claims of a pool as another live process holds them: refused ``busy`` times; on the
    refusal numbered ``write_on`` the other process finishes writing the file."""

    def __init__(self, busy, write_on=None, file=None, pool=None):
        self.busy, self.write_on, self.file, self.pool = busy, write_on, file, pool
        self.calls, self.held = 0, set()

    def claim(self, key):
        self.calls += 1
        if self.calls == self.write_on:
            self.file.save(self.pool)
        if self.calls <= self.busy:
            return False
        self.held.add(key)
        return True

    def release(self, key):
        self.held.discard(key)


def _samples(n=2):
    from ttc.decode import Samples

    z = np.zeros((3, n), np.int32)
    return Samples(tokens=np.zeros((3, n, 5), np.int32), length=z + 5, answers=z - 1,
                   loglik=z.astype(np.float32), useful_tokens=z + 2,
                   useful_ctx=z.astype(np.float32), executed_row_steps=z + 3, cache_len=5,
                   prefill_tokens=np.ones(3, np.int64), prefill_ctx=np.ones(3, np.float64))


def test_a_pool_is_sampled_once_while_another_process_samples_it(tmp_path):
    file = P.PoolFile(run_dir=tmp_path, tag="t", seed=0, n=2)
    sampled = []

    def sample():
        sampled.append(1)
        return _samples()

    # the other process writes the file while this one waits: it is read, never re-sampled
    theirs = P.Pool(samples=_samples(), seconds=7.5)
    store = _FakeStore(busy=10, write_on=3, file=file, pool=theirs)
    got = P.obtain_pool(file, store, sample, poll_s=0.0)
    assert sampled == [] and got.seconds == 7.5 and store.calls == 3
    np.testing.assert_array_equal(got.samples.executed_row_steps, theirs.samples.executed_row_steps)
    # the other process dies without writing it: its claim dies, this one samples the pool
    file2 = P.PoolFile(run_dir=tmp_path, tag="t", seed=1, n=2)
    store2 = _FakeStore(busy=2)
    got2 = P.obtain_pool(file2, store2, sample, poll_s=0.0)
    assert sampled == [1] and store2.calls == 3 and store2.held == set()
    assert file2.load().seconds == got2.seconds and file2.time_path.exists()
    # written: read at once, no claim needed
    store3 = _FakeStore(busy=0)
    P.obtain_pool(file2, store3, sample)
    assert sampled == [1] and store3.calls == 0


def test_pool_files_are_written_atomically_under_a_unique_name(tmp_path, monkeypatch):
    target = tmp_path / "pool.npz"
    seen = []
    real_replace = P.os.replace

    def spy(src, dst):
        seen.append(src)
        real_replace(src, dst)

    monkeypatch.setattr(P.os, "replace", spy)
    P._write_atomic(target, lambda f: f.write(b"abc"))
    assert target.read_bytes() == b"abc"
    assert str(P.os.getpid()) in seen[0].name and seen[0].parent == tmp_path
    P._write_atomic(target, lambda f: f.write(b"xyz"))
    assert seen[0] != seen[1]  # unique per call, not only per process

    def fail(f):
        f.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        P._write_atomic(target, fail)
    assert target.read_bytes() == b"xyz"  # the old file is intact, no temporary left over
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pool.npz"]
