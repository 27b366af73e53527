"""Multi-step modular arithmetic chains with a scratchpad.

A problem is a chain of ``n_ops`` binary operations evaluated left to right modulo ``modulus``:

    prompt    ``3+5*2-4=``
    solution  ``3+5=8;8*2=6;6-4=2>2``  (modulus 10), then ``EOS``

Every step ``x op y = z`` is verifiable on its own, errors compound with the number of steps, and
the number of operations is the difficulty label. Because the chain is deterministic the correct
solution is unique, so the exact step checker is a prefix comparison with the reference solution
(usable inside ``jit``) and, independently, an arithmetic re-check of every step (used in tests
and for Monte-Carlo label audits).
"""

from __future__ import annotations

import dataclasses

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

_OPS = "+-*"


def _apply(x: int, op: str, y: int, m: int) -> int:
    if op == "+":
        return (x + y) % m
    if op == "-":
        return (x - y) % m
    return (x * y) % m


@dataclasses.dataclass(frozen=True, kw_only=True)
class ArithmeticTask(UniqueSolutionTask):
    """Modular arithmetic chains (see module docstring).

    Attributes:
        min_ops: fewest operations in a problem (difficulty lower bound), >= 1.
        max_ops: most operations in a problem (difficulty upper bound).
        modulus: all numbers live in ``[0, modulus)``; it is also the number of answer ids.
        test_fraction: share of the problem space reserved for the test split (by a stable hash
            of the prompt, so the splits are disjoint whatever the seeds).
    """

    min_ops: int = 2
    max_ops: int = 8
    modulus: int = 10
    test_fraction: float = 0.2
    name: str = "arithmetic"
    _widen = "the ops range or modulus"  # (class attribute, not a field)

    def __post_init__(self) -> None:
        if not 1 <= self.min_ops <= self.max_ops:
            raise ValueError(f"need 1 <= min_ops <= max_ops, got {self.min_ops}, {self.max_ops}")
        if not 2 <= self.modulus <= 1000:
            raise ValueError(f"modulus must be in [2, 1000], got {self.modulus}")
        if not 0.0 < self.test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in (0, 1), got {self.test_fraction}")

    # ---- vocabulary and sizes -------------------------------------------------------------
    @property
    def tokenizer(self) -> Tokenizer:
        return Tokenizer(alphabet="0123456789" + _OPS + "=;>", step_delimiter=";")

    @property
    def num_answers(self) -> int:
        return self.modulus

    @property
    def _digits(self) -> int:
        return len(str(self.modulus - 1))

    @property
    def max_prompt_len(self) -> int:
        d = self._digits
        return 1 + (self.max_ops + 1) * d + self.max_ops + 1  # BOS, numbers, ops, '='

    @property
    def max_solution_len(self) -> int:
        d = self._digits
        return self.max_ops * (3 * d + 3) + 1 + d  # steps 'x+y=z;' , '>', answer, EOS-for-';'

    @property
    def max_steps(self) -> int:
        return self.max_ops

    @property
    def max_step_len(self) -> int:
        """Tokens in the longest step: the final ``x+y=z>a`` + ``EOS``."""
        return 4 * self._digits + 4

    # ---- problems ---------------------------------------------------------------------------
    def _solve(self, nums: list[int], ops: list[str]) -> tuple[str, int]:
        x, steps = nums[0], []
        for op, y in zip(ops, nums[1:], strict=True):
            z = _apply(x, op, y, self.modulus)
            steps.append(f"{x}{op}{y}={z}")
            x = z
        return ";".join(steps) + f">{x}", x

    def _draw(self, rng: np.random.Generator) -> Drawn:
        k = int(rng.integers(self.min_ops, self.max_ops + 1))
        nums = rng.integers(0, self.modulus, size=k + 1).tolist()
        ops = [_OPS[i] for i in rng.integers(0, len(_OPS), size=k)]
        prompt = "".join(f"{a}{o}" for a, o in zip(nums, [*ops, "="], strict=True))
        sol, ans = self._solve(nums, ops)
        return Drawn(key=prompt, prompt=prompt, solution=sol, answer=ans, difficulty=k)

    # ---- verification -------------------------------------------------------------------
    def extract_answer(
        self, tokens: Int[Array, "B T"], prompt_len: Int[Array, " B"]
    ) -> Int[Array, " B"]:
        """Parses the digits between ``>`` and ``EOS``; anything malformed is invalid."""
        tok = self.tokenizer
        del prompt_len  # prompts never contain '>'
        d = self._digits
        _, t = tokens.shape
        is_gt = tokens == tok.token_id(">")
        has_gt = is_gt.any(axis=1)
        gt_pos = jnp.argmax(is_gt, axis=1)
        idx = jnp.clip(gt_pos[:, None] + 1 + jnp.arange(d + 1)[None, :], 0, t - 1)
        window = jnp.take_along_axis(tokens, idx, axis=1)  # [B, d+1]
        zero = tok.token_id("0")
        is_digit = (window >= zero) & (window <= zero + 9)
        n_digits = jnp.cumprod(is_digit, axis=1).sum(axis=1)  # leading digits
        after = jnp.take_along_axis(window, jnp.clip(n_digits, 0, d)[:, None], axis=1)[:, 0]
        pos = jnp.arange(d + 1)[None, :]
        place = jnp.where(pos < n_digits[:, None], 10 ** (n_digits[:, None] - 1 - pos), 0)
        value = jnp.sum(jnp.where(is_digit, window - zero, 0) * place, axis=1)
        ok = (
            has_gt
            & (n_digits >= 1)
            & (n_digits <= d)
            & (after == tok.EOS)
            & (value < self.modulus)
        )
        return jnp.where(ok, value, INVALID_ANSWER).astype(jnp.int32)

    def check_steps(self, problem_index: int, problems: ProblemSet, solution: str) -> list[bool]:
        """Re-derives every step arithmetically (independent of the reference string)."""
        text = problems.texts[problem_index]
        nums = [int(x) for x in "".join(" " if c in _OPS else c for c in text[:-1]).split()]
        ops = [c for c in text if c in _OPS]
        steps = solution.split(";")
        verdicts, x, ok = [], nums[0], True
        for k, step in enumerate(steps):
            last = k == len(steps) - 1
            expect = None
            if k < len(ops):
                z = _apply(x, ops[k], nums[k + 1], self.modulus)
                expect = f"{x}{ops[k]}{nums[k + 1]}={z}"
                if k == len(ops) - 1:
                    expect += f">{z}"
                x = z
            step_ok = expect is not None and step == expect and (last == (k == len(ops) - 1))
            ok = ok and step_ok
            verdicts.append(ok)
        return verdicts
