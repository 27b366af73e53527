import jax.numpy as jnp
import numpy as np
import pytest

from ttc.tasks import make_task
from ttc.tasks.arithmetic import ArithmeticTask
from ttc.tasks.base import INVALID_ANSWER, Task, pad_to
from ttc.testing import check_prefix_matches_steps


def _full_rows(task, ps, solutions):
    tok = task.tokenizer
    rows = [list(ps.prompts[i, : ps.prompt_len[i]]) + tok.encode(s) + [tok.EOS]
            for i, s in enumerate(solutions)]
    width = task.max_prompt_len + task.max_solution_len + 4
    return pad_to(rows, width), np.array([len(r) for r in rows], np.int32)


def test_protocol_and_determinism(task):
    assert isinstance(task, Task)
    a = task.problems(50, seed=3, split="train")
    b = task.problems(50, seed=3, split="train")
    assert a.texts == b.texts
    assert (a.difficulty >= task.min_ops).all() and (a.difficulty <= task.max_ops).all()
    assert len(set(a.texts)) == 50


def test_splits_are_disjoint():
    t = ArithmeticTask(min_ops=1, max_ops=2, modulus=5)
    train = set(t.problems(300, seed=0, split="train").texts)
    test = set(t.problems(60, seed=0, split="test").texts)
    assert not train & test


def test_gold_solutions_verify(task):
    ps = task.problems(40, seed=1, split="test")
    tok = task.tokenizer
    sols = [tok.decode(g) for g in ps.gold]
    for i, s in enumerate(sols):
        assert all(task.check_steps(i, ps, s))
        assert len(task.check_steps(i, ps, s)) == ps.difficulty[i]
    tokens, _ = _full_rows(task, ps, sols)
    ans = np.asarray(task.extract_answer(jnp.asarray(tokens), jnp.asarray(ps.prompt_len)))
    np.testing.assert_array_equal(ans, ps.answers)


def test_example_from_issue():
    t = ArithmeticTask(min_ops=3, max_ops=3, modulus=10)
    assert t._solve([3, 5, 2, 4], ["+", "*", "-"]) == ("3+5=8;8*2=6;6-4=2>2", 2)


@pytest.mark.parametrize("bad", ["", "1+2=3", "1+2=3>", "1+2=3>+", "1+2=3>12", ">>3", "1+2=3>3;"])
def test_malformed_answers_are_invalid(task, bad):
    ps = task.problems(1, seed=0, split="test")
    tokens, _ = _full_rows(task, ps, [bad])
    ans = task.extract_answer(jnp.asarray(tokens), jnp.asarray(ps.prompt_len))
    assert int(ans[0]) == INVALID_ANSWER


def test_multidigit_modulus_answers():
    t = ArithmeticTask(min_ops=1, max_ops=2, modulus=97)
    ps = t.problems(30, seed=0, split="test")
    sols = [t.tokenizer.decode(g) for g in ps.gold]
    tokens, _ = _full_rows(t, ps, sols)
    np.testing.assert_array_equal(t.extract_answer(jnp.asarray(tokens), jnp.asarray(ps.prompt_len)),
                                  ps.answers)
    bad, _ = _full_rows(t, ps, [s.split(">")[0] + ">99" for s in sols])
    assert (np.asarray(t.extract_answer(jnp.asarray(bad), jnp.asarray(ps.prompt_len))) == -1).all()


def test_prefix_checker_matches_step_checker(task):
    """The jit prefix checker agrees with the arithmetic re-check at every step boundary."""
    rng = np.random.default_rng(0)
    ps = task.problems(60, seed=2, split="test")
    sols = []
    for g in ps.gold:
        sol = task.tokenizer.decode(g)
        if rng.random() < 0.6:  # corrupt one character
            j = int(rng.integers(len(sol)))
            sol = sol[:j] + rng.choice(list("0123456789+-*")) + sol[j + 1 :]
        sols.append(sol)
    expected = check_prefix_matches_steps(task, ps, sols)
    assert len(expected) > 100 and 0 < np.mean(expected) < 1


def test_bad_task_config():
    with pytest.raises(ValueError, match="unknown task"):
        make_task("nope")
    with pytest.raises(ValueError, match="min_ops"):
        ArithmeticTask(min_ops=5, max_ops=2)
