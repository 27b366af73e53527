"""The 4x4 sudoku task (ttc/tasks/sudoku.py): the 288 grids, format, unique completions, answer
parsing, the exact step checkers, the problem count the config schema uses."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ttc.tasks import TASKS, make_task
from ttc.tasks.base import INVALID_ANSWER, Task, pad_to
from ttc.tasks.sudoku import (
    SudokuTask,
    all_grids,
    completions,
    conflicts,
    count_problems,
    unique_counts,
)
from ttc.testing import (
    check_main_job_on_task,
    check_prefix_matches_steps,
    check_problems_deterministic,
)

EXAMPLE_PROMPT = "1.3.|4.21|..42|2.13="
EXAMPLE_SOLUTION = "a2=2;a4=4;b2=3;c1=3;c2=1;d2=4"


@pytest.fixture(scope="module")
def task() -> SudokuTask:
    return SudokuTask(min_blanks=3, max_blanks=9)


def _rows(task, ps, solutions, *, eos=True):
    tok = task.tokenizer
    rows = [list(ps.prompts[i, : ps.prompt_len[i]]) + tok.encode(s) + ([tok.EOS] if eos else [])
            for i, s in enumerate(solutions)]
    return pad_to(rows, task.max_prompt_len + task.max_solution_len + 8)


def _answers(task, ps, solutions, **kw):
    tokens = _rows(task, ps, solutions, **kw)
    return np.asarray(jax.jit(task.extract_answer)(jnp.asarray(tokens),
                                                   jnp.asarray(ps.prompt_len)))


def _reference_answer(prompt: str, solution: str) -> int:
    """Slow obvious reference for extract_answer: one ``<row><col>=<digit>`` step per blank, in
    row-major order, else invalid; the digits least significant first in base 4, plus 4**k."""
    cells = prompt.replace("|", "").rstrip("=")
    blanks = [i for i, c in enumerate(cells) if c == "."]
    steps = solution.split(";")
    if len(steps) != len(blanks):
        return INVALID_ANSWER
    digits = []
    for cell, step in zip(blanks, steps, strict=True):
        name = "abcd"[cell // 4] + str(cell % 4 + 1)
        if len(step) != 4 or step[:3] != name + "=" or step[3] not in "1234":
            return INVALID_ANSWER
        digits.append(int(step[3]))
    return sum((d - 1) * 4**j for j, d in enumerate(digits)) + 4 ** len(digits)


def _is_valid_grid(g) -> bool:
    g = np.asarray(g).reshape(4, 4)
    units = [*g, *g.T, *(g[r:r + 2, c:c + 2].ravel() for r in (0, 2) for c in (0, 2))]
    return all(sorted(u.tolist()) == [1, 2, 3, 4] for u in units)


def test_registered_and_protocol(task):
    assert TASKS["sudoku"] is SudokuTask
    assert isinstance(make_task("sudoku"), Task)
    assert isinstance(task, Task)
    assert task.num_answers == 2 * 4**9
    assert task.max_steps == 9
    assert task.max_prompt_len == 21 and task.max_solution_len == 45
    assert task.tokenizer.step_delimiter == ";"


def test_the_288_grids():
    grids = all_grids()
    assert grids.shape == (288, 16)
    assert all(_is_valid_grid(g) for g in grids)
    # brute force: every choice of 4 row permutations, kept when columns and boxes are too
    rows = np.array(list(itertools.permutations(range(1, 5))), np.int8)
    choice = np.indices((24,) * 4).reshape(4, -1).T
    cand = rows[choice].reshape(-1, 4, 4)
    bits = 1 << cand
    cols = np.bitwise_or.reduce(bits, axis=1)
    boxes = bits.reshape(-1, 2, 2, 2, 2).transpose(0, 1, 3, 2, 4).reshape(-1, 4, 4)
    ok = (cols == 30).all(axis=1) & (np.bitwise_or.reduce(boxes, axis=2) == 30).all(axis=1)
    assert ok.sum() == 288
    assert {tuple(g) for g in cand[ok].reshape(-1, 16).tolist()} == \
        {tuple(g) for g in grids.tolist()}


def test_example():
    t = SudokuTask()
    puzzle = t.parse_prompt(EXAMPLE_PROMPT)
    assert puzzle == [1, 0, 3, 0, 4, 0, 2, 1, 0, 0, 4, 2, 2, 0, 1, 3]
    assert t.prompt_text(puzzle) == EXAMPLE_PROMPT
    (grid,) = completions(puzzle)
    assert grid == (1, 2, 3, 4, 4, 3, 2, 1, 3, 1, 4, 2, 2, 4, 1, 3)
    assert t.solution_text(puzzle, grid) == EXAMPLE_SOLUTION
    assert t.cell_name(0) == "a1" and t.cell_name(6) == "b3" and t.cell_name(15) == "d4"
    assert t.answer_id([2, 4, 3, 3, 1, 4]) == 1 + 3 * 4 + 2 * 16 + 2 * 64 + 0 + 3 * 4**5 + 4**6
    assert conflicts(puzzle, 1, 1) and conflicts(puzzle, 1, 4) and not conflicts(puzzle, 1, 2)
    with pytest.raises(ValueError, match="not a sudoku prompt"):
        t.parse_prompt("1.3.|4.21|..42=")


def test_determinism_and_distinct(task):
    check_problems_deterministic(task)
    a = task.problems(120, seed=3, split="train")
    assert set(a.difficulty.tolist()) == set(range(3, 10))


def test_gold_solutions_are_the_unique_completion(task):
    ps = task.problems(100, seed=1, split="test")
    grids = all_grids()
    tok = task.tokenizer
    for i in range(len(ps)):
        puzzle = np.array(task.parse_prompt(ps.texts[i]))
        given = puzzle > 0
        assert (~given).sum() == ps.difficulty[i]
        fits = grids[np.all(grids[:, given] == puzzle[given], axis=1)]
        assert len(fits) == 1  # exactly one of the 288 grids completes the givens
        sol = tok.decode(ps.gold[i])
        assert sol == task.solution_text(puzzle.tolist(), fits[0].tolist())
        assert ps.answers[i] == task.answer_id(fits[0][~given].tolist())
        v = task.check_steps(i, ps, sol)
        assert all(v) and len(v) == ps.difficulty[i]
    sols = [tok.decode(g) for g in ps.gold]
    np.testing.assert_array_equal(_answers(task, ps, sols), ps.answers)
    assert [_reference_answer(p, s) for p, s in zip(ps.texts, sols, strict=True)] == \
        ps.answers.tolist()


def test_sizes_are_tight():
    t = SudokuTask(min_blanks=12, max_blanks=12)
    ps = t.problems(50, seed=0, split="train")
    assert (ps.prompt_len == t.max_prompt_len).all()
    gold_len = (ps.gold != t.tokenizer.PAD).sum(axis=1)
    assert (gold_len == t.max_solution_len).all()  # 12 steps of 'b3=4' + ';' or EOS
    steps = [t.tokenizer.decode(g).split(";") for g in ps.gold]
    assert {len(s) for st in steps for s in st} == {t.max_step_len - 1}
    assert t.num_answers > ps.answers.max()


def test_splits_are_disjoint():
    t = SudokuTask(min_blanks=1, max_blanks=2)
    train = t.problems(300, seed=0, split="train")
    test = t.problems(100, seed=0, split="test")
    assert not set(train.texts) & set(test.texts)


def test_every_wrong_finished_grid_conflicts():
    """The task's premise: with a unique completion, every wrong fill of all the blanks repeats
    a digit in some row, column or box (checked over all 4**k fills)."""
    t = SudokuTask(min_blanks=3, max_blanks=5)
    ps = t.problems(12, seed=5, split="test")
    for text in ps.texts:
        puzzle = t.parse_prompt(text)
        blanks = [i for i, v in enumerate(puzzle) if v == 0]
        clean = []
        for digits in itertools.product(range(1, 5), repeat=len(blanks)):
            grid = list(puzzle)
            for cell, d in zip(blanks, digits, strict=True):
                grid[cell] = d
            if not any(conflicts(grid, i, v) for i, v in enumerate(grid)):
                clean.append(tuple(grid))
        assert clean == list(completions(puzzle))
        assert len(clean) == 1


def test_a_wrong_step_need_not_conflict_yet():
    """Some wrong first digits repeat nothing among the givens; the step checker still rejects
    them (the grid has no completion), as the prefix checker does."""
    t = SudokuTask(min_blanks=9, max_blanks=9)
    ps = t.problems(40, seed=6, split="test")
    hidden = 0
    for i, text in enumerate(ps.texts):
        puzzle = t.parse_prompt(text)
        first = puzzle.index(0)
        gold = t.tokenizer.decode(ps.gold[i])
        for d in range(1, 5):
            step = f"{t.cell_name(first)}={d}"
            if step != gold[:4] and not conflicts(puzzle, first, d):
                hidden += 1
                assert t.check_steps(i, ps, step + gold[4:])[0] is False
    assert hidden > 0


def test_count_problems_matches_brute_force():
    """The count the schema uses (a zeta transform over blank sets) equals, for each number of
    blanks, the number of (blank set, grid) pairs whose givens no other grid shares."""
    grids = all_grids().astype(np.int64)
    counts = unique_counts()
    for k in (1, 2, 3, 8, 11, 12, 13):
        total = 0
        for blanks in itertools.combinations(range(16), k):
            given = np.ones(16, bool)
            given[list(blanks)] = False
            keys = grids[:, given] @ (5 ** np.arange(given.sum()))
            _, n = np.unique(keys, return_counts=True)
            total += int((n == 1).sum())
        assert counts[k] == total, k
    assert counts[1] == 288 * 16 and counts[13] == 0  # a 4x4 sudoku needs 4 givens
    assert count_problems(4, 10) == counts[4:11].sum()
    assert count_problems(1, 12) == counts[1:13].sum() == counts.sum() - 288


@pytest.mark.parametrize("bad", ["", "A=2", "A=2;", "A=2;B=4;B=4", "A=2B=4", "B=4;A=2", "A=2;A=4",
                                 "A=2;G=4", "G=2;B=4", "A=2;B=a", "A=22;B=4", "A2;B=4",
                                 "A=2;;B=4", "A=2;B=4;"])
def test_malformed_solutions_are_invalid(bad):
    """``A``/``B``: the names of the two blanks, ``G``: a given cell's."""
    t = SudokuTask(min_blanks=2, max_blanks=2)
    ps = t.problems(1, seed=0, split="test")
    puzzle = t.parse_prompt(ps.texts[0])
    blanks = [i for i, v in enumerate(puzzle) if v == 0]
    names = {"A": t.cell_name(blanks[0]), "B": t.cell_name(blanks[1]),
             "G": t.cell_name(next(i for i, v in enumerate(puzzle) if v))}
    sol = "".join(names.get(c, c) for c in bad)
    got = int(_answers(t, ps, [sol])[0])
    assert got == _reference_answer(ps.texts[0], sol) == INVALID_ANSWER


@pytest.mark.parametrize("digits", [(1, 1), (4, 3), (2, 4)])
def test_the_digits_are_the_answer(digits):
    """Any well-formed fill is a valid answer id, right or wrong (a wrong one can lose a vote)."""
    t = SudokuTask(min_blanks=2, max_blanks=2)
    ps = t.problems(1, seed=0, split="test")
    blanks = [i for i, c in enumerate(ps.texts[0].replace("|", "")) if c == "."]
    sol = ";".join(f"{t.cell_name(c)}={d}" for c, d in zip(blanks, digits, strict=True))
    want = (digits[0] - 1) + 4 * (digits[1] - 1) + 16
    assert int(_answers(t, ps, [sol])[0]) == want == _reference_answer(ps.texts[0], sol)


def test_unfinished_solution_is_invalid(task):
    ps = task.problems(4, seed=2, split="test")
    sols = [task.tokenizer.decode(g) for g in ps.gold]
    assert (_answers(task, ps, sols, eos=False) == INVALID_ANSWER).all()


def _corrupt(sol: str, rng: np.random.Generator, alphabet: str) -> str:
    j = int(rng.integers(len(sol)))
    edit = rng.integers(3)
    if edit == 0:
        return sol[:j] + str(rng.choice(list(alphabet))) + sol[j + 1:]
    if edit == 1:
        return sol[:j] + sol[j + 1:]
    return sol


def test_answers_match_reference_on_corrupted_solutions(task):
    """Random edits (changed digits or cell names, dropped characters or steps) parse as the
    slow reference does."""
    rng = np.random.default_rng(0)
    ps = task.problems(150, seed=7, split="test")
    sols = [_corrupt(task.tokenizer.decode(g), rng, "1234abcd=;") for g in ps.gold]
    got = _answers(task, ps, sols)
    want = [_reference_answer(ps.texts[i], s) for i, s in enumerate(sols)]
    np.testing.assert_array_equal(got, want)
    assert 0 < np.mean(got == INVALID_ANSWER) < 1
    assert 0 < np.mean(got == ps.answers) < 1
    assert np.any((got != ps.answers) & (got != INVALID_ANSWER))


def test_prefix_checker_matches_step_checker(task):
    """The jit prefix checker agrees with the independent conflict and completion check at every
    step boundary, on correct and corrupted solutions."""
    rng = np.random.default_rng(1)
    ps = task.problems(60, seed=2, split="test")
    sols = []
    for g in ps.gold:
        sol = task.tokenizer.decode(g)
        u = rng.random()
        if u < 0.5:  # a wrong digit in one step: a conflict now, later, or a dead end
            steps = sol.split(";")
            j = int(rng.integers(len(steps)))
            steps[j] = steps[j][:3] + str(rng.choice([d for d in "1234" if d != steps[j][3]]))
            sol = ";".join(steps)
        elif u < 0.8:  # any edit
            sol = _corrupt(sol, rng, "1234abcd=;")
        sols.append(sol)
    expected = check_prefix_matches_steps(task, ps, sols)
    assert len(expected) > 200 and 0 < np.mean(expected) < 1


def test_bad_task_config():
    with pytest.raises(ValueError, match="min_blanks"):
        SudokuTask(min_blanks=6, max_blanks=5)
    with pytest.raises(ValueError, match="min_blanks"):
        SudokuTask(max_blanks=13)
    with pytest.raises(ValueError, match="min_blanks"):
        SudokuTask(min_blanks=0)
    with pytest.raises(ValueError, match="test_fraction"):
        SudokuTask(test_fraction=1.0)


def test_main_job_runs_on_sudoku(tmp_path, capsys):
    """``ttc-run task=sudoku``: the config schema, training, pool methods and oracle search run
    on the task end to end (tiny sizes; verifier-free and oracle methods, no reward model)."""
    check_main_job_on_task(tmp_path, "sudoku", ["task.min_blanks=2", "task.max_blanks=3"])
