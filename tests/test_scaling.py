"""Tests of ttc.scaling against hand-computed numbers, slow obvious references and synthetic ground
truth (fixed seeds, stated tolerances)."""

import math

import numpy as np
import pytest

from ttc.metrics import pass_at_k
from ttc.scaling import (
    compute_optimal,
    coverage_from_pass1,
    difficulty_bins,
    distributional_exponent,
    efficiency_multiplier,
    fit_power_law,
    flops_matched_comparison,
    flops_to_reach,
    inference_flops,
    inference_multiplier,
    monotone_curve,
    oracle_difficulty,
    predict_coverage,
    predicted_difficulty,
    predicted_saturation,
    pretraining_flops,
    saturation_budget,
)


def close(x, ref, tol=1e-4):
    """Composite tolerance: |x - ref| <= tol * (1 + |ref|)."""
    return abs(x - ref) <= tol * (1 + abs(ref))


# ----------------------------------------------------------------------------- power law fit


def test_fit_power_law_recovers_exact_parameters_and_drops_boundary_points():
    a, b = 2.3, 0.45
    ks = np.unique(np.round(np.logspace(0, 3, 25)))
    cov = predict_coverage(ks, a, b)
    # boundary points cannot be transformed: they must be dropped, not poison the fit
    ks_all = np.concatenate([ks, [1e12, 0.5]])
    cov_all = np.concatenate([cov, [1.0, 0.0]])
    ah, bh, r2 = fit_power_law(ks_all, cov_all)
    assert close(ah, a) and close(bh, b), (ah, bh)
    assert r2 > 1 - 1e-10
    ah2, bh2, r2c = fit_power_law(ks_all, cov_all, r2_space="coverage")
    # coverage-space r2 also scores the two boundary points; the c == 0 one at k = 0.5 is off
    # by exp(-2.3 * 0.5^-0.45) = 0.044, so r2 is just below 1
    assert (ah2, bh2) == (ah, bh) and 0.99 < r2c < 1 - 1e-4


def test_fit_power_law_matches_polyfit_and_r2_definitions():
    rng = np.random.default_rng(1)
    ks = np.array([1, 2, 4, 8, 16, 32, 64.0])
    cov = np.clip(predict_coverage(ks, 1.5, 0.3) + rng.normal(0, 0.01, ks.size), 0, 1)
    cov[-1] = 1.0  # a boundary point
    a, b, r2 = fit_power_law(ks, cov)
    x, y = np.log(ks[:-1]), np.log(-np.log(cov[:-1]))
    slope, intercept = np.polyfit(x, y, 1)
    assert close(b, -slope, 1e-10) and close(a, math.exp(intercept), 1e-10)
    yhat = intercept + slope * x
    assert close(r2, 1 - np.sum((y - yhat) ** 2) / np.sum((y - y.mean()) ** 2), 1e-10)
    # coverage-space r2 is over all points, the dropped boundary point included
    _, _, r2c = fit_power_law(ks, cov, r2_space="coverage")
    chat = np.exp(-a * ks ** (-b))
    assert close(r2c, 1 - np.sum((cov - chat) ** 2) / np.sum((cov - cov.mean()) ** 2), 1e-10)
    # clip mode keeps the boundary point, clipped, in an ordinary least-squares fit
    ac, bc, _ = fit_power_law(ks, cov, clip=1e-3)
    yc = np.log(-np.log(np.clip(cov, 1e-3, 1 - 1e-3)))
    slope_c, int_c = np.polyfit(np.log(ks), yc, 1)
    assert close(bc, -slope_c, 1e-10) and close(ac, math.exp(int_c), 1e-10)
    assert abs(bc - b) > 0.1  # the clipped point really changed the fit
    with pytest.raises(ValueError):
        fit_power_law([1, 2], [0.5, 1.0])  # one usable point
    with pytest.raises(ValueError):
        fit_power_law([0, 2], [0.5, 0.6])


def test_fit_power_law_noisy_coverage_within_delta_method_error():
    """Coverage measured on M problems: c_hat(k) ~ Binomial(M, c(k))/M. The delta method gives
    sd[log(-log c_hat)] = sqrt(c(1-c)/M) / |c log c|, which propagates linearly to the OLS
    slope and intercept. Every seed must land within 4 standard errors, and the spread over
    seeds must match the predicted standard error within 25%."""
    a, b, m = 3.0, 0.4, 20_000
    ks = 2.0 ** np.arange(10)
    c = predict_coverage(ks, a, b)
    x = np.log(ks)
    w = (x - x.mean()) / np.sum((x - x.mean()) ** 2)
    var_y = c * (1 - c) / m / (c * np.log(c)) ** 2
    se_b = math.sqrt(np.sum(w**2 * var_y))
    v = 1 / x.size - x.mean() * w  # intercept = sum(v * y)
    se_loga = math.sqrt(np.sum(v**2 * var_y))
    rng = np.random.default_rng(2)
    bs, las = [], []
    for _ in range(300):
        ah, bh, _ = fit_power_law(ks, rng.binomial(m, c) / m)
        bs.append(bh)
        las.append(math.log(ah))
    bs, las = np.array(bs), np.array(las)
    assert np.all(np.abs(bs - b) < 4 * se_b)
    assert np.all(np.abs(las - math.log(a)) < 4 * se_loga)
    assert 0.75 < bs.std() / se_b < 1.25
    assert abs(bs.mean() - b) < 4 * se_b / math.sqrt(bs.size) + 1e-3  # small delta-method bias


# ----------------------------------------------------------------- distributional estimator


def test_coverage_from_pass1_matches_direct_mean_and_pass_at_k_limit():
    rng = np.random.default_rng(3)
    p = np.concatenate([rng.uniform(size=50), [0.0, 1.0, 1.0]])
    ks = np.array([1, 3, 10, 100])
    ref = [np.mean([1 - (1 - pi) ** k for pi in p]) for k in ks]
    np.testing.assert_allclose(coverage_from_pass1(p, ks), ref, rtol=0, atol=1e-12)
    # for k == 1 it is pass@1, the same as the unbiased estimator from counts
    n, cnt = 20, rng.integers(0, 21, size=30)
    assert close(coverage_from_pass1(cnt / n, [1])[0], np.mean(pass_at_k(n, cnt, 1)), 1e-12)


@pytest.mark.parametrize("alpha,beta", [(0.3, 3.0), (0.5, 1.5)])
def test_distributional_exponent_recovers_beta_shape(alpha, beta):
    """p_i ~ Beta(alpha, beta), P = 20000: the density near 0 is ∝ p^(alpha-1), so b = alpha.
    Measured standard errors over 40 seeds at (0.3, 3): Beta MLE 0.0025, beta-binomial from
    n=100 samples 0.0028, tail regression 0.0105. Tolerances are ~5 standard errors."""
    rng = np.random.default_rng(4)
    p = rng.beta(alpha, beta, size=20_000)
    fit = distributional_exponent(p)
    assert fit.method == "beta" and abs(fit.b - alpha) < 0.0125, fit
    assert abs(fit.params["beta"] - beta) < 0.1 * beta
    tail = distributional_exponent(p, method="tail", tail_fraction=0.1)
    assert abs(tail.b - alpha) < 0.05, tail
    counts = rng.binomial(100, p)
    bb = distributional_exponent(counts / 100, n_samples=100)
    assert bb.method == "beta_binomial" and abs(bb.b - alpha) < 0.0125, bb
    # estimation noise in p = c/n is what the beta-binomial model is for: a continuous Beta fit
    # to the same discretized p (zeros set aside) is far off
    naive = distributional_exponent(counts / 100, method="beta")
    assert abs(naive.b - alpha) > 0.1 and naive.frac_zero > 0.1


def test_distributional_fit_implies_the_power_law_of_coverage():
    """(i) The fitted Beta's exact coverage 1 - B(α, β+k)/B(α, β) follows exp(-a k^-b) with the
    reported (a, b) at large k. (ii) The exponent fitted to the empirical aggregate coverage
    curve of the same problems (k = 1e2..1e4) agrees with the distributional one; pre-asymptotic
    bias there is ~0.02, tolerance 0.05."""
    rng = np.random.default_rng(5)
    p = rng.beta(0.3, 3.0, size=20_000)
    fit = distributional_exponent(p)
    big = np.logspace(12, 14, 9)  # -log(1 - fail) = fail (1 + fail/2 + ...): fail < 4e-4 here
    a, b, _ = fit_power_law(big, fit.predict_coverage(big))
    assert abs(b - fit.b) < 1e-4 and abs(a / fit.a - 1) < 1e-3, (a, b, fit)
    # exact Beta expectation vs brute-force mean over a large Beta sample at moderate k
    ks = np.array([1, 10, 100])
    q = rng.beta(fit.params["alpha"], fit.params["beta"], size=400_000)
    np.testing.assert_allclose(fit.predict_coverage(ks), coverage_from_pass1(q, ks), atol=4e-3)
    # exact Beta coverage at large k, on both sides of k = 1e4
    al, be = fit.params["alpha"], fit.params["beta"]
    for k in (9_990.0, 10_010.0, 50_000.0):
        fail = math.exp(math.lgamma(be + k) - math.lgamma(al + be + k)
                        + math.lgamma(al + be) - math.lgamma(be))
        assert abs(fit.predict_coverage([k])[0] - (1 - fail)) < 1e-11
    ks_emp = np.logspace(2, 4, 10)
    _, b_emp, _ = fit_power_law(ks_emp, coverage_from_pass1(p, ks_emp))
    assert abs(b_emp - fit.b) < 0.05


def test_distributional_exponent_rejects_bad_input():
    with pytest.raises(ValueError):
        distributional_exponent([0.1, 1.2, 0.3])
    with pytest.raises(ValueError):
        distributional_exponent([0.1, 0.2], method="beta_binomial")
    with pytest.raises(ValueError):
        distributional_exponent([0.15, 0.2], n_samples=10)  # 1.5 successes


# ------------------------------------------------------------------- efficiency multiplier


def test_efficiency_multiplier_of_4x_shifted_curve_is_4():
    flops = np.logspace(10, 14, 9)
    acc = 0.05 * np.log(flops / 1e9)  # linear in log flops: interpolation is exact
    m = efficiency_multiplier(flops, acc, 4 * flops, acc)
    np.testing.assert_allclose(m, 4.0, rtol=1e-4)
    # A's points off B's grid and inside its range
    fa = np.logspace(10.7, 13.9, 7)
    ya = 0.05 * np.log(fa / 1e9)
    m = efficiency_multiplier(fa, ya, 4 * flops, acc)
    np.testing.assert_allclose(m, 4.0, rtol=1e-4)
    # the other way round, and at target accuracies
    np.testing.assert_allclose(efficiency_multiplier(4 * flops, acc, flops, acc), 0.25, rtol=1e-4)
    t = np.array([0.2, 0.3, 0.4])
    np.testing.assert_allclose(efficiency_multiplier(flops, acc, 4 * flops, acc, target_acc=t),
                               4.0, rtol=1e-4)


def test_efficiency_multiplier_conventions_and_reference():
    fb = np.array([1.0, 2.0, 4.0, 8.0, 16.0])
    yb = np.array([0.1, 0.3, 0.25, 0.5, 0.6])  # non-monotone: 0.25 is dominated
    f, y = monotone_curve(fb, yb)
    np.testing.assert_allclose(y, [0.1, 0.3, 0.3, 0.5, 0.6])
    # hand values: 0.4 lies halfway between (4, 0.3) and (8, 0.5) in accuracy -> sqrt(32)
    assert close(flops_to_reach(fb, yb, 0.4), math.sqrt(32), 1e-12)
    assert close(flops_to_reach(fb, yb, 0.3), 2.0, 1e-12)  # first budget reaching it
    assert flops_to_reach(fb, yb, 0.05) == 1.0  # already reached at the smallest budget
    assert flops_to_reach(fb, yb, 0.7) == np.inf
    # slow reference: first point of a dense log grid where the interpolated curve >= target
    grid = np.logspace(0, math.log10(16), 200_001)
    dense = np.interp(np.log(grid), np.log(f), y)
    for t in np.linspace(0.11, 0.6, 23):
        ref = grid[np.argmax(dense >= t - 1e-12)]
        assert abs(flops_to_reach(fb, yb, t) / ref - 1) < 1e-4, t
    m = efficiency_multiplier([1.0, 2.0, 3.0], [0.2, 0.65, np.nan], fb, yb)
    assert m[1] == np.inf and np.isnan(m[2])


# ----------------------------------------------------------------- compute-optimal allocation


def test_difficulty_bins_quantiles_and_ties():
    s = np.arange(100.0)[::-1] / 100  # problem 0 easiest
    bins = difficulty_bins(s, 5)
    np.testing.assert_array_equal(bins, np.repeat(np.arange(5), 20))
    # ties: 60 unsolved problems and 40 distinct solved ones -> sizes still 20 each, the
    # highest-scoring problems in bin 0, all bin-4 problems unsolved
    s = np.concatenate([np.zeros(60), np.linspace(0.1, 1, 40)])
    bins = difficulty_bins(s, 5, seed=0)
    assert np.all(np.bincount(bins) == 20)
    assert np.all(s[bins == 0] >= s[bins == 1].max()) and np.all(s[bins == 4] == 0)
    # oracle difficulty is pass@1 from samples
    corr = np.array([[1, 1, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0]])
    np.testing.assert_allclose(oracle_difficulty(corr), [0.5, 1.0, 0.0])
    np.testing.assert_array_equal(difficulty_bins(oracle_difficulty(corr), 3), [1, 0, 2])
    # predicted difficulty is the mean final verifier score, missing samples (NaN) ignored
    scores = np.array([[0.2, 0.4, np.nan], [0.9, 0.7, 0.8]])
    np.testing.assert_allclose(predicted_difficulty(scores), [0.3, 0.8])


def _synthetic_methods(seed=6, p=5000):
    """Y wins on the easy bins 0-2, X on the hard bins 3-4, by 0.2 in expected accuracy."""
    rng = np.random.default_rng(seed)
    bins = np.repeat(np.arange(5), p // 5)
    base = np.array([0.85, 0.7, 0.55, 0.4, 0.25])[bins]
    budget_gain = np.array([0.0, 0.03, 0.06, 0.09])[:, None]
    y_edge = np.where(bins <= 2, 0.1, -0.1)
    prob_x = np.clip(base - y_edge + budget_gain, 0, 1)
    prob_y = np.clip(base + y_edge + budget_gain, 0, 1)
    acc = {"X": (rng.uniform(size=prob_x.shape) < prob_x).astype(float),
           "Y": (rng.uniform(size=prob_y.shape) < prob_y).astype(float)}
    flops = {"X": np.array([1.0, 2.0, 4.0, 8.0]), "Y": np.array([1.0, 2.0, 4.0, 8.0])}
    return acc, flops, bins


def test_compute_optimal_picks_per_bin_winner_and_beats_single_methods():
    acc, flops, bins = _synthetic_methods()
    res = compute_optimal(acc, flops, bins, n_folds=2, seed=0)
    assert res.chosen.shape == (2, 5, 4)
    assert np.all(res.chosen[:, :3] == "Y") and np.all(res.chosen[:, 3:] == "X")
    assert np.all(res.chosen_full[:3] == "Y") and np.all(res.chosen_full[3:] == "X")
    best_single = np.maximum(acc["X"].mean(axis=1), acc["Y"].mean(axis=1))
    # true gain of the per-bin choice over the best single method is 0.08; the sampling noise
    # of the difference is ~0.01, so demand at least half of it
    assert np.all(res.accuracy > best_single + 0.04), (res.accuracy, best_single)
    # folds are stratified: each bin split evenly
    for k in range(5):
        assert np.bincount(res.fold[bins == k], minlength=2).tolist() == [500, 500]


def test_compute_optimal_matches_slow_reference():
    acc, flops, bins = _synthetic_methods(seed=7, p=500)
    acc["Z"] = np.random.default_rng(8).uniform(size=acc["X"].shape)  # a noisy third method
    flops["Z"] = np.array([1.5, 3.0, 6.0, 12.0])
    res = compute_optimal(acc, flops, bins, n_folds=2, seed=3, baseline="X")
    ref = np.zeros((4, 500))
    ref_flops = np.zeros((4, 500))
    for i in range(500):  # problem by problem
        train = [j for j in range(500) if res.fold[j] != res.fold[i] and bins[j] == bins[i]]
        for b in range(4):
            scores = {m: np.mean([acc[m][b, j] for j in train]) for m in acc}
            best = max(scores.values())
            pick = min((m for m in acc if scores[m] >= best - 1e-12),
                       key=lambda m: (flops[m][b], list(acc).index(m)))
            ref[b, i] = acc[pick][b, i]
            ref_flops[b, i] = flops[pick][b]
    np.testing.assert_allclose(res.per_problem_accuracy, ref)
    np.testing.assert_allclose(res.accuracy, ref.mean(axis=1))
    np.testing.assert_allclose(res.flops, ref_flops.mean(axis=1))
    np.testing.assert_allclose(
        res.multiplier,
        efficiency_multiplier(res.flops, res.accuracy, flops["X"], acc["X"].mean(axis=1)))
    # in-sample (n_folds=1) is the per-bin maximum of the bin means
    ins = compute_optimal(acc, flops, bins, n_folds=1)
    ref_ins = np.array([sum((bins == k).mean() * max(acc[m][b, bins == k].mean() for m in acc)
                            for k in range(5)) for b in range(4)])
    np.testing.assert_allclose(ins.accuracy, ref_ins)


def test_compute_optimal_ties_go_to_cheaper_method_and_equal_methods_cost_little():
    p = 5000
    rng = np.random.default_rng(9)
    bins = difficulty_bins(rng.uniform(size=p), 5)
    same = (rng.uniform(size=(3, p)) < 0.5).astype(float)
    res = compute_optimal({"dear": same, "cheap": same}, {"dear": np.full(3, 2.0),
                          "cheap": np.full(3, 1.0)}, bins)
    assert np.all(res.chosen == "cheap") and np.all(res.flops == 1.0)
    # three methods with the same true accuracy (0.5) but independent noise: selecting on one
    # fold cannot help, it costs at most the selection noise. The best single method's in-sample
    # mean is biased up by ~0.006 and each mean has sd 0.007; tolerance 0.03 (~4 sd).
    acc = {m: (rng.uniform(size=(3, p)) < 0.5).astype(float) for m in "ABC"}
    res = compute_optimal(acc, {m: np.ones(3) for m in "ABC"}, bins, seed=1)
    best_single = np.max([acc[m].mean(axis=1) for m in "ABC"], axis=0)
    assert np.all(res.accuracy >= best_single - 0.03)


def test_compute_optimal_multiplier_over_best_of_n():
    """Best-of-N needs exactly 4x the FLOPs of method S for the same accuracy on every bin; S is
    chosen everywhere and the multiplier is 4."""
    p, flops = 1000, np.array([1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0])
    bins = np.repeat(np.arange(5), p // 5)
    curve = 0.1 * np.log2(flops)  # accuracy = 0.1 log2(F)
    per = np.broadcast_to(curve[:, None], (7, p))
    bon = np.broadcast_to(np.clip(0.1 * np.log2(flops / 4), 0, None)[:, None], (7, p))
    res = compute_optimal({"bon": bon, "S": per}, {"bon": flops, "S": flops}, bins,
                          baseline="bon")
    assert np.all(res.chosen[:, :, 1:] == "S")
    np.testing.assert_allclose(res.multiplier[1:5], 4.0, rtol=1e-4)
    # at F = 1 both are at 0: best-of-N already reaches it at its smallest budget (convention)
    assert res.multiplier[0] == 1.0
    assert np.all(np.isinf(res.multiplier[5:]))  # bon never reaches 0.5, 0.6 within 64 FLOPs


# ------------------------------------------------------------------- FLOPs-matched exchange


def test_flops_matched_arithmetic_by_hand():
    assert pretraining_flops(1e9, 1e12) == 6e21
    assert inference_flops(1e9, 500) == 1e12
    assert close(inference_multiplier(14, 0.16), 14 + 3 * 13 / 0.16, 1e-12)  # 257.75
    assert close(inference_multiplier(14, 0.79), 63.367088607594935, 1e-12)
    assert close(inference_multiplier(14, 22), 15.772727272727273, 1e-12)
    assert inference_multiplier(1, 0.5) == 1.0  # same model: no exchange
    # small model: accuracy linear in log2 of per-problem inference FLOPs
    small_flops = 1e12 * 2.0 ** np.arange(10)  # 1 .. 512 samples of 500 tokens at N = 1e9
    small_acc = 0.2 + 0.05 * np.arange(10)
    recs = flops_matched_comparison(small_flops, small_acc, 0.55, n_params=1e9, size_ratio=14,
                                    tokens_per_problem=500, d_pretrain=1e12)
    r016, r079, r22 = recs
    assert r016["ratio"] == 0.16 and r016["bin"] == "all"
    assert close(r016["small_budget_flops"], 2.5775e14, 1e-12)  # 257.75 * 2 * 1e9 * 500
    assert close(r016["large_inference_flops"], 1.4e13, 1e-12)
    # 8.4e22 (6 * 14e9 * 1e12) + 4.48e21 (2 * 14e9 * 0.16e12), and the small model spends the same
    assert close(r016["total_flops"], 8.848e22, 1e-12)
    assert close(r016["n_queries"], 3.2e8, 1e-12)
    small_total = pretraining_flops(1e9, 1e12) + r016["small_budget_flops"] * r016["n_queries"]
    assert close(small_total, r016["total_flops"], 1e-12)
    assert close(r016["small_accuracy"], 0.2 + 0.05 * math.log2(257.75), 1e-12)  # 0.6007
    assert r016["winner"] == "small" and not r016["extrapolated"]
    assert close(r079["small_accuracy"], 0.2 + 0.05 * math.log2(63.367088607594935), 1e-12)
    assert r079["winner"] == "large"  # 0.4993 < 0.55
    assert close(r22["small_accuracy"], 0.2 + 0.05 * math.log2(15.772727272727273), 1e-12)
    assert r22["winner"] == "large"  # 0.399 < 0.55


def test_flops_matched_per_bin_and_bounds():
    small_flops = np.array([1.0, 10.0, 100.0])
    # two bins: small+TTC strong on bin 0 (easy), weak on bin 1 (hard)
    sa = np.zeros((3, 4))
    sa[:, :2] = np.array([0.5, 0.8, 0.9])[:, None]
    sa[:, 2:] = np.array([0.0, 0.1, 0.2])[:, None]
    la = np.array([0.7, 0.7, 0.3, 0.3])
    bins = np.array([0, 0, 1, 1])
    # N = 1, M = 2, d_q = 1 -> budget X * 2 with X = 2 + 3/R; R = 1 -> 10 FLOPs: a grid point
    recs = flops_matched_comparison(small_flops, sa, la, n_params=1, size_ratio=2,
                                    tokens_per_problem=1, ratios=[1.0], bins=bins)
    by_bin = {r["bin"]: r for r in recs}
    assert by_bin[0]["winner"] == "small" and close(by_bin[0]["small_accuracy"], 0.8, 1e-12)
    assert by_bin[1]["winner"] == "large" and close(by_bin[1]["small_accuracy"], 0.1, 1e-12)
    assert close(by_bin["all"]["small_accuracy"], 0.45, 1e-12)
    assert by_bin["all"]["winner"] == "large" and by_bin["all"]["large_accuracy"] == 0.5
    # R = 0.01 -> X = 302, budget 604 > 100: extrapolated, small's max is only a lower bound
    (rec,) = flops_matched_comparison(small_flops, sa.mean(axis=1), 0.95, n_params=1,
                                      size_ratio=2, tokens_per_problem=1, ratios=[0.01])
    assert rec["extrapolated"] and rec["winner"] == "undetermined"
    (rec,) = flops_matched_comparison(small_flops, sa.mean(axis=1), 0.3, n_params=1,
                                      size_ratio=2, tokens_per_problem=1, ratios=[0.01])
    assert rec["extrapolated"] and rec["winner"] == "small"
    # budget below the cheapest setting: cannot say
    (rec,) = flops_matched_comparison(small_flops * 100, sa.mean(axis=1), 0.3, n_params=1,
                                      size_ratio=2, tokens_per_problem=1, ratios=[1.0])
    assert np.isnan(rec["small_accuracy"]) and rec["winner"] == "undetermined"


# ------------------------------------------------------------------------ saturation budget


def test_saturation_budget_on_synthetic_curve():
    # acc(N) = 1 - 0.5 N^-1/2: the doubling gain 0.5 (1 - 2^-1/2) N^-1/2 is 0.0129 at N = 128
    # and 0.0092 at N = 256, so with eps = 0.01 the knee is 256
    budgets = 2.0 ** np.arange(13)
    acc = 1 - 0.5 * budgets**-0.5
    assert saturation_budget(acc, budgets, 0.01) == 256
    # a flat step followed by more growth is not saturation: gains per doubling from N = 1..16
    # are 0.1, 0, 0.2, 0.01, 0.005 -> the knee is 8, not 2
    bumpy = np.array([0.1, 0.2, 0.2, 0.4, 0.41, 0.415])
    assert saturation_budget(bumpy, 2.0 ** np.arange(6), 0.05) == 8
    # still growing at the end of the range: NaN
    assert np.isnan(saturation_budget(np.log2(budgets), budgets, 0.01))
    # off a doubling grid: acc(2N) interpolated in log N (acc linear in log N here)
    b3 = 3.0 ** np.arange(6)
    acc3 = np.minimum(np.log(b3), np.log(27))
    sat = saturation_budget(acc3, b3, 0.5)  # gain is log 2 = 0.69 until the plateau at 27
    assert sat == 27


def test_predicted_saturation_matches_brute_force():
    # single problem, p = 0.1: gain(N) = 0.9^N - 0.9^2N; < 0.01 first for N = 44 (0.9^43 =
    # 0.01090 gives gain 0.01078; 0.9^44 = 0.00981 gives 0.00971)
    assert predicted_saturation([0.1], 0.01, max_n=1000) == 44
    rng = np.random.default_rng(10)
    p = rng.beta(0.5, 2.0, size=200)
    eps = 0.01
    sat = predicted_saturation(p, eps, max_n=3000)

    def cov(n):
        return np.mean(1 - (1 - p) ** n)

    gains = [cov(2 * n) - cov(n) for n in range(1, 3001)]
    last_bad = max(i for i, g in enumerate(gains, start=1) if g >= eps)
    assert sat == last_bad + 1
    # on a measured doubling grid, predicted and measured knees agree when the curve is coverage
    grid = 2.0 ** np.arange(14)
    measured = saturation_budget(coverage_from_pass1(p, grid), grid, eps)
    assert measured == predicted_saturation(p, eps, budgets=grid[:-1])
    assert np.isnan(predicted_saturation(p, 1e-6, max_n=50))
