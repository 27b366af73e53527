"""Difficulty bins and cross-validated compute-optimal allocation of test-time compute.

Snell et al. 2024, "Scaling LLM Test-Time Compute Optimally can be More Effective than Scaling
Model Parameters" (§3.2, §5-6).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np
from numpy.typing import ArrayLike

from ttc.scaling.efficiency import efficiency_multiplier


def oracle_difficulty(correct: ArrayLike) -> np.ndarray:
    """Oracle difficulty score of Snell et al. 2024 (§3.2): per-problem pass@1 estimated from
    many samples. ``correct`` is ``[P, n]`` (bool/0-1; NaN = missing sample, ignored). Returns
    ``[P]``; higher = easier."""
    x = np.asarray(correct, np.float64)
    if x.ndim != 2:
        raise ValueError("correct must be [P, n]")
    return np.nanmean(x, axis=1)


def predicted_difficulty(final_scores: ArrayLike) -> np.ndarray:
    """Model-predicted difficulty score of Snell et al. 2024 (§3.2): the mean final verifier
    (PRM/ORM) score over a problem's samples, needing no ground truth. ``final_scores`` is
    ``[P, n]`` (NaN ignored). Returns ``[P]``; higher = easier."""
    x = np.asarray(final_scores, np.float64)
    if x.ndim != 2:
        raise ValueError("final_scores must be [P, n]")
    return np.nanmean(x, axis=1)


def difficulty_bins(score_per_problem: ArrayLike, n_bins: int = 5, *,
                    seed: int | None = 0) -> np.ndarray:
    """Quantile difficulty bins (Snell et al. 2024, §3.2: five quantiles of a difficulty score).

    ``score_per_problem`` is an easiness score, **higher = easier** (``oracle_difficulty`` or
    ``predicted_difficulty``). Bins are equal-size quantiles of the rank: **bin 0 = easiest**
    (highest scores) and bin ``n_bins-1`` = hardest, i.e. bin ``i`` is Snell's difficulty level
    ``i+1``. Sizes differ by at most one. Ties (common with oracle pass@1 from finitely many
    samples: many 0s and 1s) are broken at random with ``seed`` so that tied problems are split
    evenly across the bin boundary; ``seed=None`` breaks ties by problem index instead.

    Args:
        score_per_problem: ``[P]`` easiness scores (no NaN).
        n_bins: number of bins, ``1 <= n_bins <= P``.
        seed: tie-breaking seed, or ``None`` for index order.

    Returns:
        ``[P]`` int64 bin ids in ``[0, n_bins)``.
    """
    s = np.asarray(score_per_problem, np.float64).ravel()
    if np.any(np.isnan(s)):
        raise ValueError("difficulty scores must not be NaN")
    p = s.size
    if not 1 <= n_bins <= p:
        raise ValueError(f"need 1 <= n_bins <= number of problems ({p})")
    tie = (np.random.default_rng(seed).permutation(p) if seed is not None
           else np.arange(p))
    order = np.lexsort((tie, -s))  # easiest first
    bins = np.empty(p, np.int64)
    bins[order] = (np.arange(p) * n_bins) // p
    return bins


@dataclasses.dataclass(frozen=True)
class ComputeOptimalResult:
    """Result of ``compute_optimal``. ``B`` budgets, ``P`` problems, ``K`` bins, ``F`` folds.

    Attributes:
        methods: method names in input order.
        accuracy: ``[B]`` cross-validated accuracy of the compute-optimal strategy.
        flops: ``[B]`` its mean FLOPs per problem (each problem charged its chosen method's
            FLOPs at that budget).
        per_problem_accuracy: ``[B, P]`` held-out accuracy per problem.
        per_problem_flops: ``[B, P]``.
        bin_accuracy: ``[K, B]`` held-out accuracy per bin (NaN for an empty bin).
        chosen: ``[F, K, B]`` method chosen for bin ``k``, budget ``b`` when fold ``f`` is held
            out (selected on the other folds).
        chosen_full: ``[K, B]`` method chosen using all problems (what one would deploy; its
            accuracy is optimistic and not reported).
        fold: ``[P]`` fold id of each problem.
        baseline: name of the baseline method, or ``None``.
        multiplier: ``[B]`` ``efficiency_multiplier`` of the baseline against the compute-optimal
            curve (how many times more FLOPs the baseline needs), or ``None``.
    """

    methods: list[str]
    accuracy: np.ndarray
    flops: np.ndarray
    per_problem_accuracy: np.ndarray
    per_problem_flops: np.ndarray
    bin_accuracy: np.ndarray
    chosen: np.ndarray
    chosen_full: np.ndarray
    fold: np.ndarray
    baseline: str | None
    multiplier: np.ndarray | None


def _select(acc: Mapping[str, np.ndarray], flops: Mapping[str, np.ndarray], names: list[str],
            b: int, rows: np.ndarray) -> str:
    """Best method at budget index ``b`` on problems ``rows``; ties (1e-12) -> fewer FLOPs ->
    input order."""
    means = np.array([acc[m][b, rows].mean() for m in names])
    cands = [m for m, v in zip(names, means, strict=True) if v >= means.max() - 1e-12]
    return min(cands, key=lambda m: (flops[m][b], names.index(m)))


def compute_optimal(
    per_problem_acc: Mapping[str, ArrayLike],
    flops: Mapping[str, ArrayLike],
    bins: ArrayLike,
    *,
    n_folds: int = 2,
    seed: int = 0,
    baseline: str | None = None,
) -> ComputeOptimalResult:
    """Compute-optimal test-time strategy per difficulty bin, with cross-validation.

    Snell et al. 2024 (§3.2, §5-6): for each difficulty bin and each generation budget, pick the
    method (or hyperparameter setting: pass each as its own "method") with the best accuracy,
    choosing on one half of the problems and evaluating on the other (2-fold cross-validation),
    then compare the resulting curve to best-of-N via the budget multiplier.

    Conventions:

    * Budget index ``b`` means the same nominal budget (e.g. ``N`` generations) for every method;
      methods are compared at equal budget index, as in Snell et al. The x-axis of the returned
      curve is the FLOPs actually spent by the chosen methods.
    * Folds are stratified by bin (each bin is split as evenly as possible, at random with
      ``seed``). For held-out fold ``f``, the method for (bin, budget) is selected on the
      problems of that bin in the other folds and scored on that bin's problems in fold ``f``;
      if a bin has no training problems, the selection uses all training problems.
      ``n_folds=1`` selects and scores on the same problems (in-sample, optimistic).
    * Selection ties (within 1e-12) go to the method with fewer FLOPs at that budget, then to
      the first in input order.

    Args:
        per_problem_acc: method -> ``[B, P]`` per-problem accuracy (0/1 correctness or expected
            accuracy) at each budget. All methods share ``B`` and ``P``.
        flops: method -> ``[B]`` mean FLOPs per problem at each budget.
        bins: ``[P]`` integer bin ids (``difficulty_bins``); ``K = max + 1``.
        n_folds: number of folds (Snell et al. use 2).
        seed: fold-assignment seed.
        baseline: optional method name (e.g. best-of-N); if given, ``multiplier[b]`` is how many
            times more FLOPs it needs to match the compute-optimal accuracy at budget ``b``.

    Returns:
        A ``ComputeOptimalResult``.
    """
    names = list(per_problem_acc)
    if not names:
        raise ValueError("no methods")
    acc = {m: np.asarray(per_problem_acc[m], np.float64) for m in names}
    fl = {m: np.asarray(flops[m], np.float64).ravel() for m in names}
    nb, p = acc[names[0]].shape
    for m in names:
        if acc[m].shape != (nb, p) or fl[m].shape != (nb,):
            raise ValueError(f"method {m!r}: need acc [B, P] = {(nb, p)} and flops [B] = {(nb,)}")
    bins = np.asarray(bins)
    if bins.shape != (p,) or not np.issubdtype(bins.dtype, np.integer) or np.any(bins < 0):
        raise ValueError("bins must be [P] non-negative integers")
    if not 1 <= n_folds <= p:
        raise ValueError("need 1 <= n_folds <= P")
    if baseline is not None and baseline not in acc:
        raise ValueError(f"baseline {baseline!r} is not one of the methods")
    n_bins = int(bins.max()) + 1

    rng = np.random.default_rng(seed)
    fold = np.empty(p, np.int64)
    offset = 0
    for k in range(n_bins):
        idx = np.flatnonzero(bins == k)
        fold[rng.permutation(idx)] = (np.arange(idx.size) + offset) % n_folds
        offset += idx.size  # rotate the start so small bins don't all favour fold 0

    chosen = np.empty((n_folds, n_bins, nb), dtype=object)
    chosen_full = np.empty((n_bins, nb), dtype=object)
    pp_acc = np.full((nb, p), np.nan)
    pp_flops = np.full((nb, p), np.nan)
    all_rows = np.arange(p)
    for k in range(n_bins):
        in_bin = bins == k
        for b in range(nb):
            chosen_full[k, b] = _select(acc, fl, names, b, all_rows[in_bin] if in_bin.any()
                                        else all_rows)
    for f in range(n_folds):
        test = fold == f
        train = ~test if n_folds > 1 else test
        for k in range(n_bins):
            in_bin = bins == k
            rows = np.flatnonzero(train & in_bin)
            if rows.size == 0:
                rows = np.flatnonzero(train)
            held = np.flatnonzero(test & in_bin)
            for b in range(nb):
                m = _select(acc, fl, names, b, rows)
                chosen[f, k, b] = m
                pp_acc[b, held] = acc[m][b, held]
                pp_flops[b, held] = fl[m][b]

    bin_acc = np.full((n_bins, nb), np.nan)
    for k in range(n_bins):
        if np.any(bins == k):
            bin_acc[k] = pp_acc[:, bins == k].mean(axis=1)
    curve_acc, curve_flops = pp_acc.mean(axis=1), pp_flops.mean(axis=1)
    mult = None
    if baseline is not None:
        mult = efficiency_multiplier(curve_flops, curve_acc, fl[baseline],
                                     acc[baseline].mean(axis=1))
    return ComputeOptimalResult(names, curve_acc, curve_flops, pp_acc, pp_flops, bin_acc,
                                chosen, chosen_full, fold, baseline, mult)
