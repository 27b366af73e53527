"""Verifiable step-structured tasks and their registry."""

from __future__ import annotations

from typing import Any

from ttc.tasks.arithmetic import ArithmeticTask
from ttc.tasks.base import INVALID_ANSWER, ProblemSet, Task, Tokenizer
from ttc.tasks.graph import GraphWalkTask

TASKS: dict[str, type] = {"arithmetic": ArithmeticTask, "graph": GraphWalkTask}


def make_task(name: str, **kwargs: Any) -> Task:
    """Builds a registered task by name; raises ``ValueError`` listing the choices otherwise."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose one of {sorted(TASKS)}")
    return TASKS[name](**kwargs)


__all__ = [
    "INVALID_ANSWER", "TASKS", "ArithmeticTask", "GraphWalkTask", "ProblemSet", "Task", "Tokenizer",
    "make_task",
]
