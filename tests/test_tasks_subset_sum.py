"""The subset-sum task (ttc/tasks/subset_sum.py): format, unique solutions, answer parsing, the
exact step checkers, the problem count the config schema uses."""

import itertools

import jax.numpy as jnp
import numpy as np
import pytest

from ttc.tasks import TASKS, make_task
from ttc.tasks.base import INVALID_ANSWER, Task, pad_to
from ttc.tasks.subset_sum import SubsetSumTask, count_problems, subsets_reaching
from ttc.testing import (
    check_main_job_on_task,
    check_prefix_matches_steps,
    check_problems_deterministic,
)


@pytest.fixture(scope="module")
def task() -> SubsetSumTask:
    return SubsetSumTask(min_numbers=2, max_numbers=5, max_value=9)


def _rows(task, ps, solutions, *, eos=True):
    tok = task.tokenizer
    rows = [list(ps.prompts[i, : ps.prompt_len[i]]) + tok.encode(s) + ([tok.EOS] if eos else [])
            for i, s in enumerate(solutions)]
    return pad_to(rows, task.max_prompt_len + task.max_solution_len + 8)


def _answers(task, ps, solutions, **kw):
    tokens = _rows(task, ps, solutions, **kw)
    return np.asarray(task.extract_answer(jnp.asarray(tokens), jnp.asarray(ps.prompt_len)))


def _reference_answer(prompt: str, solution: str) -> int:
    """Slow obvious reference for extract_answer: the pattern of '+'/'_' characters."""
    k = prompt.count(",") + 1
    bits = [c == "+" for c in solution if c in "+_"]
    if len(bits) != k:
        return INVALID_ANSWER
    return sum(b << j for j, b in enumerate(bits)) + (1 << k)


def test_registered_and_protocol(task):
    assert TASKS["subset_sum"] is SubsetSumTask
    assert isinstance(make_task("subset_sum"), Task)
    assert isinstance(task, Task)
    assert task.num_answers == 2**6
    assert task.max_steps == 5
    assert task.tokenizer.step_delimiter == ";"


def test_example():
    t = SubsetSumTask()
    assert t.solution_text([5, 3, 8, 2, 6], (1, 0, 0, 0, 1)) == "+5=5;_3=5;_8=5;_2=5;+6=11"
    assert t.answer_id((1, 0, 0, 0, 1)) == 0b10001 + 2**5
    assert t.parse_prompt("5,3,8,2,6=11") == ([5, 3, 8, 2, 6], 11)
    assert set(subsets_reaching([5, 3, 8, 2, 6], 11)) == {(0, 1, 1, 0, 0), (0, 1, 0, 1, 1),
                                                          (1, 0, 0, 0, 1)}


def test_determinism_and_distinct(task):
    check_problems_deterministic(task)
    a = task.problems(80, seed=3, split="train")
    assert set(a.difficulty.tolist()) == {2, 3, 4, 5}


def test_gold_solutions_are_the_unique_subset(task):
    ps = task.problems(100, seed=1, split="test")
    tok = task.tokenizer
    for i in range(len(ps)):
        nums, target = task.parse_prompt(ps.texts[i])
        assert len(nums) == ps.difficulty[i] and all(1 <= x <= 9 for x in nums)
        (pattern,) = subsets_reaching(nums, target)  # exactly one subset reaches the target
        sol = tok.decode(ps.gold[i])
        assert sol == task.solution_text(nums, pattern)
        assert ps.answers[i] == task.answer_id(pattern)
        v = task.check_steps(i, ps, sol)
        assert all(v) and len(v) == len(nums)
    sols = [tok.decode(g) for g in ps.gold]
    np.testing.assert_array_equal(_answers(task, ps, sols), ps.answers)


def test_sizes_are_tight():
    t = SubsetSumTask(min_numbers=6, max_numbers=6, max_value=9)
    ps = t.problems(200, seed=0, split="train")
    assert (ps.prompt_len <= t.max_prompt_len).all()
    assert ps.prompt_len.max() == t.max_prompt_len  # two-digit targets
    gold_len = (ps.gold != t.tokenizer.PAD).sum(axis=1)
    assert (gold_len <= t.max_solution_len).all()
    steps = [t.tokenizer.decode(g).split(";") for g in ps.gold]
    assert max(len(s) for st in steps for s in st) + 1 == t.max_step_len  # '+x=ss' + ';'


def test_splits_are_disjoint_up_to_order():
    t = SubsetSumTask(min_numbers=2, max_numbers=3, max_value=4)

    def canon(text):
        nums, target = t.parse_prompt(text)
        return tuple(sorted(nums)), target

    train = t.problems(40, seed=0, split="train")
    test = t.problems(10, seed=0, split="test")
    assert not {canon(x) for x in train.texts} & {canon(x) for x in test.texts}


def test_count_problems_matches_brute_force():
    """The count the schema uses is the number of distinct (sorted numbers, target) keys with a
    unique subset: checked against a brute force over ordered tuples."""
    for lo, hi, v in ((1, 3, 4), (2, 4, 5)):
        keys = set()
        for k in range(lo, hi + 1):
            for nums in itertools.product(range(1, v + 1), repeat=k):
                for target in range(1, k * v + 1):
                    if len(subsets_reaching(list(nums), target)) == 1:
                        keys.add((tuple(sorted(nums)), target))
        assert count_problems(lo, hi, v) == len(keys)
    assert count_problems(3, 10, 99) > 10**12  # beyond the exact limit: an upper bound


@pytest.mark.parametrize("bad", ["", "+5=5", "+5=5;", "=5;=5", "+5=5;_3=5;_8=5;+2=7"])
def test_wrong_number_of_decisions_is_invalid(bad):
    t = SubsetSumTask(min_numbers=2, max_numbers=2, max_value=9)
    ps = t.problems(1, seed=0, split="test")
    got = int(_answers(t, ps, [bad])[0])
    assert got == _reference_answer(ps.texts[0], bad) == INVALID_ANSWER


@pytest.mark.parametrize(("sol", "mask"), [("+5=5;_3=5", 0b01), ("_5=0;+3=9", 0b10),
                                            ("+_", 0b01), ("+5=5;+", 0b11)])
def test_the_pattern_is_the_answer_whatever_the_sums(sol, mask):
    """The answer is the claimed pattern (the sums are scratchpad), as a worked solution's final
    number is its answer whatever slips came before it."""
    t = SubsetSumTask(min_numbers=2, max_numbers=2, max_value=9)
    ps = t.problems(1, seed=0, split="test")
    assert int(_answers(t, ps, [sol])[0]) == mask + 4 == _reference_answer(ps.texts[0], sol)


def test_unfinished_solution_is_invalid(task):
    ps = task.problems(4, seed=2, split="test")
    sols = [task.tokenizer.decode(g) for g in ps.gold]
    assert (_answers(task, ps, sols, eos=False) == INVALID_ANSWER).all()


def test_answers_match_reference_on_corrupted_solutions(task):
    """Random edits (flipped decisions, wrong sums, dropped or extra steps) parse as the slow
    reference does; a wrong pattern is a valid id that can lose a vote."""
    rng = np.random.default_rng(0)
    ps = task.problems(120, seed=7, split="test")
    tok = task.tokenizer
    sols = []
    for g in ps.gold:
        s = tok.decode(g)
        j = int(rng.integers(len(s)))
        edit = rng.integers(3)
        if edit == 0:
            s = s[:j] + rng.choice(list("+_0123456789;")) + s[j + 1:]
        elif edit == 1:
            s = s[:j] + s[j + 1:]
        sols.append(s)
    got = _answers(task, ps, sols)
    want = [_reference_answer(ps.texts[i], s) for i, s in enumerate(sols)]
    np.testing.assert_array_equal(got, want)
    assert 0 < np.mean(got == INVALID_ANSWER) < 1
    assert 0 < np.mean(got == ps.answers) < 1


def test_prefix_checker_matches_step_checker(task):
    """The jit prefix checker agrees with the independent subset enumeration at every step
    boundary, on correct and corrupted solutions."""
    rng = np.random.default_rng(1)
    ps = task.problems(60, seed=2, split="test")
    sols = []
    for g in ps.gold:
        sol = task.tokenizer.decode(g)
        if rng.random() < 0.6:  # flip one decision or one digit of a sum
            j = int(rng.integers(len(sol)))
            swap = {"+": "_", "_": "+"}.get(sol[j], str((int(sol[j]) + 1) % 10)
                                            if sol[j].isdigit() else sol[j])
            sol = sol[:j] + swap + sol[j + 1:]
        sols.append(sol)
    expected = check_prefix_matches_steps(task, ps, sols)
    assert len(expected) > 100 and 0 < np.mean(expected) < 1


def test_bad_task_config():
    with pytest.raises(ValueError, match="min_numbers"):
        SubsetSumTask(min_numbers=5, max_numbers=2)
    with pytest.raises(ValueError, match="min_numbers"):
        SubsetSumTask(max_numbers=11)
    with pytest.raises(ValueError, match="max_value"):
        SubsetSumTask(max_value=100)
    with pytest.raises(ValueError, match="test_fraction"):
        SubsetSumTask(test_fraction=0.0)
    with pytest.raises(ValueError, match="distinct"):
        SubsetSumTask(min_numbers=1, max_numbers=1, max_value=3).problems(10, seed=0,
                                                                           split="train")


def test_main_job_runs_on_subset_sum(tmp_path, capsys):
    """``ttc-run task=subset_sum``: the config schema, training, pool methods and oracle search
    run on the task end to end (tiny sizes; verifier-free and oracle methods, no reward model)."""
    check_main_job_on_task(tmp_path, "subset_sum", ["task.min_numbers=2", "task.max_numbers=3"])


def test_error_analysis_script_sorts_solutions(task):
    """scripts/subset_sum_errors.py: gold solutions have every sum right; a fudged last sum that
    lands on the target, or a wrong number, is caught."""
    from ttc.testing import load_script

    mod = load_script("subset_sum_errors")
    ps = task.problems(30, seed=4, split="test")
    for i in range(len(ps)):
        nums, target = task.parse_prompt(ps.texts[i])
        sol = task.tokenizer.decode(ps.gold[i])
        assert mod.sums_are_right(nums, sol) and mod.last_sum(sol) == target
    assert not mod.sums_are_right([1, 3, 7], "+1=1;+3=3;_7=3")  # 1+3 written as 3: fudged
    assert not mod.sums_are_right([1, 3], "+1=1;+4=5")          # not the prompt's number
    assert not mod.sums_are_right([1, 3], "+1=1")                # a number left out
    assert mod.last_sum("+1=1;+3=4") == 4 and mod.last_sum("+1=1;+3=") is None
