"""Tiny fixtures: a 2-layer d=32 policy on a small arithmetic task, so unit tests take seconds."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
# The suite is bound by XLA compile time of tiny programs. Tests (and the processes they start,
# which inherit this) compile with most optimisations off (`jax_disable_most_optimizations`:
# LLVM at -O0, no expensive passes), which cuts compile time by about a third; the programs'
# run time barely matters at these sizes. Floating-point semantics are kept (no fast-math),
# and every test compares its paths under the same setting. The one thing it changes is the
# last bit of a sum compiled in two different programs: tests that compare two programs bit
# for bit use the `product_compile` fixture. `JAX_DISABLE_MOST_OPTIMIZATIONS=0 pytest` compiles
# every test as the product does.
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
# One JAX persistent compilation cache for the whole test session: the xdist workers and the
# `ttc-run` subprocesses the tests start compile the same tiny programs again and again, and
# the suite is bound by XLA compile time. A new directory per session (made here, in the
# controller, before the workers start; they inherit the environment), so every run compiles
# from scratch once and a run's timings do not depend on an earlier run.
if "PYTEST_XDIST_WORKER" not in os.environ and "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _jax_cache = tempfile.mkdtemp(prefix="ttc-tests-jax-cache-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _jax_cache
    atexit.register(shutil.rmtree, _jax_cache, ignore_errors=True)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

import pytest

from ttc.checkpoint import LoadedModel
from ttc.models.transformer import TransformerConfig, create
from ttc.tasks.arithmetic import ArithmeticTask


def pytest_xdist_auto_num_workers(config) -> int:
    """``pytest -n auto`` (the default, ``pyproject.toml``): one worker per usable core, at most
    4. Most tests compile small XLA programs on one thread, so two workers on two cores finish
    the suite in a little over half the time; more than 4 would mostly repeat the session
    fixtures (each worker trains its own tiny models)."""
    return max(1, min(4, len(os.sched_getaffinity(0))))


@pytest.fixture(scope="module")
def product_compile():
    """Compiles with every optimisation on, as the product does, for the tests of one module
    that compare two different XLA programs bit for bit (a jitted loop and the same steps
    jitted one by one): at LLVM -O0 such programs may round a sum's last bit differently.
    Clears JAX's in-memory caches on entry and exit, so no program compiled under the other
    setting is reused."""
    import jax

    before = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", False)
    jax.clear_caches()
    yield
    jax.config.update("jax_disable_most_optimizations", before)
    jax.clear_caches()


@pytest.fixture(scope="session")
def task() -> ArithmeticTask:
    return ArithmeticTask(min_ops=1, max_ops=3, modulus=10)


@pytest.fixture(scope="session")
def tiny_cfg(task) -> TransformerConfig:
    return TransformerConfig(
        vocab_size=task.tokenizer.vocab_size, d_model=32, n_layers=2, n_heads=4, d_ff=64,
        max_len=task.max_prompt_len + task.max_solution_len,
    )


@pytest.fixture(scope="session")
def tiny_policy(tiny_cfg) -> LoadedModel:
    return LoadedModel.from_module(create(tiny_cfg, seed=0))


@pytest.fixture(scope="session")
def small_task() -> ArithmeticTask:
    return ArithmeticTask(min_ops=1, max_ops=2, modulus=5)


@pytest.fixture(scope="session")
def trained_policy(small_task) -> LoadedModel:
    """A d=32 policy trained briefly on 1-2-op chains mod 5: well-formed, often right."""
    from ttc.train import TrainConfig, train_policy

    cfg = TransformerConfig(vocab_size=small_task.tokenizer.vocab_size, d_model=32, n_layers=2,
                            n_heads=4, d_ff=64,
                            max_len=small_task.max_prompt_len + small_task.max_solution_len)
    tc = TrainConfig(steps=250, batch_size=64, lr=3e-3, warmup=20, eval_every=250,
                     eval_problems=64, stop_accuracy=1.0)
    model = train_policy(small_task, cfg, tc, progress=False)
    model.meta["id"] = "test-trained-policy"
    return model
