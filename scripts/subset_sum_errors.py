"""How a policy's subset-sum solutions go wrong: sorts every sample of a main-job pool by whether
its pattern is correct, whether its last running sum is the target, and whether every running
sum is right.

    ttc-run task=subset_sum name=subset_sum
    python scripts/subset_sum_errors.py outputs/subset_sum/pools/pool-*-seed0-n64.npz

A wrong pattern whose sums are all right ends away from the target: comparing the last sum with
the target exposes it. A wrong pattern that still ends at the target must have a wrong sum
somewhere, and only re-doing the additions exposes it, which is as hard as writing them.
The problems are redrawn from the task settings and ``eval.problem_seed`` / ``eval.n_problems``
(defaults: the main job's).
"""

from __future__ import annotations

import argparse
import collections

import numpy as np

from ttc.tasks.subset_sum import SubsetSumTask


def sums_are_right(numbers: list[int], solution: str) -> bool:
    """Whether every step of ``solution`` is ``+x=s`` / ``_x=s`` with ``x`` the next number and
    ``s`` the right running sum."""
    steps, s = solution.split(";"), 0
    if len(steps) != len(numbers):
        return False
    for x, step in zip(numbers, steps, strict=True):
        if step[:1] not in ("+", "_") or "=" not in step:
            return False
        head, _, tail = step[1:].partition("=")
        if not (head.isdigit() and tail.isdigit()) or int(head) != x:
            return False
        s += x if step[0] == "+" else 0
        if int(tail) != s:
            return False
    return True


def last_sum(solution: str) -> int | None:
    tail = solution.split(";")[-1].partition("=")[2]
    return int(tail) if tail.isdigit() else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pool", help="a pool file of a task=subset_sum run (outputs/<name>/pools/)")
    ap.add_argument("--n-problems", type=int, default=256)
    ap.add_argument("--problem-seed", type=int, default=1234)
    ap.add_argument("--min-numbers", type=int, default=3)
    ap.add_argument("--max-numbers", type=int, default=6)
    ap.add_argument("--max-value", type=int, default=9)
    args = ap.parse_args()
    task = SubsetSumTask(min_numbers=args.min_numbers, max_numbers=args.max_numbers,
                         max_value=args.max_value)
    ps = task.problems(args.n_problems, seed=args.problem_seed, split="test")
    pool = np.load(args.pool)
    tokens, answers = pool["tokens"], pool["answers"]
    if tokens.shape[0] != len(ps):
        raise SystemExit(f"the pool holds {tokens.shape[0]} problems, not {len(ps)}: pass the "
                         "run's --n-problems")
    counts: collections.Counter = collections.Counter()
    for i in range(len(ps)):
        numbers, target = task.parse_prompt(ps.texts[i])
        for j in range(tokens.shape[1]):
            sol = task.tokenizer.decode(tokens[i, j, ps.prompt_len[i]:])
            counts[(bool(answers[i, j] == ps.answers[i]), last_sum(sol) == target,
                    sums_are_right(numbers, sol))] += 1
    total = sum(counts.values())
    print(f"{total} samples ({len(ps)} problems x {tokens.shape[1]})")
    print("| pattern | last sum = target | every sum right | share |")
    print("|---|---|---|---|")
    for (ok, at_target, right), n in sorted(counts.items(), key=lambda kv: -kv[1]):
        print(f"| {'right' if ok else 'wrong'} | {'yes' if at_target else 'no'} | "
              f"{'yes' if right else 'no'} | {n / total:.3f} |")


if __name__ == "__main__":
    main()
