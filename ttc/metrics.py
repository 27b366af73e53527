"""Accuracy statistics: unbiased pass@k, subset estimators for pooled methods, bootstrap CIs,
Pareto frontiers.

* pass@k: Chen et al. 2021 ("Evaluating Large Language Models Trained on Code"), computed as a
  stable product so it holds for n up to 10^4 and beyond.
* Best-of-k from a pool of n: the exact expectation over uniformly random size-k subsets, the
  estimator used for Snell et al. 2024's and Brown et al. 2024's best-of-N curves.
"""

from __future__ import annotations

import numpy as np
from scipy import stats


def pass_at_k(n, c, k):
    """Unbiased pass@k = ``1 - C(n-c, k) / C(n, k)`` for ``n`` samples with ``c`` correct.

    Broadcasts over arrays; computed as ``1 - prod_{i=n-c+1}^{n} (1 - k/i)`` (stable, no
    factorials). Returns a float (or array of floats).
    """
    n, c, k = np.broadcast_arrays(np.asarray(n), np.asarray(c), np.asarray(k))
    if np.any(k < 1) or np.any(k > n) or np.any(c < 0) or np.any(c > n):
        raise ValueError("need 1 <= k <= n and 0 <= c <= n")
    out = np.empty(n.shape, np.float64)
    for idx in np.ndindex(n.shape):
        ni, ci, ki = int(n[idx]), int(c[idx]), int(k[idx])
        if ni - ci < ki:
            out[idx] = 1.0
        else:
            i = np.arange(ni - ci + 1, ni + 1, dtype=np.float64)
            out[idx] = 1.0 - np.exp(np.sum(np.log1p(-ki / i)))
    return float(out) if out.ndim == 0 else out


def best_of_k_weights(n: int, k: int) -> np.ndarray:
    """``w[r]`` = probability that the sample of rank ``r`` (0 = best) is the best of a uniformly
    random size-``k`` subset of ``n``: ``C(n-1-r, k-1) / C(n, k)``. Sums to 1."""
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n, got k={k}, n={n}")
    r = np.arange(n)
    m = n - 1 - r  # samples ranked below r
    # log C(m, k-1) - log C(n, k), zero where m < k-1
    from math import lgamma

    lg = np.vectorize(lgamma)
    with np.errstate(invalid="ignore"):
        logw = (lg(m + 1.0) - lg(np.maximum(m - k + 2.0, 1.0)) - lgamma(k)
                - (lgamma(n + 1.0) - lgamma(k + 1.0) - lgamma(n - k + 1.0)))
    return np.where(m >= k - 1, np.exp(logw), 0.0)


def expected_best_of_k(scores: np.ndarray, correct: np.ndarray, k: int) -> np.ndarray:
    """Exact expected correctness of best-of-``k`` (by ``scores``) over random size-k subsets of
    each row's pool. ``scores``/``correct`` are ``[P, n]``; ties in score are averaged (a tie is
    then a uniformly random pick). Returns ``[P]``."""
    scores = np.where(np.isnan(scores), -np.inf, np.asarray(scores, np.float64))
    p, n = scores.shape
    w = best_of_k_weights(n, k)
    order = np.argsort(-scores, axis=1, kind="stable")
    s_sorted = np.take_along_axis(scores, order, axis=1)
    c_sorted = np.take_along_axis(np.asarray(correct, np.float64), order, axis=1)
    out = np.empty(p)
    for i in range(p):
        c = c_sorted[i].copy()
        # average correctness within runs of tied scores
        _, start, counts = np.unique(s_sorted[i], return_index=True, return_counts=True)
        for st, ct in zip(start, counts, strict=True):
            if ct > 1:
                c[st : st + ct] = c[st : st + ct].mean()
        out[i] = float(np.dot(w, c))
    return out


def bootstrap_ci(per_problem: np.ndarray, *, n_boot: int = 1000, alpha: float = 0.05,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean over problems (resampling problems)."""
    x = np.asarray(per_problem, np.float64)
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(n_boot, len(x)))].mean(axis=1)
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def pareto_frontier(points) -> np.ndarray:
    """Indices of the non-dominated ``(flops, accuracy)`` points (less FLOPs, more accuracy),
    sorted by FLOPs. A point is dominated if another has ``<=`` FLOPs and ``>=`` accuracy with
    at least one strict; exact duplicates keep the first."""
    pts = np.asarray(points, np.float64).reshape(-1, 2)
    order = np.lexsort((-pts[:, 1], pts[:, 0]))  # by flops asc, then accuracy desc
    keep, best = [], -np.inf
    for i in order:
        if pts[i, 1] > best:
            keep.append(int(i))
            best = pts[i, 1]
    return np.asarray(keep, np.int64)


def roc_auc(scores, labels) -> float:
    """Area under the ROC curve (Mann-Whitney U, ties counted half); NaN if one class only."""
    s = np.asarray(scores, np.float64)
    y = np.asarray(labels, bool)
    pos, neg = s[y], s[~y]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    u = stats.mannwhitneyu(pos, neg, method="asymptotic").statistic
    return float(u / (len(pos) * len(neg)))


def within_group_auc(scores, labels, groups) -> float:
    """AUC restricted to pairs from the same group: the probability that a positive outranks a
    negative *of the same problem* (ties half), pooled over groups by their number of pairs.

    This is what best-of-N and search need from a verifier. A plain :func:`roc_auc` over all
    solutions also rewards telling easy problems from hard ones, which never changes a
    within-problem choice. NaN if no group has both classes.
    """
    s = np.asarray(scores, np.float64)
    y = np.asarray(labels, bool)
    g = np.asarray(groups)
    wins = pairs = 0.0
    for k in np.unique(g):
        sel = g == k
        pos, neg = s[sel & y], s[sel & ~y]
        if len(pos) and len(neg):
            d = pos[:, None] - neg[None, :]
            wins += float(np.sum(d > 0) + 0.5 * np.sum(d == 0))
            pairs += len(pos) * len(neg)
    return wins / pairs if pairs else float("nan")
