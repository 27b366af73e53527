"""Saturation budgets: where one more doubling of the budget stops paying.

Measured on an accuracy curve, or predicted from per-problem pass@1 through the coverage it
implies (Brown et al. 2024, "Large Language Monkeys"; Snell et al. 2024).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from ttc.scaling.power_law import coverage_from_pass1


def _last_saturated(budgets: np.ndarray, gains: np.ndarray, eps: float) -> float:
    """Smallest budget from which on every gain is < eps; NaN if the last one is not."""
    bad = np.flatnonzero(~(gains < eps))  # NaN gains count as not saturated
    if bad.size == 0:
        return float(budgets[0])
    i = int(bad[-1]) + 1
    return float(budgets[i]) if i < budgets.size else float("nan")


def saturation_budget(acc_by_budget: ArrayLike, budgets: ArrayLike, eps: float) -> float:
    """Measured saturation knee: the smallest budget ``N`` beyond which one more doubling of the
    budget adds less than ``eps`` accuracy.

    For each measured ``N`` with ``2N <= max(budgets)`` the gain is
    ``acc(2N) - acc(N)``, with ``acc(2N)`` interpolated linearly in ``log budget`` on the raw
    (not monotone-ized) curve (exact when ``2N`` is on the grid, e.g. powers of two). The result
    is the smallest such ``N`` for which the gain is ``< eps`` at ``N`` **and at every larger
    checkable budget** (so a single flat step followed by more growth does not count). A budget
    is e.g. the number of samples ``N`` (the Snell et al. 2024 / Brown et al. 2024 x-axis) or
    FLOPs.

    Args:
        acc_by_budget: ``[B]`` accuracy at each budget.
        budgets: ``[B]`` strictly increasing positive budgets.
        eps: accuracy gain threshold per doubling (absolute, e.g. 0.01 = one point).

    Returns:
        The saturation budget (one of ``budgets``), or NaN if the last checkable doubling still
        gains ``>= eps`` (not saturated within the measured range) or no ``N`` has ``2N`` in
        range.
    """
    y = np.asarray(acc_by_budget, np.float64).ravel()
    n = np.asarray(budgets, np.float64).ravel()
    if y.shape != n.shape:
        raise ValueError("acc_by_budget and budgets differ in shape")
    if np.any(n <= 0) or np.any(np.diff(n) <= 0):
        raise ValueError("budgets must be positive and strictly increasing")
    checkable = 2 * n <= n[-1] * (1 + 1e-12)
    if not np.any(checkable):
        return float("nan")
    nc = n[checkable]
    gains = np.interp(np.log(2 * nc), np.log(n), y) - y[checkable]
    return _last_saturated(nc, gains, eps)


def predicted_saturation(
    pass1_per_problem: ArrayLike,
    eps: float,
    max_n: int = 10_000,
    *,
    budgets: ArrayLike | None = None,
) -> float:
    """Saturation budget predicted from per-problem pass@1, with coverage
    ``c(N) = mean_i [1 - (1 - p_i)^N]`` (``coverage_from_pass1``).

    Same definition as ``saturation_budget``: the smallest ``N`` such that
    ``c(2N) - c(N) < eps`` at ``N`` and at every larger candidate up to ``max_n``; ``c(2N)`` is
    computed exactly (not interpolated). Coverage is the accuracy of an oracle verifier, so this
    predicts when *sampling more* stops finding new solutions; a method with an imperfect
    verifier saturates at or before it (Brown et al. 2024; Snell et al. 2024).

    Note the per-problem gain ``(1-p)^N - (1-p)^{2N}`` rises then falls in ``N`` (a hard problem
    contributes late), which is why "every larger candidate" matters. Problems with
    ``p ≲ 1/max_n`` can still contribute beyond ``max_n``; that is not checked.

    Args:
        pass1_per_problem: ``[P]`` per-problem pass@1.
        eps: coverage gain threshold per doubling.
        max_n: candidates are ``N = 1, ..., max_n`` (ignored when ``budgets`` is given).
        budgets: optional candidate budgets (e.g. the measured powers of two) instead.

    Returns:
        The saturation ``N`` as a float, or NaN if not saturated by the last candidate.
    """
    if budgets is None:
        if max_n < 1:
            raise ValueError("max_n must be >= 1")
        n = np.arange(1, int(max_n) + 1, dtype=np.float64)
    else:
        n = np.asarray(budgets, np.float64).ravel()
        if np.any(n <= 0) or np.any(np.diff(n) <= 0):
            raise ValueError("budgets must be positive and strictly increasing")
    gains = coverage_from_pass1(pass1_per_problem, 2 * n) - coverage_from_pass1(
        pass1_per_problem, n)
    return _last_saturated(n, gains, eps)
