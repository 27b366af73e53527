"""Subset sum with a scratchpad: a task where checking a solution is cheaper than finding it.

A problem is ``k`` numbers in ``[1, max_value]`` and a target; exactly one subset of the
positions sums to the target (problems with several are redrawn). The solution scans the numbers
in prompt order, one step each, taking (``+``) or skipping (``_``) the number and writing the
running sum:

    prompt    ``5,3,8,2,6=11``
    solution  ``+5=5;_3=5;_8=5;_2=5;+6=11``   then ``EOS``; the answer is the take/skip pattern

Why this task: in the arithmetic and graph tasks every step is determined by the previous one,
so checking a step costs what writing it costs, and the only verifier that helps is a stronger
solver. Here a step's arithmetic is as easy to check as to write, but choosing *which* numbers to
take is a search over ``2^k`` subsets that the scan must commit to one number at a time, while
checking a finished solution is local: are the running sums right, and is the last one the
target? Subset sum is NP-complete in general (Karp 1972); the generation-verification gap is
the property real verifiers exploit (Cobbe et al. 2021; Snell et al. 2024 §3), and Countdown
(Gandhi et al. 2024, "Stream of Search") is its best-known synthetic cousin. Countdown itself
has many correct solutions per problem, which this framework's answer ids (one correct answer
per problem, compared by equality and voted on) cannot express; subset sum with a unique subset
keeps the answer unique and the check cheap.

Answer ids: the pattern read from the generated ``+``/``_`` tokens, ``mask + 2**k`` with bit
``j`` set when number ``j`` is taken (so ids of different ``k`` never collide); valid only when
the solution finished (``EOS``) and made exactly ``k`` decisions. The running sums are
scratchpad: a solution with the right pattern and a slip in a sum still has the right answer,
as a worked arithmetic solution with a slip and the right final number does. Voting is over
patterns: wrong subsets scatter over many ids while the right one is a single id.

Difficulty = ``k``. Because the subset is unique and the scan order fixed, the correct solution
is unique: the exact step checker is a prefix comparison with the reference solution (jit-able,
used by the oracle PRM), and independently an enumeration of all subsets of the numbers parsed
from the prompt text (:meth:`SubsetSumTask.check_steps`).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Int

from ttc.tasks.base import (
    INVALID_ANSWER,
    Drawn,
    ProblemSet,
    Tokenizer,
    UniqueSolutionTask,
)

_TAKE, _SKIP, _SEP, _END_PROMPT, _STEP = "+", "_", ",", "=", ";"


def subsets_reaching(numbers: list[int], target: int) -> list[tuple[int, ...]]:
    """Every take/skip pattern (0/1 per position) of ``numbers`` whose taken numbers sum to
    ``target`` (the slow obvious enumeration of all ``2**k`` subsets)."""
    return [m for m in itertools.product((0, 1), repeat=len(numbers))
            if sum(b * x for b, x in zip(m, numbers, strict=True)) == target]


@dataclasses.dataclass(frozen=True, kw_only=True)
class SubsetSumTask(UniqueSolutionTask):
    """Subset sum with a unique solution (see module docstring).

    Attributes:
        min_numbers: fewest numbers in a problem (difficulty lower bound), >= 1.
        max_numbers: most numbers in a problem (difficulty upper bound), <= 10.
        max_value: numbers are drawn uniformly from ``[1, max_value]`` (repeats allowed; a
            problem with two subsets reaching the target is redrawn), <= 99.
        test_fraction: share of the problem space reserved for the test split, by a stable hash
            of the problem up to the order of its numbers (the sorted numbers and the target), so
            a test problem never appears in training reordered.
    """

    min_numbers: int = 3
    max_numbers: int = 6
    max_value: int = 9
    test_fraction: float = 0.2
    name: str = "subset_sum"
    _widen = "the numbers range or max_value"  # (class attribute, not a field)

    def __post_init__(self) -> None:
        if not 1 <= self.min_numbers <= self.max_numbers <= 10:
            raise ValueError("need 1 <= min_numbers <= max_numbers <= 10, got "
                             f"{self.min_numbers}, {self.max_numbers}")
        if not 1 <= self.max_value <= 99:
            raise ValueError(f"max_value must be in [1, 99], got {self.max_value}")
        if not 0.0 < self.test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in (0, 1), got {self.test_fraction}")

    # ---- vocabulary and sizes -------------------------------------------------------------
    @property
    def tokenizer(self) -> Tokenizer:
        return Tokenizer(alphabet="0123456789" + _TAKE + _SKIP + _END_PROMPT + _SEP + _STEP,
                         step_delimiter=_STEP)

    @property
    def num_answers(self) -> int:
        return 2 ** (self.max_numbers + 1)

    @property
    def _value_digits(self) -> int:
        return len(str(self.max_value))

    @property
    def _sum_digits(self) -> int:
        return len(str(self.max_numbers * self.max_value))

    @property
    def max_prompt_len(self) -> int:
        k = self.max_numbers
        return 1 + k * self._value_digits + (k - 1) + 1 + self._sum_digits  # BOS ... '=' target

    @property
    def max_step_len(self) -> int:
        """Tokens in the longest step: ``+x=s`` and its delimiter (or ``EOS``)."""
        return 3 + self._value_digits + self._sum_digits

    @property
    def max_solution_len(self) -> int:
        return self.max_numbers * self.max_step_len  # the last step's delimiter is the EOS

    @property
    def max_steps(self) -> int:
        return self.max_numbers

    # ---- problems ---------------------------------------------------------------------------
    @staticmethod
    def solution_text(numbers: list[int], pattern: tuple[int, ...]) -> str:
        """The scan solution of ``numbers`` for a take/skip ``pattern``."""
        s, steps = 0, []
        for x, b in zip(numbers, pattern, strict=True):
            s += b * x
            steps.append(f"{_TAKE if b else _SKIP}{x}={s}")
        return _STEP.join(steps)

    @staticmethod
    def answer_id(pattern: tuple[int, ...]) -> int:
        """``mask + 2**k`` for a take/skip pattern of ``k`` numbers (bit ``j``: number ``j``)."""
        return sum(b << j for j, b in enumerate(pattern)) + (1 << len(pattern))

    @staticmethod
    def parse_prompt(text: str) -> tuple[list[int], int]:
        """``(numbers, target)`` of a prompt string such as ``5,3,8,2,6=11``."""
        nums, target = text.split(_END_PROMPT)
        return [int(x) for x in nums.split(_SEP)], int(target)

    def _draw(self, rng: np.random.Generator) -> Drawn:
        while True:
            k = int(rng.integers(self.min_numbers, self.max_numbers + 1))
            nums = rng.integers(1, self.max_value + 1, size=k).tolist()
            pattern = tuple(int(b) for b in rng.integers(0, 2, size=k))
            if not any(pattern):
                continue
            target = sum(b * x for b, x in zip(pattern, nums, strict=True))
            if len(subsets_reaching(nums, target)) == 1:
                break
        prompt = _SEP.join(map(str, nums)) + _END_PROMPT + str(target)
        key = _SEP.join(map(str, sorted(nums))) + _END_PROMPT + str(target)
        return Drawn(key=key, prompt=prompt, solution=self.solution_text(nums, pattern),
                     answer=self.answer_id(pattern), difficulty=k)

    # ---- verification -------------------------------------------------------------------
    def extract_answer(
        self, tokens: Int[Array, "B T"], prompt_len: Int[Array, " B"]
    ) -> Int[Array, " B"]:
        """The take/skip pattern of the generated ``+``/``_`` tokens before the first ``EOS``.

        Valid iff the solution has an ``EOS`` and exactly ``k`` decisions, ``k`` being the
        number of numbers in the prompt (its separators plus one)."""
        tok = self.tokenizer
        _, t = tokens.shape
        pos = jnp.arange(t)[None, :]
        gen = pos >= prompt_len[:, None]
        is_eos = (tokens == tok.EOS) & gen
        has_eos = is_eos.any(axis=1)
        eos_pos = jnp.where(has_eos, jnp.argmax(is_eos, axis=1), t)
        body = gen & (pos < eos_pos[:, None])
        take = (tokens == tok.token_id(_TAKE)) & body
        decision = take | ((tokens == tok.token_id(_SKIP)) & body)
        order = jnp.cumsum(decision, axis=1) - 1  # index of each decision
        n = decision.sum(axis=1)
        mask = jnp.sum(jnp.where(take, jnp.left_shift(1, jnp.clip(order, 0, 30)), 0), axis=1)
        k = ((tokens == tok.token_id(_SEP)) & ~gen).sum(axis=1) + 1
        ok = has_eos & (n == k)
        return jnp.where(ok, mask + jnp.left_shift(1, k), INVALID_ANSWER).astype(jnp.int32)

    def check_steps(self, problem_index: int, problems: ProblemSet, solution: str) -> list[bool]:
        """Enumerates every subset of the prompt's numbers (independent of the reference)."""
        nums, target = self.parse_prompt(problems.texts[problem_index])
        (pattern,) = subsets_reaching(nums, target)
        expect = self.solution_text(nums, pattern).split(_STEP)
        steps = solution.split(_STEP)
        verdicts, ok = [], True
        for j, step in enumerate(steps):
            last = j == len(steps) - 1
            ok = ok and j < len(expect) and step == expect[j] and last == (j == len(expect) - 1)
            verdicts.append(ok)
        return verdicts


@functools.lru_cache(maxsize=16)
def count_problems(min_numbers: int, max_numbers: int, max_value: int, *,
                   exact_limit: int = 2_000_000) -> int:
    """Distinct problems (sorted numbers, target) with a unique subset, for the schema's
    problem-space check.

    Exact (every multiset of numbers, every subset) while that is at most ``exact_limit``
    subsets; beyond, the upper bound "every multiset times every reachable target"."""
    from math import comb

    multisets = {k: comb(max_value + k - 1, k) for k in range(min_numbers, max_numbers + 1)}
    if sum(m << k for k, m in multisets.items()) > exact_limit:
        return sum(m * k * max_value for k, m in multisets.items())
    total = 0
    for k in multisets:
        for nums in itertools.combinations_with_replacement(range(1, max_value + 1), k):
            sums: dict[int, int] = {}
            for m in itertools.product((0, 1), repeat=k):
                s = sum(b * x for b, x in zip(m, nums, strict=True))
                sums[s] = sums.get(s, 0) + 1
            total += sum(1 for s, c in sums.items() if c == 1 and s > 0)
    return total
