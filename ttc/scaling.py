"""Scaling analysis of test-time compute: coverage power laws, efficiency multipliers,
compute-optimal allocation, the FLOPs-matched pretraining/inference exchange, saturation budgets.

Pure NumPy (no SciPy). Everything here works on already-measured accuracy numbers; it never runs
a model. Conventions shared by all functions:

* A **budget** is whatever the caller's x-axis counts: a number of generations ``N`` (best-of-N,
  beam width, particles) or FLOPs per problem from the ledger (``ttc.flops``). Functions that
  interpolate between budgets do so **linearly in log budget**, the axis on which TTC curves are
  plotted and close to linear.
* **Coverage** ``c(k)`` is the fraction of problems solved by at least one of ``k`` samples
  (pass@k with an oracle verifier; estimate it with ``ttc.metrics.pass_at_k``).
* ``pass1_per_problem`` is a ``[P]`` array of per-problem single-attempt success probabilities
  (typically ``c_i / n_i`` from ``n_i`` samples).
* A **monotone-ized** accuracy curve is the running maximum over increasing budget: what the best
  configuration costing at most that budget achieves (more budget can always be left unused).

Sources:

* Brown et al. 2024, "Large Language Monkeys: Scaling Inference Compute with Repeated Sampling"
  (exponentiated power law of coverage).
* Schaeffer et al. 2025, "How Do Large Language Monkeys Get Their Power (Laws)?" (the aggregate
  exponent is the left-tail exponent of the per-problem pass@1 distribution).
* Snell et al. 2024, "Scaling LLM Test-Time Compute Optimally can be More Effective than Scaling
  Model Parameters" (difficulty bins, compute-optimal allocation, FLOPs-matched exchange).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "ComputeOptimalResult",
    "DistributionalFit",
    "compute_optimal",
    "coverage_from_pass1",
    "difficulty_bins",
    "distributional_exponent",
    "efficiency_multiplier",
    "efficiency_summary",
    "fit_power_law",
    "flops_matched_comparison",
    "flops_to_reach",
    "inference_flops",
    "inference_multiplier",
    "monotone_curve",
    "oracle_difficulty",
    "predict_coverage",
    "predicted_difficulty",
    "predicted_saturation",
    "pretraining_flops",
    "saturation_budget",
]


# --------------------------------------------------------------------------------------------
# 1. Exponentiated power law of coverage (Brown et al. 2024)
# --------------------------------------------------------------------------------------------


def fit_power_law(
    ks: ArrayLike,
    coverage: ArrayLike,
    *,
    clip: float | None = None,
    r2_space: Literal["transformed", "coverage"] = "transformed",
) -> tuple[float, float, float]:
    """Fit the exponentiated power law ``log c(k) ≈ -a·k^(-b)`` to a coverage curve.

    Brown et al. 2024 ("Large Language Monkeys", §3) model coverage vs number of samples as
    ``c(k) ≈ exp(-a·k^(-b))``. Taking ``log(-log(.))`` of both sides makes it linear,
    ``log(-log c) = log a - b·log k``, and this function fits that line by ordinary least
    squares (closed form, no iterative optimizer; every point weighs the same in the transformed
    space).

    Points where the transform is undefined are handled as follows:

    * ``c == 1`` (``-log c = 0``) and ``c == 0`` (``-log c = inf``) are **dropped** by default;
    * with ``clip=eps`` they are instead clipped to ``[eps, 1 - eps]`` and kept. Clipped points
      sit far off the line (``log(-log(1-eps)) ≈ log eps``) and dominate an unweighted fit: use
      this only with a deliberate, not-too-small ``eps``.

    NaN points are always dropped. At least two points with distinct ``k`` must remain.

    Args:
        ks: ``[K]`` positive sample counts (or any positive budget).
        coverage: ``[K]`` coverage values in ``[0, 1]``.
        clip: ``None`` to drop ``c in {0, 1}``; a float ``eps`` in ``(0, 0.5)`` to clip instead.
        r2_space: where the coefficient of determination is measured. ``"transformed"``
            (default): on the fitted points in ``log(-log c)`` space, the quantity least squares
            maximizes. ``"coverage"``: ``1 - SS_res/SS_tot`` of ``predict_coverage`` against the
            raw coverage over **all** finite input points (dropped ``c in {0, 1}`` included),
            which is what a plot of coverage shows; it can be negative for a bad fit.

    Returns:
        ``(a, b, r2)``: ``a > 0`` the scale, ``b`` the exponent (positive when coverage grows
        with ``k``), ``r2`` the goodness of fit in ``r2_space`` (NaN when ``SS_tot == 0``).

    Raises:
        ValueError: on mismatched shapes, non-positive ``k``, coverage outside ``[0, 1]``, or
            fewer than two usable distinct ``k``.
    """
    k = np.asarray(ks, np.float64).ravel()
    c = np.asarray(coverage, np.float64).ravel()
    if k.shape != c.shape:
        raise ValueError(f"ks and coverage differ in shape: {k.shape} vs {c.shape}")
    finite = np.isfinite(c) & np.isfinite(k)
    if np.any(k[finite] <= 0):
        raise ValueError("ks must be positive")
    if np.any((c[finite] < 0) | (c[finite] > 1)):
        raise ValueError("coverage must lie in [0, 1]")
    if clip is None:
        use = finite & (c > 0) & (c < 1)
        cu = c[use]
    else:
        if not 0 < clip < 0.5:
            raise ValueError("clip must lie in (0, 0.5)")
        use = finite
        cu = np.clip(c[use], clip, 1 - clip)
    x = np.log(k[use])
    if np.unique(x).size < 2:
        raise ValueError("need at least two points with distinct k and 0 < coverage < 1")
    y = np.log(-np.log(cu))
    slope, intercept = _ols(x, y)
    a, b = float(np.exp(intercept)), float(-slope)
    if r2_space == "transformed":
        r2 = _r2(y, intercept + slope * x)
    elif r2_space == "coverage":
        r2 = _r2(c[finite], predict_coverage(k[finite], a, b))
    else:
        raise ValueError(f"unknown r2_space {r2_space!r}")
    return a, b, r2


def predict_coverage(ks: ArrayLike, a: float, b: float) -> np.ndarray:
    """Coverage under the exponentiated power law, ``c(k) = exp(-a·k^(-b))`` (Brown et al. 2024).

    Args:
        ks: positive sample counts, any shape.
        a: scale from ``fit_power_law``.
        b: exponent from ``fit_power_law``.

    Returns:
        Array of the shape of ``ks`` with values in ``[0, 1]``.
    """
    k = np.asarray(ks, np.float64)
    return np.exp(-a * np.power(k, -b))


def _ols(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least-squares line ``y ≈ intercept + slope·x``; returns ``(slope, intercept)``."""
    xm, ym = x.mean(), y.mean()
    slope = float(np.sum((x - xm) * (y - ym)) / np.sum((x - xm) ** 2))
    return slope, float(ym - slope * xm)


def _r2(y: np.ndarray, yhat: np.ndarray) -> float:
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    if ss_tot == 0:
        return float("nan")
    return 1.0 - float(np.sum((y - yhat) ** 2)) / ss_tot


# --------------------------------------------------------------------------------------------
# 2. Distributional estimator of the exponent (Schaeffer et al. 2025)
# --------------------------------------------------------------------------------------------


def coverage_from_pass1(pass1_per_problem: ArrayLike, ks: ArrayLike) -> np.ndarray:
    """Aggregate coverage implied by per-problem success probabilities:
    ``c(k) = mean_i [1 - (1 - p_i)^k]``.

    Samples are assumed independent given the problem, so problem ``i`` is covered by ``k``
    samples with probability ``1 - (1-p_i)^k`` (Brown et al. 2024; Schaeffer et al. 2025, eq. 1).
    With ``p_i = c_i/n_i`` plugged in this is a biased (high) estimate of coverage at ``k > 1``;
    for ``k <= n_i`` prefer the unbiased ``ttc.metrics.pass_at_k``. Its use here is to
    extrapolate, and to compare against ``fit_power_law``.

    Args:
        pass1_per_problem: ``[P]`` probabilities in ``[0, 1]``.
        ks: ``[K]`` positive sample counts (need not be integers).

    Returns:
        ``[K]`` coverage values.
    """
    p, counts = np.unique(np.asarray(pass1_per_problem, np.float64).ravel(), return_counts=True)
    if p.size == 0 or np.any((p < 0) | (p > 1)) or np.any(np.isnan(p)):
        raise ValueError("pass1_per_problem must be a non-empty array of values in [0, 1]")
    k = np.asarray(ks, np.float64)
    w = counts / counts.sum()
    with np.errstate(divide="ignore"):
        logq = np.log1p(-p)  # -inf where p == 1
    out = np.empty(k.size)
    flat = k.ravel()
    for s in range(0, flat.size, 256):  # chunk to bound memory at [256, unique P]
        kk = flat[s : s + 256, None]
        with np.errstate(invalid="ignore"):
            fail = np.where(p[None] == 1.0, 0.0, np.exp(kk * logq[None]))
        out[s : s + 256] = 1.0 - fail @ w
    return out.reshape(k.shape)


@dataclasses.dataclass(frozen=True)
class DistributionalFit:
    """Result of ``distributional_exponent``.

    Attributes:
        b: estimated power-law exponent of ``-log c(k)`` (the left-tail exponent of the pass@1
            density: ``density(p) ∝ p^(b-1)`` near 0).
        a: implied scale, so that ``-log c(k) ≈ a·k^(-b)`` for large ``k`` (computed over the
            problems with ``p > 0``; see ``frac_zero``). Comparable to ``fit_power_law``'s ``a``.
        method: ``"beta"``, ``"beta_binomial"`` or ``"tail"``.
        params: fitted parameters (``alpha``, ``beta`` for the Beta fits; ``log_intercept``
            and ``n_tail`` for the tail fit).
        frac_zero: fraction of problems whose pass@1 is exactly 0 that the continuous fits
            ("beta", "tail") set aside. Such problems are never solved and make coverage plateau
            at ``1 - frac_zero``; the power law then holds for ``-log(c(k)/(1-frac_zero))``
            only approximately. 0 for ``"beta_binomial"`` (zeros are modeled).
        frac_one: fraction with pass@1 exactly 1 set aside by ``"beta"`` (always covered).
        n_used: number of problems that entered the fit.
    """

    b: float
    a: float
    method: str
    params: dict[str, float]
    frac_zero: float
    frac_one: float
    n_used: int

    def predict_coverage(self, ks: ArrayLike) -> np.ndarray:
        """Coverage ``c(k)`` implied by the fit.

        For the Beta fits this is exact under the fitted model:
        ``c(k) = frac_one + (1 - frac_zero - frac_one)·(1 - B(α, β+k)/B(α, β))``. For the
        ``"tail"`` fit only the asymptotic ``exp(-a·k^(-b))`` is available (valid at large ``k``).
        """
        k = np.asarray(ks, np.float64)
        if self.method == "tail":
            return predict_coverage(k, self.a, self.b)
        al, be = self.params["alpha"], self.params["beta"]
        fail = np.exp(_lgamma_diff(be + k, al) + math.lgamma(al + be) - math.lgamma(be))
        mass = 1.0 - self.frac_zero - self.frac_one
        return self.frac_one + mass * (1.0 - fail)


def _lgamma_diff(x: np.ndarray, d: float) -> np.ndarray:
    """``log Γ(x) - log Γ(x + d)`` for ``x > 0``, accurate for large ``x`` too (a difference of
    two ``lgamma`` values near 1e15 would lose every digit): Stirling's series there."""
    x = np.asarray(x, np.float64)
    out = np.empty(x.shape)
    small = x < 1e4
    lg = np.vectorize(math.lgamma, otypes=[np.float64])
    out[small] = lg(x[small]) - lg(x[small] + d)
    z = x[~small]
    zd = z + d
    out[~small] = (-(z - 0.5) * np.log1p(d / z) - d * np.log(zd) + d
                   + (1 / z - 1 / zd) / 12 - (z**-3 - zd**-3) / 360)
    return out


def distributional_exponent(
    pass1_per_problem: ArrayLike,
    *,
    n_samples: ArrayLike | int | None = None,
    method: Literal["beta", "beta_binomial", "tail"] | None = None,
    tail_fraction: float = 0.1,
) -> DistributionalFit:
    """Estimate the coverage power-law exponent from the per-problem pass@1 distribution.

    Schaeffer et al. 2025 ("How Do Large Language Monkeys Get Their Power (Laws)?") show that
    each problem's failure probability decays exponentially in ``k``, ``(1-p_i)^k``, and the
    aggregate power law comes from the distribution of ``p_i``: if its density behaves like
    ``C·p^(b-1)`` as ``p -> 0`` then

        ``1 - c(k) = E[(1-p)^k] ≈ C·Γ(b)·k^(-b)``  and so  ``-log c(k) ≈ a·k^(-b)``,
        ``a = C·Γ(b)``,

    for large ``k``. Estimating ``b`` from the distribution of ``p`` ("distributional
    estimator") needs far fewer samples than fitting the coverage curve. Methods:

    * ``"beta"``: maximum-likelihood Beta(α, β) fit to the ``p_i`` in ``(0, 1)``; ``b = α``,
      ``C = 1/B(α, β)``, so ``a = Γ(α+β)/Γ(β)`` times the fitted mass. Problems with ``p`` exactly
      0 or 1 cannot enter a continuous likelihood and are set aside (reported in the result).
      Schaeffer et al. fit a *scaled* Beta (support ``[0, s]``); the scale changes only the
      right tail and ``C``, not the left-tail exponent ``b``.
    * ``"beta_binomial"`` (default when ``n_samples`` is given): maximum likelihood of the
      observed success counts ``c_i = p_i·n_i`` under ``p_i ~ Beta(α, β)``,
      ``c_i ~ Binomial(n_i, p_i)``. This models the estimation noise in ``p_i = c_i/n_i``
      (zeros included), which otherwise biases ``b``; use it whenever pass@1 comes from
      finitely many samples.
    * ``"tail"``: nonparametric; regress ``log F(x)`` on ``log x`` over the lowest
      ``tail_fraction`` of the positive ``p_i``, where ``F(x) = P(0 < p <= x) ≈ (C/b)·x^b``
      (empirical CDF with plotting positions ``(i - 1/2)/P``); then ``a = Γ(b+1)·e^intercept``.
      Needs many problems and continuous ``p`` (it is biased by the ``1/n`` granularity of
      estimated pass@1).

    Assumptions: samples are independent given the problem; the problems are a draw from one
    distribution; the large-``k`` asymptotics apply (``k·p`` large for most of the mass the curve
    is sensitive to). Problems with ``p = 0`` put an atom at 0; the continuous fits set them
    aside and ``a`` then describes the rest.

    Args:
        pass1_per_problem: ``[P]`` per-problem pass@1 in ``[0, 1]``.
        n_samples: samples per problem (scalar or ``[P]``); required for ``"beta_binomial"``.
        method: estimator; default ``"beta_binomial"`` if ``n_samples`` is given else ``"beta"``.
        tail_fraction: for ``"tail"``, the fraction of positive ``p`` used (at least 10 points).

    Returns:
        A ``DistributionalFit`` with ``b``, ``a`` and the fitted parameters.
    """
    p = np.asarray(pass1_per_problem, np.float64).ravel()
    if p.size == 0 or np.any(np.isnan(p)) or np.any((p < 0) | (p > 1)):
        raise ValueError("pass1_per_problem must be a non-empty array of values in [0, 1]")
    if method is None:
        method = "beta_binomial" if n_samples is not None else "beta"
    total = p.size
    if method == "beta":
        frac_zero = float(np.mean(p == 0))
        frac_one = float(np.mean(p == 1))
        x = p[(p > 0) & (p < 1)]
        if x.size < 3:
            raise ValueError("need at least 3 problems with 0 < pass@1 < 1")
        al, be = _fit_beta(x)
        a = math.exp(math.lgamma(al + be) - math.lgamma(be)) * (1 - frac_zero - frac_one)
        return DistributionalFit(al, a, method, {"alpha": al, "beta": be}, frac_zero, frac_one,
                                 int(x.size))
    if method == "beta_binomial":
        if n_samples is None:
            raise ValueError("beta_binomial needs n_samples")
        n = np.broadcast_to(np.asarray(n_samples, np.float64), p.shape)
        if np.any(n < 1) or np.any(n != np.round(n)):
            raise ValueError("n_samples must be positive integers")
        c = np.round(p * n)
        if np.any(np.abs(c - p * n) > 1e-6):
            raise ValueError("pass1_per_problem * n_samples must be integer success counts")
        al, be = _fit_beta_binomial(n.astype(np.int64), c.astype(np.int64))
        a = math.exp(math.lgamma(al + be) - math.lgamma(be))
        return DistributionalFit(al, a, method, {"alpha": al, "beta": be}, 0.0, 0.0, total)
    if method == "tail":
        if not 0 < tail_fraction <= 1:
            raise ValueError("tail_fraction must lie in (0, 1]")
        pos = np.sort(p[p > 0])
        m = max(10, round(tail_fraction * pos.size))
        if pos.size < m or np.unique(pos[:m]).size < 2:
            raise ValueError("too few distinct positive pass@1 values for the tail fit")
        n_zero = total - pos.size
        ecdf = (np.arange(1, m + 1) - 0.5) / total  # F(x) = P(0 < p <= x), all problems
        slope, intercept = _ols(np.log(pos[:m]), np.log(ecdf))
        b = slope
        a = math.exp(math.lgamma(b + 1) + intercept)
        return DistributionalFit(b, a, method, {"log_intercept": intercept, "n_tail": float(m)},
                                 n_zero / total, 0.0, m)
    raise ValueError(f"unknown method {method!r}")


def _nelder_mead(f: Callable[[np.ndarray], float], x0: np.ndarray, step: float = 0.5,
                 xatol: float = 1e-9, fatol: float = 1e-12, max_iter: int = 5000) -> np.ndarray:
    """Minimize ``f`` with the Nelder-Mead simplex (standard coefficients 1, 2, 0.5, 0.5)."""
    d = x0.size
    simplex = np.vstack([x0] + [x0 + step * np.eye(d)[i] for i in range(d)])
    fs = np.array([f(v) for v in simplex])
    for _ in range(max_iter):
        order = np.argsort(fs)
        simplex, fs = simplex[order], fs[order]
        if (np.max(np.abs(simplex[1:] - simplex[0])) < xatol
                and np.max(np.abs(fs[1:] - fs[0])) < fatol):
            break
        centroid = simplex[:-1].mean(axis=0)
        xr = centroid + (centroid - simplex[-1])
        fr = f(xr)
        if fr < fs[0]:
            xe = centroid + 2.0 * (centroid - simplex[-1])
            fe = f(xe)
            simplex[-1], fs[-1] = (xe, fe) if fe < fr else (xr, fr)
        elif fr < fs[-2]:
            simplex[-1], fs[-1] = xr, fr
        else:
            if fr < fs[-1]:
                xc = centroid + 0.5 * (xr - centroid)
            else:
                xc = centroid + 0.5 * (simplex[-1] - centroid)
            fc = f(xc)
            if fc < min(fr, fs[-1]):
                simplex[-1], fs[-1] = xc, fc
            else:
                simplex[1:] = simplex[0] + 0.5 * (simplex[1:] - simplex[0])
                fs[1:] = [f(v) for v in simplex[1:]]
    return simplex[int(np.argmin(fs))]


def _beta_moments(x: np.ndarray) -> tuple[float, float]:
    m, v = float(x.mean()), float(x.var())
    common = m * (1 - m) / v - 1 if v > 0 else 1.0
    common = max(common, 1e-2)
    return max(m * common, 1e-2), max((1 - m) * common, 1e-2)


def _fit_beta(x: np.ndarray) -> tuple[float, float]:
    """Beta(α, β) maximum likelihood on values in (0, 1), optimized in log-parameters."""
    s1, s2 = float(np.mean(np.log(x))), float(np.mean(np.log1p(-x)))

    def nll(t: np.ndarray) -> float:
        al, be = math.exp(t[0]), math.exp(t[1])
        return (math.lgamma(al) + math.lgamma(be) - math.lgamma(al + be)
                - (al - 1) * s1 - (be - 1) * s2)

    t = _nelder_mead(nll, np.log(_beta_moments(x)))
    return math.exp(t[0]), math.exp(t[1])


def _fit_beta_binomial(n: np.ndarray, c: np.ndarray) -> tuple[float, float]:
    """Beta-binomial maximum likelihood. Uses ``log B(c+α, n-c+β) - log B(α, β) =
    Σ_{j<c} log(α+j) + Σ_{j<n-c} log(β+j) - Σ_{j<n} log(α+β+j)`` with cumulative sums, grouped
    by ``(n, c)`` so the cost is ``O(max n)`` per evaluation."""
    pairs, counts = np.unique(np.stack([n, c], axis=1), axis=0, return_counts=True)
    nn, cc = pairs[:, 0], pairs[:, 1]
    j = np.arange(int(nn.max()), dtype=np.float64)
    w = counts.astype(np.float64) / counts.sum()

    def cum(v: float) -> np.ndarray:  # cum[m] = Σ_{j<m} log(v + j)
        return np.concatenate([[0.0], np.cumsum(np.log(v + j))])

    def nll(t: np.ndarray) -> float:
        al, be = math.exp(t[0]), math.exp(t[1])
        ll = cum(al)[cc] + cum(be)[nn - cc] - cum(al + be)[nn]
        return -float(ll @ w)

    pm = np.clip((c + 0.5) / (n + 1.0), 1e-6, 1 - 1e-6)
    t = _nelder_mead(nll, np.log(_beta_moments(pm)))
    return math.exp(t[0]), math.exp(t[1])


# --------------------------------------------------------------------------------------------
# 3. Efficiency multiplier
# --------------------------------------------------------------------------------------------


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


def efficiency_summary(
    flops_a: ArrayLike, acc_a: ArrayLike, flops_b: ArrayLike, acc_b: ArrayLike
) -> dict[str, float]:
    """Summaries of ``efficiency_multiplier`` (A's points against B's curve).

    Returns:
        dict with ``median`` (over A's points, ``inf`` entries included: median is ``inf`` if
        most points are unreachable for B), ``geomean_finite`` (geometric mean over finite
        entries), ``max_finite``, ``at_max_accuracy`` (the multiplier at A's most accurate
        point, lowest budget among ties) and ``frac_unreached`` (fraction of A's points B never
        reaches). NaN where undefined.
    """
    m = efficiency_multiplier(flops_a, acc_a, flops_b, acc_b)
    ya = np.asarray(acc_a, np.float64).ravel()
    fa = np.asarray(flops_a, np.float64).ravel()
    ok = ~np.isnan(m)
    fin = m[np.isfinite(m)]
    if np.any(ok):
        cand = np.flatnonzero(ok & (ya == np.nanmax(ya[ok])))
        best = cand[np.argmin(fa[cand])]
        at_max = float(m[best])
        median = float(np.median(m[ok]))
        frac = float(np.mean(np.isinf(m[ok])))
    else:
        at_max = median = frac = float("nan")
    return {
        "median": median,
        "geomean_finite": float(np.exp(np.mean(np.log(fin)))) if fin.size else float("nan"),
        "max_finite": float(fin.max()) if fin.size else float("nan"),
        "at_max_accuracy": at_max,
        "frac_unreached": frac,
    }


# --------------------------------------------------------------------------------------------
# 4. Difficulty bins and compute-optimal allocation (Snell et al. 2024)
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# 5. FLOPs-matched exchange of pretraining and inference compute (Snell et al. 2024, §7)
# --------------------------------------------------------------------------------------------


def pretraining_flops(n_params: float, d_pre: float) -> float:
    """Pretraining FLOPs ``6·N·D_pre`` (Kaplan et al. 2020; Snell et al. 2024, §7) for a model of
    ``n_params`` parameters trained on ``d_pre`` tokens."""
    return 6.0 * float(n_params) * float(d_pre)


def inference_flops(n_params: float, d_inf: float) -> float:
    """Inference FLOPs ``2·N·D_inf`` (Snell et al. 2024, §7) for ``d_inf`` generated tokens;
    attention over the context is neglected, as in the paper (the ledger in ``ttc.flops`` keeps
    it)."""
    return 2.0 * float(n_params) * float(d_inf)


def inference_multiplier(size_ratio: float, ratio: float) -> float:
    """``X = M + 3·(M - 1)/R``: how many times the larger model's inference tokens the small model
    may generate at equal total FLOPs (Snell et al. 2024, §7). ``M`` = ``size_ratio``,
    ``R = D_inf/D_pre`` = ``ratio``. Derivation in ``flops_matched_comparison``."""
    if size_ratio < 1 or ratio <= 0:
        raise ValueError("need size_ratio >= 1 and ratio > 0")
    return float(size_ratio + 3.0 * (size_ratio - 1.0) / ratio)


def flops_matched_comparison(
    small_flops: ArrayLike,
    small_acc: ArrayLike,
    large_acc: ArrayLike,
    *,
    n_params: float,
    size_ratio: float,
    tokens_per_problem: float,
    ratios: Sequence[float] = (0.16, 0.79, 22.0),
    d_pretrain: float | None = None,
    bins: ArrayLike | None = None,
    tie_tol: float = 0.0,
) -> list[dict]:
    """Small model + test-time compute vs an ``M``× larger model at equal total FLOPs.

    Snell et al. 2024, §7 ("Exchanging pretraining and test-time compute"). Both models are
    pretrained on the same ``D_pre`` tokens; the deployment serves ``Q`` queries, ``D_inf``
    inference tokens in total, ``R = D_inf / D_pre``. The large model (``M·N`` parameters)
    answers each query with one sample (greedy) of ``d_q = tokens_per_problem`` tokens, so
    ``D_inf = Q·d_q``:

        ``FLOPs_large = 6·(M N)·D_pre + 2·(M N)·D_inf``.

    The small model (``N`` parameters) may generate ``X·D_inf`` tokens at equal total FLOPs:

        ``6·N·D_pre + 2·N·X·D_inf = 6·M·N·D_pre + 2·M·N·D_inf``
        ``=>  X = M + 3·(M - 1)·D_pre/D_inf = M + 3·(M - 1)/R``,

    i.e. a per-problem inference budget of ``X · 2·N·d_q`` FLOPs (vs ``2·M·N·d_q`` for the large
    model). R = 0.16, 0.79, 22 are Snell et al.'s three regimes (few queries -> many queries).
    The small model's accuracy at that budget is read off its monotone-ized accuracy-vs-FLOPs
    curve by linear interpolation in log FLOPs.

    Conventions: ``small_flops`` are per-problem inference FLOPs of the small model including
    whatever the caller charges (e.g. verifier scoring); the large model is charged only its own
    ``2·M·N·d_q``. If the budget exceeds the largest measured one, the small accuracy is the
    curve's maximum, a lower bound (``extrapolated=True``); the winner is then ``"small"`` only
    if even that bound wins, else ``"undetermined"``. If the budget is below the smallest
    measured one, the small accuracy is NaN and the winner ``"undetermined"``.

    Args:
        small_flops: ``[B]`` per-problem inference FLOPs of the small model's TTC settings.
        small_acc: ``[B]`` accuracies, or ``[B, P]`` per-problem (needed for ``bins``).
        large_acc: large model's single-sample accuracy: scalar, or ``[P]`` (needed for ``bins``).
        n_params: ``N``, parameters of the small model.
        size_ratio: ``M >= 1``, the large model has ``M·N`` parameters.
        tokens_per_problem: ``d_q``, tokens the large model generates per problem.
        ratios: the values of ``R = D_inf/D_pre`` to evaluate.
        d_pretrain: optional ``D_pre``; if given, records also carry total FLOPs and ``Q``.
        bins: optional ``[P]`` difficulty bins; adds one record per (R, bin).
        tie_tol: accuracy difference at or below which the result is ``"tie"``.

    Returns:
        One dict per ``R`` (bin ``"all"``) and, with ``bins``, per (R, bin), with keys
        ``ratio, bin, inference_multiplier (X), large_inference_flops, small_budget_flops,
        small_accuracy, large_accuracy, winner ("small" | "large" | "tie" | "undetermined"),
        extrapolated`` and, with ``d_pretrain``, ``n_queries, total_flops``.
    """
    f = np.asarray(small_flops, np.float64).ravel()
    sa = np.asarray(small_acc, np.float64)
    la = np.asarray(large_acc, np.float64)
    if sa.shape[0] != f.size or sa.ndim not in (1, 2):
        raise ValueError("small_acc must be [B] or [B, P] with B = len(small_flops)")
    groups: list[tuple[object, np.ndarray, float]] = []
    small_all = sa if sa.ndim == 1 else sa.mean(axis=1)
    groups.append(("all", small_all, float(la.mean())))
    if bins is not None:
        bins = np.asarray(bins)
        if sa.ndim != 2 or la.shape != (sa.shape[1],) or bins.shape != (sa.shape[1],):
            raise ValueError("bins need small_acc [B, P], large_acc [P] and bins [P]")
        for k in np.unique(bins):
            sel = bins == k
            groups.append((int(k), sa[:, sel].mean(axis=1), float(la[sel].mean())))

    n, m, dq = float(n_params), float(size_ratio), float(tokens_per_problem)
    records = []
    for r in ratios:
        x = inference_multiplier(m, r)
        budget = x * inference_flops(n, dq)
        for name, curve, large in groups:
            cf, cy = monotone_curve(f, curve)
            extrapolated = bool(budget > cf[-1] * (1 + 1e-12))
            if budget < cf[0] * (1 - 1e-12):
                small = float("nan")
            elif extrapolated:
                small = float(cy[-1])
            else:
                small = float(np.interp(np.log(budget), np.log(cf), cy))
            if np.isnan(small):
                winner = "undetermined"
            elif abs(small - large) <= tie_tol:
                winner = "undetermined" if extrapolated else "tie"
            elif small > large:
                winner = "small"
            else:
                winner = "undetermined" if extrapolated else "large"
            rec = {
                "ratio": float(r), "bin": name, "inference_multiplier": x,
                "large_inference_flops": inference_flops(m * n, dq),
                "small_budget_flops": budget, "small_accuracy": small,
                "large_accuracy": large, "winner": winner, "extrapolated": extrapolated,
            }
            if d_pretrain is not None:
                d_inf = float(r) * float(d_pretrain)
                rec["n_queries"] = d_inf / dq
                rec["total_flops"] = (pretraining_flops(m * n, d_pretrain)
                                      + inference_flops(m * n, d_inf))
            records.append(rec)
    return records


# --------------------------------------------------------------------------------------------
# 6. Saturation budget
# --------------------------------------------------------------------------------------------


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
