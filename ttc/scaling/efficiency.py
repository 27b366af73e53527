"""Monotone-ized accuracy curves and the efficiency (budget) multiplier between two methods.

Snell et al. 2024, "Scaling LLM Test-Time Compute Optimally can be More Effective than Scaling
Model Parameters": how many times more compute one method needs to match another's accuracy.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike


def monotone_curve(budgets: ArrayLike, acc: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Sort a curve by budget and take the running maximum of accuracy.

    The result is the best accuracy achievable with at most each budget (extra budget can be
    left unused). NaN accuracies are dropped; equal budgets keep their best accuracy.

    Args:
        budgets: ``[B]`` positive budgets (FLOPs or generations).
        acc: ``[B]`` accuracies.

    Returns:
        ``(budgets_sorted, acc_running_max)``, both ``[B']``.
    """
    f = np.asarray(budgets, np.float64).ravel()
    y = np.asarray(acc, np.float64).ravel()
    if f.shape != y.shape:
        raise ValueError(f"budgets and acc differ in shape: {f.shape} vs {y.shape}")
    keep = ~np.isnan(y) & np.isfinite(f)
    f, y = f[keep], y[keep]
    if np.any(f <= 0):
        raise ValueError("budgets must be positive (they are interpolated in log space)")
    order = np.lexsort((-y, f))
    f, y = f[order], np.maximum.accumulate(y[order])
    return f, y


def flops_to_reach(flops: ArrayLike, acc: ArrayLike, target: ArrayLike) -> np.ndarray:
    """Smallest budget at which a method's monotone-ized curve reaches ``target`` accuracy.

    Interpolates linearly in ``log(budget)`` between the two measured points that bracket the
    target. Conventions: ``inf`` where the curve never reaches the target; the smallest measured
    budget where even that one already reaches it (an upper bound: the curve is not extrapolated
    to smaller budgets); NaN for a NaN target.

    Args:
        flops: ``[B]`` budgets of the method (FLOPs or generations).
        acc: ``[B]`` accuracies of the method.
        target: target accuracy, scalar or any shape.

    Returns:
        Array of the shape of ``target``.
    """
    f, y = monotone_curve(flops, acc)
    if f.size == 0:
        raise ValueError("empty curve")
    t = np.asarray(target, np.float64)
    out = np.full(t.shape, np.nan)
    lf = np.log(f)
    for idx in np.ndindex(t.shape):
        ti = t[idx]
        if np.isnan(ti):
            continue
        j = int(np.searchsorted(y, ti, side="left"))  # first index with y >= ti
        if j == y.size:
            out[idx] = np.inf
        elif j == 0:
            out[idx] = f[0]
        else:  # y[j-1] < ti <= y[j]
            w = (ti - y[j - 1]) / (y[j] - y[j - 1])
            out[idx] = np.exp(lf[j - 1] + w * (lf[j] - lf[j - 1]))
    return out


def efficiency_multiplier(
    flops_a: ArrayLike,
    acc_a: ArrayLike,
    flops_b: ArrayLike,
    acc_b: ArrayLike,
    *,
    target_acc: ArrayLike | None = None,
) -> np.ndarray:
    """How many times more compute method B needs than method A for the same accuracy.

    This is the "budget multiplier" of Snell et al. 2024 (e.g. "best-of-N needs 4x the compute
    of the compute-optimal strategy"). For each measured point ``(F_A, acc_A)`` of A, the
    multiplier is ``F_B(acc_A) / F_A`` where ``F_B(y)`` is ``flops_to_reach`` on B's
    monotone-ized curve (linear interpolation in log budget). Values > 1 mean A is more
    efficient.

    Conventions: ``inf`` where B never reaches A's accuracy in its measured range; where B's
    smallest budget already reaches it, ``F_B`` is that smallest budget (so the multiplier is an
    upper bound); NaN where A's accuracy is NaN.

    Args:
        flops_a: ``[Ba]`` budgets of A (same unit as B's: FLOPs per problem, or generations).
        acc_a: ``[Ba]`` accuracies of A.
        flops_b: ``[Bb]`` budgets of B.
        acc_b: ``[Bb]`` accuracies of B.
        target_acc: if given, instead compare at these accuracies: ``F_B(t) / F_A(t)`` with both
            read off the monotone-ized curves (NaN where A does not reach ``t``).

    Returns:
        ``[Ba]`` multipliers (or the shape of ``target_acc``).
    """
    fa = np.asarray(flops_a, np.float64).ravel()
    ya = np.asarray(acc_a, np.float64).ravel()
    if fa.shape != ya.shape:
        raise ValueError(f"flops_a and acc_a differ in shape: {fa.shape} vs {ya.shape}")
    if target_acc is not None:
        t = np.asarray(target_acc, np.float64)
        need_a = flops_to_reach(fa, ya, t)
        need_b = flops_to_reach(flops_b, acc_b, t)
        with np.errstate(invalid="ignore"):
            return np.where(np.isfinite(need_a), need_b / need_a, np.nan)
    if np.any(fa <= 0):
        raise ValueError("flops_a must be positive")
    return flops_to_reach(flops_b, acc_b, ya) / fa
