import itertools
from math import comb

import numpy as np
import pytest

from ttc.metrics import (
    best_of_k_weights,
    bootstrap_ci,
    expected_best_of_k,
    pareto_frontier,
    pass_at_k,
)


def test_pass_at_k_matches_combinatorial_formula():
    for n in (1, 5, 20):
        for c in range(n + 1):
            for k in range(1, n + 1):
                ref = 1.0 - comb(n - c, k) / comb(n, k)
                assert abs(pass_at_k(n, c, k) - ref) < 1e-12


def test_pass_at_k_is_stable_for_large_n():
    v = pass_at_k(10_000, 3, 1000)
    ref = 1.0 - np.prod([(10_000 - 3 - i) / (10_000 - i) for i in range(1000)])
    assert abs(v - ref) < 1e-10 and 0 < v < 1
    assert pass_at_k(10_000, 0, 10_000) == 0.0
    assert pass_at_k(10_000, 1, 10_000) == 1.0
    arr = pass_at_k(np.array([10, 10]), np.array([0, 10]), 3)
    np.testing.assert_allclose(arr, [0.0, 1.0])
    with pytest.raises(ValueError):
        pass_at_k(5, 1, 6)


def test_best_of_k_weights():
    for n in (1, 4, 9):
        for k in range(1, n + 1):
            w = best_of_k_weights(n, k)
            assert abs(w.sum() - 1) < 1e-10
            for r in range(n):
                assert abs(w[r] - comb(n - 1 - r, k - 1) / comb(n, k)) < 1e-10


def test_expected_best_of_k_matches_subset_enumeration():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(5, 7))
    scores[0, :3] = 1.0  # ties
    correct = rng.random((5, 7)) < 0.5
    for k in (1, 3, 7):
        got = expected_best_of_k(scores, correct, k)
        for p in range(5):
            vals = []
            for sub in itertools.combinations(range(7), k):
                s = scores[p, list(sub)]
                winners = [sub[i] for i in np.flatnonzero(s == s.max())]
                vals.append(np.mean([correct[p, w] for w in winners]))
            assert abs(got[p] - np.mean(vals)) < 1e-10


def test_bootstrap_ci_brackets_mean():
    x = np.random.default_rng(0).random(200) < 0.3
    lo, hi = bootstrap_ci(x)
    assert lo < x.mean() < hi and hi - lo < 0.2


def test_pareto_frontier_matches_brute_force():
    rng = np.random.default_rng(1)
    pts = np.c_[rng.integers(0, 20, 60), rng.integers(0, 20, 60) / 20]
    got = set(pareto_frontier(pts).tolist())
    dominated = set()
    for i, (f, a) in enumerate(pts):
        for j, (g, b) in enumerate(pts):
            if j != i and g <= f and b >= a and (g < f or b > a or j < i):
                dominated.add(i)
                break
    assert got == set(range(len(pts))) - dominated


def test_within_group_auc_matches_brute_force_and_ignores_difficulty():
    from ttc.metrics import roc_auc, within_group_auc

    rng = np.random.default_rng(3)
    s = rng.integers(0, 5, 60).astype(float)  # many ties
    y = rng.random(60) < 0.5
    g = np.repeat(np.arange(15), 4)
    wins = pairs = 0.0
    for i in range(60):
        for j in range(60):
            if g[i] == g[j] and y[i] and not y[j]:
                wins += 1.0 if s[i] > s[j] else 0.5 if s[i] == s[j] else 0.0
                pairs += 1
    assert abs(within_group_auc(s, y, g) - wins / pairs) < 1e-12
    # a score that only tells easy problems from hard ones: perfect plain AUC, 0.5 within
    y2 = np.repeat([True, False], 8) ^ np.tile([False, False, False, True], 4)
    g2 = np.repeat(np.arange(4), 4)
    diff = np.repeat([1.0, 0.0], 8)
    assert within_group_auc(diff, y2, g2) == 0.5
    assert roc_auc(diff, y2) == 0.75
    assert np.isnan(within_group_auc([1.0, 2.0], [True, False], [0, 1]))
