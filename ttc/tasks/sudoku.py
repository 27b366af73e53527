"""4x4 mini-sudoku (Shidoku): a task where checking a solution is cheaper than finding it.

A problem is a valid 4x4 grid (digits 1-4; every row, column and 2x2 box a permutation; there
are 288 such grids) with ``k`` cells blanked, such that exactly one grid completes the givens
(problems with several completions are redrawn). The prompt is the 16 cells row-major, rows
separated by ``|``, ``.`` for a blank; the solution fills the blanks in row-major order, one
step each, naming the cell (row letter ``a``-``d``, column digit ``1``-``4``) and its digit:

    prompt    ``1.3.|4.21|..42|2.13=``
    solution  ``a2=2;a4=4;b2=3;c1=3;c2=1;d2=4``   then ``EOS``; the answer is the digits

Why this task: in the arithmetic and graph tasks every step is determined by the previous one,
so checking a step costs what writing it costs, and the only verifier that helps is a stronger
solver. Subset sum (:mod:`ttc.tasks.subset_sum`) was meant to open a gap but did not: the
policy fudges its running sums, and catching that means re-doing the additions. Here the gap is
structural. A sudoku is a constraint-satisfaction problem (Latin squares with box constraints;
Simonis 2005, "Sudoku as a constraint problem"; generalised sudoku is NP-complete, Yato & Seta
2003): writing a right digit needs reasoning about the whole grid (often about blanks that come
later in the scan), while a finished wrong solution always shows itself by a lookup. Because
the completion is unique, a filled grid that differs from it is not a valid sudoku, so some
filled digit repeats a given or filled digit of its row, column or box. A verifier only has to
compare each written digit with the at most 7 cells that share a unit with it: checking is
cheaper than solving, the generation-verification gap that real verifiers exploit (Cobbe et al.
2021; Snell et al. 2024 §3). A wrong *prefix* need not conflict yet (the conflict may surface
only at a later blank), so the exact step checker asks whether the filled prefix can still be
completed, not only whether it conflicts.

Answer ids: the digits written in the ``k`` steps, least significant first, as a base-4 number
(digit ``d`` of step ``j`` contributes ``(d - 1) * 4**j``) plus ``4**k``, so ids of different
``k`` never collide; valid only when the solution finished (``EOS`` right after step ``k``) with
exactly one well-formed step per blank, each naming the right cell, in row-major order.

Difficulty = ``k``, the number of blanks. ``k`` is drawn uniformly from ``[min_blanks,
max_blanks]`` first and the grid and blanks are redrawn for that ``k`` until the completion is
unique, so every difficulty is equally frequent. The problem key (split, de-duplication) is the
prompt itself: a puzzle has no other presentation (a relabelled or transposed puzzle has another
answer and is another problem). Because the completion is unique and the scan order fixed, the
correct solution is unique: the exact step checker is a prefix comparison with the reference
solution (jit-able, used by the oracle PRM), and independently a conflict check and a
backtracking search for completions of the grid parsed from the prompt text
(:meth:`SudokuTask.check_steps`).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator, Sequence

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

_DIGITS, _ROWS = "1234", "abcd"
_BLANK, _ROW_SEP, _END_PROMPT, _SET, _STEP = ".", "|", "=", "=", ";"
_CELLS, _SIDE = 16, 4
_MAX_BLANKS = 12  # at least 4 givens: a 4x4 sudoku needs 4 to have a unique completion
_STEP_LEN = 5  # ``b3=4`` and its delimiter (or ``EOS``)
_CELL_POS = np.array([1 + i + i // _SIDE for i in range(_CELLS)])
"""Token position of each cell in a prompt: ``BOS``, then four rows of four separated by ``|``."""


def _unit_peers(cell: int) -> frozenset[int]:
    """The other cells that share a row, column or 2x2 box with ``cell``."""
    r, c = divmod(cell, _SIDE)
    return frozenset(i for i in range(_CELLS) if i != cell and (
        i // _SIDE == r or i % _SIDE == c or (i // 8, i % _SIDE // 2) == (r // 2, c // 2)))


PEERS: tuple[frozenset[int], ...] = tuple(_unit_peers(i) for i in range(_CELLS))
"""``PEERS[i]``: the 7 cells sharing a row, column or box with cell ``i`` (row-major)."""


def conflicts(grid: Sequence[int], cell: int, digit: int) -> bool:
    """Whether ``digit`` at ``cell`` repeats a digit of its row, column or box (``0``: blank)."""
    return any(grid[p] == digit for p in PEERS[cell])


def completions(grid: Sequence[int]) -> Iterator[tuple[int, ...]]:
    """Every valid grid that agrees with the non-zero cells of ``grid`` (plain backtracking,
    first blank first)."""
    if 0 not in grid:
        if all(not conflicts(grid, i, v) for i, v in enumerate(grid)):
            yield tuple(grid)
        return
    cell = list(grid).index(0)
    for d in range(1, _SIDE + 1):
        if not conflicts(grid, cell, d):
            yield from completions([*grid[:cell], d, *grid[cell + 1:]])


@functools.lru_cache(maxsize=1)
def all_grids() -> np.ndarray:
    """The 288 valid 4x4 grids, ``[288, 16]`` int8, row-major, in lexicographic order."""
    return np.array(list(completions([0] * _CELLS)), np.int8)


def _popcounts() -> np.ndarray:
    """``[2**16]``: the number of cells in each blank-set bit mask."""
    return np.array([bin(m).count("1") for m in range(1 << _CELLS)], np.int8)


@functools.lru_cache(maxsize=1)
def unique_counts() -> np.ndarray:
    """``[17]``: how many (grid, blank set) problems with ``k`` blanks have a unique completion.

    The completion of grid ``g`` with blanks ``S`` is unique iff no other grid agrees with ``g``
    outside ``S``, i.e. iff ``S`` contains none of the masks of cells where another grid differs
    from ``g``. The supersets of those masks are marked over all ``2**16`` blank sets by an OR
    over subsets (one pass per cell), for each of the 288 grids."""
    grids = all_grids()
    weights = 1 << np.arange(_CELLS)
    pop = _popcounts()
    total = np.zeros(_CELLS + 1, np.int64)
    for g in grids:
        masks = ((grids != g) * weights).sum(axis=1)
        bad = np.zeros(1 << _CELLS, bool)
        bad[masks[masks != 0]] = True
        for bit in range(_CELLS):
            view = bad.reshape(-1, 2, 1 << bit)
            view[:, 1, :] |= view[:, 0, :]
        total += np.bincount(pop[~bad], minlength=_CELLS + 1)
    return total


@functools.lru_cache(maxsize=16)
def count_problems(min_blanks: int, max_blanks: int) -> int:
    """Distinct problems (grid, blank set) with a unique completion and ``min_blanks`` to
    ``max_blanks`` blanks, for the schema's problem-space check (exact)."""
    return int(unique_counts()[min_blanks:max_blanks + 1].sum())


@dataclasses.dataclass(frozen=True, kw_only=True)
class SudokuTask(UniqueSolutionTask):
    """4x4 mini-sudoku with a unique completion (see module docstring).

    Attributes:
        min_blanks: fewest blanks in a problem (difficulty lower bound), >= 1.
        max_blanks: most blanks in a problem (difficulty upper bound), <= 12.
        test_fraction: share of the problem space reserved for the test split, by a stable hash
            of the prompt.
    """

    min_blanks: int = 4
    max_blanks: int = 10
    test_fraction: float = 0.2
    name: str = "sudoku"
    _widen = "the blanks range"  # (class attribute, not a field)

    def __post_init__(self) -> None:
        if not 1 <= self.min_blanks <= self.max_blanks <= _MAX_BLANKS:
            raise ValueError(f"need 1 <= min_blanks <= max_blanks <= {_MAX_BLANKS}, got "
                             f"{self.min_blanks}, {self.max_blanks}")
        if not 0.0 < self.test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in (0, 1), got {self.test_fraction}")

    # ---- vocabulary and sizes -------------------------------------------------------------
    @property
    def tokenizer(self) -> Tokenizer:
        return Tokenizer(alphabet=_DIGITS + _ROWS + _BLANK + _ROW_SEP + _END_PROMPT + _STEP,
                         step_delimiter=_STEP)

    @property
    def num_answers(self) -> int:
        return 2 * 4 ** self.max_blanks

    @property
    def max_prompt_len(self) -> int:
        return 1 + _CELLS + (_SIDE - 1) + 1  # BOS, 16 cells, 3 row separators, '='

    @property
    def max_step_len(self) -> int:
        """Tokens in a step: ``b3=4`` and its delimiter (or ``EOS``)."""
        return _STEP_LEN

    @property
    def max_solution_len(self) -> int:
        return self.max_blanks * _STEP_LEN  # the last step's delimiter is the EOS

    @property
    def max_steps(self) -> int:
        return self.max_blanks

    # ---- problems ---------------------------------------------------------------------------
    @staticmethod
    def cell_name(cell: int) -> str:
        """``b3`` for the cell in row 2, column 3 (``cell`` row-major from 0)."""
        return _ROWS[cell // _SIDE] + _DIGITS[cell % _SIDE]

    @staticmethod
    def prompt_text(puzzle: Sequence[int]) -> str:
        """The prompt of a puzzle (16 cells row-major, ``0`` for a blank)."""
        chars = [_BLANK if v == 0 else str(v) for v in puzzle]
        rows = ["".join(chars[r * _SIDE:(r + 1) * _SIDE]) for r in range(_SIDE)]
        return _ROW_SEP.join(rows) + _END_PROMPT

    @staticmethod
    def parse_prompt(text: str) -> list[int]:
        """The 16 cells (row-major, ``0`` for a blank) of a prompt such as
        ``1.3.|4.21|..42|2.13=``."""
        rows = text.removesuffix(_END_PROMPT).split(_ROW_SEP)
        if not text.endswith(_END_PROMPT) or [len(r) for r in rows] != [_SIDE] * _SIDE:
            raise ValueError(f"not a sudoku prompt: {text!r}")
        return [0 if c == _BLANK else int(c) for c in "".join(rows)]

    @classmethod
    def solution_text(cls, puzzle: Sequence[int], grid: Sequence[int]) -> str:
        """The steps filling the blanks of ``puzzle`` (row-major) with the digits of ``grid``."""
        return _STEP.join(f"{cls.cell_name(i)}{_SET}{grid[i]}"
                          for i, v in enumerate(puzzle) if v == 0)

    @staticmethod
    def answer_id(digits: Sequence[int]) -> int:
        """``sum((d_j - 1) * 4**j) + 4**k`` for the digits ``d_j`` of ``k`` filled blanks."""
        return sum((d - 1) << (2 * j) for j, d in enumerate(digits)) + (1 << (2 * len(digits)))

    def _draw(self, rng: np.random.Generator) -> Drawn:
        grids = all_grids()
        k = int(rng.integers(self.min_blanks, self.max_blanks + 1))
        while True:
            grid = grids[int(rng.integers(len(grids)))]
            given = np.ones(_CELLS, bool)
            given[rng.permutation(_CELLS)[:k]] = False
            if np.all(grids[:, given] == grid[given], axis=1).sum() == 1:
                break
        puzzle = np.where(given, grid, 0).tolist()
        prompt = self.prompt_text(puzzle)
        return Drawn(key=prompt, prompt=prompt, solution=self.solution_text(puzzle, grid.tolist()),
                     answer=self.answer_id(grid[~given].tolist()), difficulty=k)

    # ---- verification -------------------------------------------------------------------
    def extract_answer(
        self, tokens: Int[Array, "B T"], prompt_len: Int[Array, " B"]
    ) -> Int[Array, " B"]:
        """The digits of the generated steps, as a base-4 answer id.

        Valid iff the generated tokens are exactly ``k`` steps ``<row><col>=<digit>`` naming the
        prompt's ``k`` blanks in row-major order, joined by ``;`` and ending in ``EOS``."""
        tok = self.tokenizer
        _, t = tokens.shape
        blank = tokens[:, _CELL_POS] == tok.token_id(_BLANK)  # [B, 16]
        k = blank.sum(axis=1)
        cells = jnp.arange(_CELLS)
        order = jnp.argsort(jnp.where(blank, cells, _CELLS + cells), axis=1)  # blanks first
        o = np.arange(self.max_blanks * _STEP_LEN, dtype=np.int32)  # offset into the solution
        j, p = o // _STEP_LEN, o % _STEP_LEN  # step index, position in the step
        cell = order[:, j]  # [B, O]: the cell step j must name
        end = jnp.where(j[None, :] == k[:, None] - 1, tok.EOS, tok.step_id)
        expect = jnp.where(p == 0, tok.token_id(_ROWS[0]) + cell // _SIDE,
                           jnp.where(p == 1, tok.token_id(_DIGITS[0]) + cell % _SIDE,
                                     jnp.where(p == 2, tok.token_id(_SET), end)))
        at = prompt_len[:, None] + o[None, :]
        gen = jnp.take_along_axis(tokens, jnp.clip(at, 0, t - 1), axis=1)
        digit = gen - tok.token_id(_DIGITS[0])
        is_digit = (digit >= 0) & (digit < _SIDE)
        match = jnp.where(p == 3, is_digit, gen == expect) & (at < t)
        needed = o[None, :] < _STEP_LEN * k[:, None]
        ok = jnp.all(match | ~needed, axis=1) & (k >= 1) & (k <= self.max_blanks)
        value = jnp.sum(jnp.where((p == 3) & needed, jnp.clip(digit, 0, 3) << (2 * j), 0), axis=1)
        offset = jnp.left_shift(1, 2 * jnp.clip(k, 0, self.max_blanks))
        return jnp.where(ok, value + offset, INVALID_ANSWER).astype(jnp.int32)

    @staticmethod
    def _parse_step(step: str, cell: int) -> int | None:
        """The digit of a well-formed step ``<row><col>=<digit>`` naming ``cell``, else None."""
        name = SudokuTask.cell_name(cell)
        if len(step) != 4 or step[:2] != name or step[2] != _SET or step[3] not in _DIGITS:
            return None
        return int(step[3])

    def check_steps(self, problem_index: int, problems: ProblemSet, solution: str) -> list[bool]:
        """Checks each step against the givens and earlier steps of the grid parsed from the
        prompt text (independent of the reference): the step names the next blank, its digit
        repeats no digit of its row, column or box, and the grid filled so far still has a
        completion (found by backtracking); the last step must fill the last blank."""
        fill = self.parse_prompt(problems.texts[problem_index])
        if len(list(completions(fill))) != 1:
            raise ValueError(f"problem {problem_index} has no unique completion")
        blanks = [i for i, v in enumerate(fill) if v == 0]
        steps = solution.split(_STEP)
        verdicts, ok = [], True
        for j, step in enumerate(steps):
            last = j == len(steps) - 1
            digit = self._parse_step(step, blanks[j]) if ok and j < len(blanks) else None
            ok = digit is not None and not conflicts(fill, blanks[j], digit)
            if ok:
                fill[blanks[j]] = digit
                ok = next(completions(fill), None) is not None and last == (j == len(blanks) - 1)
            verdicts.append(ok)
        return verdicts
