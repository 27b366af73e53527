"""Tiny fixtures: a 2-layer d=32 policy on a small arithmetic task, so unit tests take seconds."""

from __future__ import annotations

import os

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=1")

import pytest  # noqa: E402

from ttc.checkpoint import LoadedModel  # noqa: E402
from ttc.models.transformer import TransformerConfig, create  # noqa: E402
from ttc.tasks.arithmetic import ArithmeticTask  # noqa: E402


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
