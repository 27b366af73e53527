"""Memory planning (:mod:`ttc.memory`): the plan's arithmetic against hand counts, rows that
shrink with free memory, a configuration that cannot fit refused with its numbers before
anything compiles, and the default sampler unchanged with the machine's real free memory."""

from __future__ import annotations

import contextlib
import dataclasses
import math

import jax
import numpy as np
import pytest

import ttc.decode
import ttc.memory
from ttc import rewards as R
from ttc.decode import TRACE_COUNTS, SamplingParams, generate_solutions
from ttc.errors import ConfigError
from ttc.memory import SAFETY, device_free_bytes, plan_rows
from ttc.models import LlamaConfig
from ttc.parallel import Layout
from ttc.search.loop import SearchConfig, run_search

# 1 layer, d=32, 8 query heads and 4 key/value heads of width 4, MLP 64, untied head
LLAMA = LlamaConfig(vocab_size=19, d_model=32, n_layers=1, n_heads=8, n_kv_heads=4, d_ff=64)
EMBED, HEAD, NORMS = 19 * 32, 32 * 19, 3 * 32  # embedding, head; attention, MLP, final norms
Q = OUT = 32 * 32
K = V = 32 * 16
GATE = UP = DOWN = 32 * 64
CACHE_LEN = 10
FREE = 100_000


def test_plan_arithmetic_matches_hand_counts():
    # no split: every parameter whole, 4 bytes each
    whole = EMBED + HEAD + NORMS + Q + OUT + K + V + GATE + UP + DOWN
    assert whole == LLAMA.n_params
    cache = 2 * 4 * CACHE_LEN * 4 * 4  # k and v of one layer: [1, 4 heads, 10 slots, 4] float32
    act = 4 * (4 * 19 + 3 * 64 + 2 * 8 * CACHE_LEN + CACHE_LEN)
    plan = plan_rows(LLAMA, cache_len=CACHE_LEN, want_rows=64, layout=Layout(data=2),
                     free_bytes=FREE)
    fit = (int(FREE * SAFETY) - 4 * whole) // (cache + act)
    assert (plan.param_bytes, plan.cache_bytes_per_row, plan.act_bytes_per_row) == (
        4 * whole, cache, act)
    assert (plan.free_bytes, plan.device_rows, plan.rows) == (FREE, fit, 2 * fit)
    assert fit == 15

    # model=2: q, k, v, o and the MLP halved, the rest replicated; the cache split like k/v
    split = EMBED + HEAD + NORMS + (Q + OUT + K + V + GATE + UP + DOWN) // 2
    plan = plan_rows(LLAMA, cache_len=CACHE_LEN, want_rows=64, layout=Layout(model=2),
                     free_bytes=FREE)
    assert (plan.param_bytes, plan.cache_bytes_per_row) == (4 * split, cache // 2)
    assert plan.rows == (int(FREE * SAFETY) - 4 * split) // (cache // 2 + act) == 27

    # bfloat16 halves the parameters and the cache; the logits stay float32
    plan = plan_rows(LLAMA, cache_len=CACHE_LEN, want_rows=64, dtype="bfloat16",
                     free_bytes=FREE)
    assert (plan.param_bytes, plan.cache_bytes_per_row, plan.act_bytes_per_row) == (
        2 * whole, cache // 2, act)


def test_model_split_of_8_keeps_the_4_kv_heads_whole():
    from ttc.memory import cache_bytes_per_row, param_bytes_per_device

    split = EMBED + HEAD + NORMS + K + V + (Q + OUT + GATE + UP + DOWN) // 8
    assert param_bytes_per_device(LLAMA, 8) == 4 * split
    assert cache_bytes_per_row(LLAMA, CACHE_LEN, 8) == cache_bytes_per_row(LLAMA, CACHE_LEN)


def test_rows_shrink_with_free_memory_and_never_exceed_the_request():
    def rows(free):
        return plan_rows(LLAMA, cache_len=CACHE_LEN, want_rows=64, free_bytes=free).rows

    assert rows(10 ** 12) == 64
    got = [rows(f) for f in (60_000, 100_000, 200_000, 10 ** 12)]
    assert got == sorted(got) and got[0] < got[-1] == 64 and got[0] >= 1


def _tight(policy, task, rows_per_device: float) -> int:
    """Free bytes per device, as measured with ``policy``'s parameters loaded, that hold
    ``rows_per_device`` rows more (the plan adds the loaded parameters back)."""
    plan = plan_rows(policy.cfg, cache_len=task.max_prompt_len + task.max_solution_len,
                     want_rows=1, free_bytes=10 ** 12)
    whole = math.ceil((plan.param_bytes + rows_per_device * plan.row_bytes) / SAFETY)
    return whole - plan.param_bytes


@contextlib.contextmanager
def _no_compiles():
    """Fails if XLA compiles anything within the block (or a sampler traces)."""
    seen: list[str] = []

    def listen(event: str, duration: float, **kw) -> None:
        if event == "/jax/core/compile/backend_compile_duration":
            seen.append(event)

    before = dict(TRACE_COUNTS)
    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        yield
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)
    assert not seen and dict(TRACE_COUNTS) == before


def test_a_policy_that_cannot_fit_stops_with_its_numbers_before_compiling(
        tiny_policy, task, monkeypatch):
    free = _tight(tiny_policy, task, 0.5)  # the parameters, but not one row
    monkeypatch.setattr(ttc.memory, "device_free_bytes", lambda device: free)
    ps = task.problems(4, seed=0, split="test")
    plan = plan_rows(tiny_policy.cfg, cache_len=task.max_prompt_len + task.max_solution_len,
                     want_rows=1, free_bytes=10 ** 12)
    key, sp = jax.random.key(0), SamplingParams.make(1.0)  # (making a key compiles)
    with _no_compiles(), pytest.raises(ConfigError) as err:
        generate_solutions(tiny_policy.graphdef, tiny_policy.params, task, ps.prompts,
                           ps.prompt_len, num_samples=4, sampling=sp, key=key)
    msg = str(err.value)
    assert "\n" not in msg and str(jax.devices()[0]) in msg
    for n in (plan.param_bytes, plan.cache_bytes_per_row, free + plan.param_bytes):
        assert f"{n / 2 ** 30:.3g} GiB" in msg
    for advice in ("model axis", "bfloat16", "fewer max new tokens"):
        assert advice in msg
    # a search needs one problem's rows at once: 4 rows do not fit where 3.5 would
    monkeypatch.setattr(ttc.memory, "device_free_bytes",
                        lambda device: _tight(tiny_policy, task, 3.5))
    spec = R.RewardSpec(kind="oracle", window=task.max_step_len)
    with _no_compiles(), pytest.raises(ConfigError, match=r"4 sample rows \(one problem's\)"):
        run_search(tiny_policy.graphdef, tiny_policy.params, spec, None, task, ps.prompts,
                   ps.prompt_len, ps.gold, cfg=SearchConfig(method="particle"), num_samples=4,
                   sampling=sp, key=key)
    # a search chunk is never shrunk (its draws depend on it): 10 rows fit, a chunk needs 16
    monkeypatch.setattr(ttc.memory, "device_free_bytes",
                        lambda device: _tight(tiny_policy, task, 10.5))
    with _no_compiles(), pytest.raises(ConfigError, match=r"chunk of 16 rows .* "
                                                          r"eval\.max_rows=10 or lower"):
        run_search(tiny_policy.graphdef, tiny_policy.params, spec, None, task, ps.prompts,
                   ps.prompt_len, ps.gold, cfg=SearchConfig(method="particle"), num_samples=4,
                   sampling=sp, key=key, chunk_rows=16)


class _Stop(Exception):
    """Raised by a spy instead of running the sampler."""


def _spy_slots(monkeypatch, run: bool = True) -> list[int]:
    """The ``slots`` (decode rows per device) of every ``_generate_jit`` call, which runs as
    usual, or (``run=False``) raises :class:`_Stop` instead of compiling."""
    slots: list[int] = []
    real = ttc.decode._generate_jit

    def spy(*args, **kw):
        slots.append(kw["slots"])
        if not run:
            raise _Stop
        return real(*args, **kw)

    monkeypatch.setattr(ttc.decode, "_generate_jit", spy)
    return slots


def test_default_sampler_unchanged_with_real_memory_and_capped_with_little(
        tiny_policy, task, monkeypatch):
    t = task.max_prompt_len + task.max_solution_len
    assert device_free_bytes(jax.devices()[0]) > 0  # the host's memory, shared by its devices
    assert plan_rows(tiny_policy.cfg, cache_len=t, want_rows=1024,
                     layout=Layout(data=2)).rows == 1024  # the default min(slots, max_rows)
    ps = task.problems(4, seed=1, split="test")
    key, sp = jax.random.key(4), SamplingParams.make(1.0)
    slots = _spy_slots(monkeypatch)

    def go():
        return generate_solutions(tiny_policy.graphdef, tiny_policy.params, task, ps.prompts,
                                  ps.prompt_len, num_samples=8, sampling=sp, key=key)

    real = go()
    with monkeypatch.context() as m:  # unbounded memory: the sampler as it was before plans
        m.setattr(ttc.decode, "plan_rows",
                  lambda cfg, **kw: plan_rows(cfg, free_bytes=10 ** 18, **kw))
        unplanned = go()
    for f in dataclasses.fields(real):
        np.testing.assert_array_equal(getattr(real, f.name), getattr(unplanned, f.name),
                                      err_msg=f.name)
    assert slots == [32, 32]  # the 64-row floor, on 2 devices
    slots = _spy_slots(monkeypatch, run=False)
    monkeypatch.setattr(ttc.memory, "device_free_bytes",
                        lambda device: _tight(tiny_policy, task, 8.5))
    with pytest.raises(_Stop):
        go()
    assert slots == [8]  # 8 rows fit on each device
