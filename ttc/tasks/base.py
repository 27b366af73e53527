"""The `Task` protocol: what a verifiable, step-structured task must expose.

A task turns a seed into problems, problems into token arrays, and sampled token arrays back into
integer answer ids and per-step verdicts. Samplers and search methods only see this protocol, so a
second task can be added without touching them.

Conventions (shared by every task):

* Token arrays are right-padded with ``PAD``; a prompt starts with ``BOS``.
* A solution is a sequence of *steps*; every step but the last ends with the step delimiter
  token, the last step ends with ``EOS``.
* Answer ids are integers in ``[0, num_answers)``; :data:`INVALID_ANSWER` (``-1``) marks an
  unparseable answer and never wins a vote.
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Callable
from typing import Protocol, runtime_checkable

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Int

INVALID_ANSWER = -1


@dataclasses.dataclass(frozen=True, kw_only=True)
class Tokenizer:
    """A character-level tokenizer with explicit special tokens.

    Ids 0..2 are ``PAD``, ``BOS``, ``EOS``; the characters of ``alphabet`` follow in order.
    """

    alphabet: str
    step_delimiter: str

    PAD: int = 0
    BOS: int = 1
    EOS: int = 2

    def __post_init__(self) -> None:
        if len(set(self.alphabet)) != len(self.alphabet):
            raise ValueError(f"alphabet has repeated characters: {self.alphabet!r}")
        if self.step_delimiter not in self.alphabet:
            raise ValueError(f"step delimiter {self.step_delimiter!r} is not in the alphabet")

    @property
    def vocab_size(self) -> int:
        return 3 + len(self.alphabet)

    @property
    def step_id(self) -> int:
        return self.token_id(self.step_delimiter)

    def token_id(self, ch: str) -> int:
        return 3 + self.alphabet.index(ch)

    def encode(self, text: str) -> list[int]:
        try:
            return [3 + self.alphabet.index(c) for c in text]
        except ValueError as e:
            raise ValueError(f"cannot encode {text!r} with alphabet {self.alphabet!r}") from e

    def decode(self, ids) -> str:
        """Decodes ids to text, stopping at the first ``EOS``; ``PAD``/``BOS`` are dropped."""
        out = []
        for i in np.asarray(ids).tolist():
            if i == self.EOS:
                break
            if i >= 3:
                out.append(self.alphabet[i - 3])
        return "".join(out)


@dataclasses.dataclass(frozen=True)
class ProblemSet:
    """A batch of problems as host arrays.

    Attributes:
        prompts: ``[P, Lp]`` int32, ``BOS`` + prompt, right-padded with ``PAD``.
        prompt_len: ``[P]`` int32, number of non-pad prompt tokens.
        answers: ``[P]`` int32, gold answer ids.
        difficulty: ``[P]`` int32, the task's difficulty label (larger is harder).
        gold: ``[P, Ls]`` int32, the reference solution tokens (ending in ``EOS``), right-padded.
        texts: the prompt strings, for logs.
    """

    prompts: np.ndarray
    prompt_len: np.ndarray
    answers: np.ndarray
    difficulty: np.ndarray
    gold: np.ndarray
    texts: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.prompts.shape[0])

    def take(self, idx) -> ProblemSet:
        idx = np.asarray(idx)
        return ProblemSet(
            prompts=self.prompts[idx],
            prompt_len=self.prompt_len[idx],
            answers=self.answers[idx],
            difficulty=self.difficulty[idx],
            gold=self.gold[idx],
            texts=tuple(self.texts[i] for i in idx.tolist()),
        )


@runtime_checkable
class Task(Protocol):
    """A verifiable step-structured task (see module docstring for conventions)."""

    name: str
    tokenizer: Tokenizer
    num_answers: int
    max_prompt_len: int
    max_solution_len: int
    max_steps: int
    max_step_len: int  # tokens in the longest well-formed step, delimiter/EOS included

    def problems(self, n: int, *, seed: int, split: str) -> ProblemSet:
        """``n`` problems from ``split`` ('train' or 'test', disjoint) drawn with ``seed``."""
        ...

    def extract_answer(
        self, tokens: Int[Array, "B T"], prompt_len: Int[Array, " B"]
    ) -> Int[Array, " B"]:
        """Answer id of each row (jit-able, or host work: :func:`answers_on_host`);
        :data:`INVALID_ANSWER` when unparseable."""
        ...

    def check_steps(self, problem_index: int, problems: ProblemSet, solution: str) -> list[bool]:
        """Exact per-step verdicts of a decoded solution: step k is correct iff the solution is
        still on a correct path after step k (an error makes all later steps incorrect)."""
        ...

    def prefix_correct(
        self,
        tokens: Int[Array, "B T"],
        prompt_len: Int[Array, " B"],
        length: Int[Array, " B"],
        gold: Int[Array, "B Ls"],
    ) -> Bool[Array, " B"]:
        """Whether each row's generated prefix ``tokens[prompt_len:length]`` can still be
        completed to a correct solution (jit-able exact step checker, used by the oracle PRM;
        host work where :func:`answers_on_host`)."""
        ...


def answers_on_host(task: Task) -> bool:
    """Whether ``task``'s answers are host work (its class sets ``answers_on_host = True``: a
    text task decodes and parses text). Its :meth:`~Task.extract_answer` and
    :meth:`~Task.prefix_correct` then take host arrays and are never traced: the jitted
    samplers return :data:`INVALID_ANSWER` placeholders (:func:`traced_answers`) that their
    callers replace on the host, and an oracle's verdicts are computed between jitted steps."""
    return bool(getattr(task, "answers_on_host", False))


def traced_answers(task: Task, tokens: Int[Array, "B T"],
                   prompt_len: Int[Array, " B"]) -> Int[Array, " B"]:
    """``task.extract_answer`` inside jit; for a task whose answers are host work
    (:func:`answers_on_host`) :data:`INVALID_ANSWER` placeholders, to be filled on the host."""
    if answers_on_host(task):
        return jnp.full(jnp.shape(prompt_len), INVALID_ANSWER, jnp.int32)
    return task.extract_answer(tokens, prompt_len)


def describe_task(task: Task) -> dict:
    """A JSON-able description of ``task`` for records and config hashes: its
    ``description()`` if it has one, else its dataclass fields, else its name."""
    if callable(getattr(task, "description", None)):
        return task.description()
    if dataclasses.is_dataclass(task):
        return dataclasses.asdict(task)
    return {"name": task.name}


def answer_is_valid(answers: Int[Array, ...]) -> Bool[Array, ...]:
    return answers != INVALID_ANSWER


@dataclasses.dataclass(frozen=True)
class Drawn:
    """One random problem, as a task's ``draw`` returns it (see :func:`draw_problems`).

    ``key`` identifies the problem up to presentation (e.g. edge order): it decides the split
    and de-duplicates, so a test problem never reappears in training in another guise."""

    key: str
    prompt: str
    solution: str
    answer: int
    difficulty: int


def draw_problems(task: Task, n: int, *, seed: int, split: str, test_fraction: float,
                  draw: Callable[[np.random.Generator], Drawn], widen: str) -> ProblemSet:
    """``n`` distinct problems of ``split`` from ``draw``, deterministic in ``seed``.

    The split of a problem is a stable hash of its ``key`` (``crc32 < test_fraction`` is test),
    so train and test are disjoint whatever the seeds. ``widen`` names the settings to widen
    when the space runs out of distinct problems."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if n < 1:
        raise ValueError(f"need n >= 1 problems, got {n}")
    rng = np.random.default_rng([seed, 0 if split == "train" else 1])
    tok = task.tokenizer
    seen: set[str] = set()
    out: list[Drawn] = []
    tries = 0
    while len(out) < n:
        tries += 1
        if tries > 200 * n + 10_000:
            raise ValueError(f"could not draw {n} distinct {split} problems; widen {widen}")
        d = draw(rng)
        in_test = zlib.crc32(d.key.encode()) / 2**32 < test_fraction
        if d.key in seen or ("test" if in_test else "train") != split:
            continue
        seen.add(d.key)
        out.append(d)
    prompts = [[tok.BOS, *tok.encode(d.prompt)] for d in out]
    return ProblemSet(
        prompts=pad_to(prompts, task.max_prompt_len, tok.PAD),
        prompt_len=np.array([len(p) for p in prompts], np.int32),
        answers=np.array([d.answer for d in out], np.int32),
        difficulty=np.array([d.difficulty for d in out], np.int32),
        gold=pad_to([[*tok.encode(d.solution), tok.EOS] for d in out],
                    task.max_solution_len + 1, tok.PAD),
        texts=tuple(d.prompt for d in out),
    )


class UniqueSolutionTask:
    """Shared :class:`Task` machinery for tasks whose correct solution is unique.

    A subclass provides ``test_fraction``, ``_draw(rng) -> Drawn`` and ``_widen`` (the settings
    to widen when distinct problems run out); it gets :meth:`problems` (via
    :func:`draw_problems`) and :meth:`prefix_correct` (a prefix comparison with the reference
    solution, which is the exact step checker when the solution is unique).
    """

    _widen: str = "the task's ranges"

    def problems(self, n: int, *, seed: int, split: str) -> ProblemSet:
        return draw_problems(self, n, seed=seed, split=split, test_fraction=self.test_fraction,
                             draw=self._draw, widen=self._widen)

    def prefix_correct(
        self,
        tokens: Int[Array, "B T"],
        prompt_len: Int[Array, " B"],
        length: Int[Array, " B"],
        gold: Int[Array, "B Ls"],
    ) -> Bool[Array, " B"]:
        """Whether each row's generated tokens ``tokens[prompt_len:length]`` are a prefix of
        its reference solution ``gold`` (jit-able)."""
        _, t = tokens.shape
        ls = gold.shape[1]
        j = jnp.arange(ls)[None, :]
        idx = jnp.clip(prompt_len[:, None] + j, 0, t - 1)
        gen = jnp.take_along_axis(tokens, idx, axis=1)
        n_gen = length - prompt_len
        in_prefix = j < n_gen[:, None]
        return jnp.all((gen == gold) | ~in_prefix, axis=1) & (n_gen <= ls)


def pad_to(rows: list[list[int]], width: int, pad: int = 0) -> np.ndarray:
    out = np.full((len(rows), width), pad, dtype=np.int32)
    for i, r in enumerate(rows):
        if len(r) > width:
            raise ValueError(f"row of length {len(r)} does not fit width {width}")
        out[i, : len(r)] = r
    return out


__all__ = [
    "INVALID_ANSWER", "Drawn", "ProblemSet", "Task", "Tokenizer", "UniqueSolutionTask",
    "answer_is_valid", "describe_task", "draw_problems", "pad_to",
]
