"""FLOPs-matched exchange of pretraining and inference compute.

Snell et al. 2024, "Scaling LLM Test-Time Compute Optimally can be More Effective than Scaling
Model Parameters" (§7): a small model plus test-time compute against a larger model at equal
total FLOPs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike

from ttc.scaling.efficiency import monotone_curve


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
