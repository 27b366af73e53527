"""The pointer-chasing task (ttc/tasks/graph.py): format, answer parsing, exact step checkers."""

import jax.numpy as jnp
import numpy as np
import pytest

from ttc.tasks import TASKS, make_task
from ttc.tasks.base import INVALID_ANSWER, Task, pad_to
from ttc.tasks.graph import GraphWalkTask
from ttc.testing import check_prefix_matches_steps, check_problems_deterministic


@pytest.fixture(scope="module", params=[False, True], ids=["sorted", "shuffled"])
def gtask(request) -> GraphWalkTask:
    return GraphWalkTask(num_nodes=6, min_hops=1, max_hops=4, shuffle_edges=request.param)


@pytest.fixture(scope="module")
def stask() -> GraphWalkTask:
    """Answer parsing does not depend on the edge order: one task for the format-only tests."""
    return GraphWalkTask(num_nodes=6, min_hops=1, max_hops=4)


def _full_rows(task, ps, solutions, idx=None):
    tok = task.tokenizer
    idx = range(len(solutions)) if idx is None else idx
    rows = [list(ps.prompts[i, : ps.prompt_len[i]]) + tok.encode(s) + [tok.EOS]
            for i, s in zip(idx, solutions, strict=True)]
    width = task.max_prompt_len + task.max_solution_len + 4
    return pad_to(rows, width), np.array([len(r) for r in rows], np.int32)


def _walk(text: str) -> tuple[list[str], str]:
    """Slow obvious reference: the list of steps 'xy' and the final node of a prompt's walk."""
    edges, query = text[:-1].split("|")
    succ = dict(edges.split(","))
    x, hops = query[0], int(query[1:])
    steps = []
    for _ in range(hops):
        steps.append(x + succ[x])
        x = succ[x]
    return steps, x


def test_registered_and_protocol(gtask):
    assert TASKS["graph"] is GraphWalkTask
    assert isinstance(make_task("graph"), Task)
    assert isinstance(gtask, Task)
    assert gtask.num_answers == 6
    assert gtask.max_steps == 4
    assert gtask.tokenizer.step_delimiter == ";"


def test_determinism_and_distinct(gtask):
    check_problems_deterministic(gtask)
    a = gtask.problems(80, seed=3, split="train")
    assert (a.difficulty >= 1).all() and (a.difficulty <= 4).all()
    assert set(a.difficulty.tolist()) == {1, 2, 3, 4}


def test_format_and_example():
    t = GraphWalkTask(num_nodes=6, min_hops=3, max_hops=3)
    succ = [1, 3, 5, 2, 2, 0]  # a>b b>d c>f d>c e>c f>a
    assert t._prompt(succ, [0, 2, 1, 3, 5, 4], 0, 3) == "ab,cf,bd,dc,fa,ec|a3="
    assert t._walk(succ, 0, 3) == ("ab;bd;dc!c", 2)
    assert t.parse_prompt("ab,cf,bd,dc,fa,ec|a3=") == (
        {"a": "b", "c": "f", "b": "d", "d": "c", "f": "a", "e": "c"}, "a", 3)
    ps = t.problems(20, seed=0, split="train")
    for text in ps.texts:
        edges = text.split("|")[0].split(",")
        assert sorted(e[0] for e in edges) == list("abcdef")  # every node: one outgoing edge
        assert all(e[0] != e[1] for e in edges)  # no self-loops


def test_edge_order():
    sorted_ps = GraphWalkTask(num_nodes=8, shuffle_edges=False).problems(20, seed=0, split="train")
    shuffled_ps = GraphWalkTask(num_nodes=8, shuffle_edges=True).problems(20, seed=0, split="train")
    for text in sorted_ps.texts:
        assert [e[0] for e in text.split("|")[0].split(",")] == list("abcdefgh")
    assert any([e[0] for e in text.split("|")[0].split(",")] != list("abcdefgh")
               for text in shuffled_ps.texts)


def test_sizes_are_tight():
    for t in (GraphWalkTask(num_nodes=12, min_hops=9, max_hops=9),
              GraphWalkTask(num_nodes=3, min_hops=12, max_hops=12)):
        ps = t.problems(10, seed=0, split="train")
        assert (ps.prompt_len == t.max_prompt_len).all()
        gold_len = (ps.gold != t.tokenizer.PAD).sum(axis=1)
        assert (gold_len == t.max_solution_len).all()
        last = t.tokenizer.decode(ps.gold[0]).split(";")[-1]
        assert len(last) + 1 == t.max_step_len  # 'xy!y' + EOS


def test_splits_are_disjoint():
    t = GraphWalkTask(num_nodes=3, min_hops=1, max_hops=2)  # 8 graphs x 3 starts x 2 hops
    train = t.problems(30, seed=0, split="train")
    test = t.problems(8, seed=0, split="test")
    assert not set(train.texts) & set(test.texts)

    def canon(text):  # the problem up to edge order
        succ, start, hops = t.parse_prompt(text)
        return tuple(sorted(succ.items())), start, hops

    assert not {canon(x) for x in train.texts} & {canon(x) for x in test.texts}


def test_gold_solutions_verify(gtask):
    ps = gtask.problems(60, seed=1, split="test")
    tok = gtask.tokenizer
    sols = [tok.decode(g) for g in ps.gold]
    for i, s in enumerate(sols):
        steps, end = _walk(ps.texts[i])
        assert s == ";".join(steps) + "!" + end
        assert ps.answers[i] == ord(end) - ord("a")
        v = gtask.check_steps(i, ps, s)
        assert all(v) and len(v) == ps.difficulty[i]
    tokens, _ = _full_rows(gtask, ps, sols)
    ans = np.asarray(gtask.extract_answer(jnp.asarray(tokens), jnp.asarray(ps.prompt_len)))
    np.testing.assert_array_equal(ans, ps.answers)


@pytest.mark.parametrize(
    "bad", ["", "ab", "ab!", "ab!;", "ab!!", "ab!bc", "ab!z", "ab!1", "!", "ab!b;", "ab;!",
            "ab!b!b", "ab!,"],
)
def test_malformed_answers_are_invalid(stask, bad):
    ps = stask.problems(1, seed=0, split="test")
    tokens, _ = _full_rows(stask, ps, [bad])
    ans = stask.extract_answer(jnp.asarray(tokens), jnp.asarray(ps.prompt_len))
    assert int(ans[0]) == INVALID_ANSWER


def test_answer_after_eos_or_at_edge_is_invalid(stask):
    ps = stask.problems(1, seed=0, split="test")
    tok = stask.tokenizer
    pl = int(ps.prompt_len[0])
    prompt = list(ps.prompts[0, :pl])
    rows = [prompt + tok.encode("ab") + [tok.EOS] + tok.encode("!b") + [tok.EOS],  # after EOS
            prompt + tok.encode("ab!b")]  # runs off the end of the row: no EOS
    tokens = pad_to(rows, max(len(r) for r in rows))
    ans = stask.extract_answer(jnp.asarray(tokens), jnp.full((2,), pl, jnp.int32))
    assert np.asarray(ans).tolist() == [INVALID_ANSWER, INVALID_ANSWER]


def test_valid_wrong_answer_parses(stask):
    """A well-formed but wrong answer is a valid id (it can lose a vote, not crash one)."""
    ps = stask.problems(6, seed=5, split="test")
    tok = stask.tokenizer
    sols = [tok.decode(g)[:-1] + "abcdef"[(int(a) + 1) % 6] for g, a in zip(ps.gold, ps.answers,
                                                                          strict=True)]
    tokens, _ = _full_rows(stask, ps, sols)
    ans = np.asarray(stask.extract_answer(jnp.asarray(tokens), jnp.asarray(ps.prompt_len)))
    np.testing.assert_array_equal(ans, (ps.answers + 1) % 6)


def test_corrupted_step_fails_from_there_on(gtask):
    ps = gtask.problems(40, seed=6, split="test")
    tok = gtask.tokenizer
    for i in range(len(ps)):
        steps = tok.decode(ps.gold[i]).split(";")
        k = len(steps) // 2
        x, y = steps[k][0], steps[k][1]
        wrong = "abcdef"[("abcdef".index(y) + 1) % 6]
        steps[k] = x + wrong + steps[k][2:]
        v = gtask.check_steps(i, ps, ";".join(steps))
        assert v == [True] * k + [False] * (len(steps) - k)


def test_prefix_checker_matches_step_checker(gtask):
    """The jit prefix checker agrees with the independent re-walk at every step boundary."""
    rng = np.random.default_rng(0)
    ps = gtask.problems(60, seed=2, split="test")
    sols, n_corrupt = [], 0
    for g in ps.gold:
        sol = gtask.tokenizer.decode(g)
        if rng.random() < 0.6:  # corrupt one character (letters, step/answer markers)
            j = int(rng.integers(len(sol)))
            sol = sol[:j] + rng.choice(list("abcdefg;!")) + sol[j + 1 :]
            n_corrupt += 1
        sols.append(sol)
    expected = check_prefix_matches_steps(gtask, ps, sols)
    assert len(expected) > 100 and n_corrupt > 20
    assert 0 < np.mean(expected) < 1


def test_bad_task_config():
    with pytest.raises(ValueError, match="min_hops"):
        GraphWalkTask(min_hops=5, max_hops=2)
    with pytest.raises(ValueError, match="min_hops"):
        GraphWalkTask(min_hops=0, max_hops=2)
    with pytest.raises(ValueError, match="num_nodes"):
        GraphWalkTask(num_nodes=1)
    with pytest.raises(ValueError, match="num_nodes"):
        make_task("graph", num_nodes=27)
    with pytest.raises(ValueError, match="max_hops"):
        GraphWalkTask(max_hops=100)
    with pytest.raises(ValueError, match="shuffle_edges"):
        GraphWalkTask(shuffle_edges="yes")
    with pytest.raises(ValueError, match="test_fraction"):
        GraphWalkTask(test_fraction=1.0)
    with pytest.raises(TypeError):
        make_task("graph", n_nodes=5)  # unknown field (the entry points report TypeError too)
    with pytest.raises(ValueError, match="split"):
        GraphWalkTask().problems(4, seed=0, split="val")
    with pytest.raises(ValueError, match="distinct"):
        GraphWalkTask(num_nodes=2, min_hops=1, max_hops=1).problems(50, seed=0, split="train")
