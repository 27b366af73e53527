"""Verifiable step-structured tasks and their registry.

``TASKS`` / :func:`make_task` hold the synthetic tasks, built from their config alone. Text
benchmarks also need a tokenizer, so they have their own registry: ``TEXT_TASKS`` /
:func:`make_text_task` (``gsm8k``, ``math``, ``jsonl``; see :mod:`ttc.tasks.text`).
"""

from __future__ import annotations

from typing import Any

from ttc.tasks.answers import AnswerInterner, extract_answer_text, gold_answer
from ttc.tasks.arithmetic import ArithmeticTask
from ttc.tasks.base import INVALID_ANSWER, ProblemSet, Task, Tokenizer
from ttc.tasks.graph import GraphWalkTask
from ttc.tasks.hf_tokenizer import HFTokenizer, step_tables_of, stop_ids_of
from ttc.tasks.subset_sum import SubsetSumTask
from ttc.tasks.sudoku import SudokuTask
from ttc.tasks.text import TEXT_TASKS, TextTask, make_text_task

TASKS: dict[str, type] = {"arithmetic": ArithmeticTask, "graph": GraphWalkTask,
                          "subset_sum": SubsetSumTask, "sudoku": SudokuTask}


def make_task(name: str, **kwargs: Any) -> Task:
    """Builds a registered task by name; raises ``ValueError`` listing the choices otherwise."""
    if name not in TASKS:
        hint = (f"; text tasks need a tokenizer: make_text_task({name!r}, tokenizer, path=...)"
                if name in TEXT_TASKS else "")
        raise ValueError(f"unknown task {name!r}; choose one of {sorted(TASKS)}{hint}")
    return TASKS[name](**kwargs)


__all__ = [
    "INVALID_ANSWER", "TASKS", "TEXT_TASKS", "AnswerInterner", "ArithmeticTask", "GraphWalkTask",
    "HFTokenizer", "ProblemSet", "SubsetSumTask", "SudokuTask", "Task", "TextTask", "Tokenizer",
    "extract_answer_text", "gold_answer", "make_task", "make_text_task", "step_tables_of",
    "stop_ids_of",
]
