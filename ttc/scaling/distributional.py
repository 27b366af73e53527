"""Distributional estimator of the coverage power-law exponent.

Schaeffer et al. 2025, "How Do Large Language Monkeys Get Their Power (Laws)?": the aggregate
exponent of ``-log c(k)`` is the left-tail exponent of the per-problem pass@1 distribution, which
can be estimated from far fewer samples than the coverage curve itself.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike
from scipy import optimize, stats
from scipy.special import betaln, gammaln

from ttc.scaling.power_law import predict_coverage


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
        fail = np.exp(betaln(al, be + k) - betaln(al, be))
        mass = 1.0 - self.frac_zero - self.frac_one
        return self.frac_one + mass * (1.0 - fail)


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
        a = float(np.exp(gammaln(al + be) - gammaln(be))) * (1 - frac_zero - frac_one)
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
        a = float(np.exp(gammaln(al + be) - gammaln(be)))
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
        line = stats.linregress(np.log(pos[:m]), np.log(ecdf))
        b, intercept = float(line.slope), float(line.intercept)
        a = float(np.exp(gammaln(b + 1) + intercept))
        return DistributionalFit(b, a, method, {"log_intercept": intercept, "n_tail": float(m)},
                                 n_zero / total, 0.0, m)
    raise ValueError(f"unknown method {method!r}")


def _beta_moments(x: np.ndarray) -> tuple[float, float]:
    """Method-of-moments Beta(α, β) for values in ``[0, 1]``, floored at 1e-2 (a start point)."""
    m, v = float(x.mean()), float(x.var())
    common = m * (1 - m) / v - 1 if v > 0 else 1.0
    common = max(common, 1e-2)
    return max(m * common, 1e-2), max((1 - m) * common, 1e-2)


def _fit_beta(x: np.ndarray) -> tuple[float, float]:
    """Beta(α, β) maximum likelihood on values in (0, 1) with support fixed to ``[0, 1]``
    (``scipy.stats.beta.fit``, which solves the likelihood equations)."""
    al, be, _, _ = stats.beta.fit(x, floc=0.0, fscale=1.0)
    return float(al), float(be)


def _fit_beta_binomial(n: np.ndarray, c: np.ndarray) -> tuple[float, float]:
    """Beta-binomial maximum likelihood of success counts ``c`` out of ``n``.

    The log-likelihood (up to the binomial coefficient) is ``log B(c+α, n-c+β) - log B(α, β)``,
    evaluated once per distinct ``(n, c)`` pair and minimized over ``(log α, log β)`` with
    ``scipy.optimize.minimize(method="Nelder-Mead")`` from the moments of the smoothed ``c/n``.
    """
    pairs, counts = np.unique(np.stack([n, c], axis=1), axis=0, return_counts=True)
    nn, cc = pairs[:, 0].astype(np.float64), pairs[:, 1].astype(np.float64)
    w = counts / counts.sum()

    def nll(t: np.ndarray) -> float:
        al, be = np.exp(t)
        return -float((betaln(cc + al, nn - cc + be) - betaln(al, be)) @ w)

    pm = np.clip((c + 0.5) / (n + 1.0), 1e-6, 1 - 1e-6)
    t0 = np.log(_beta_moments(pm))
    simplex = t0 + np.vstack([np.zeros(2), 0.5 * np.eye(2)])
    options = {"initial_simplex": simplex, "xatol": 1e-9, "fatol": 1e-12, "maxiter": 5000}
    res = optimize.minimize(nll, t0, method="Nelder-Mead", options=options)
    al, be = np.exp(res.x)
    return float(al), float(be)
