"""Exponentiated power law of coverage and the coverage implied by per-problem pass@1.

Brown et al. 2024, "Large Language Monkeys: Scaling Inference Compute with Repeated Sampling":
coverage ``c(k)`` (fraction of problems solved by at least one of ``k`` samples) follows
``c(k) ≈ exp(-a·k^(-b))``.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats


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
    squares (``scipy.stats.linregress``; every point weighs the same in the transformed space).

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
    line = stats.linregress(x, y)
    slope, intercept = float(line.slope), float(line.intercept)
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


def _r2(y: np.ndarray, yhat: np.ndarray) -> float:
    """Coefficient of determination ``1 - SS_res/SS_tot``; NaN when ``SS_tot == 0``."""
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    if ss_tot == 0:
        return float("nan")
    return 1.0 - float(np.sum((y - yhat) ** 2)) / ss_tot


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
