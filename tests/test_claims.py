"""Claim checks on synthetic records: each verdict flips when the data say the opposite."""

import numpy as np
import pytest

from ttc import claims as C

P = 100
BUDGETS = [1, 2, 4, 8, 16, 32]


def rec(label, name, budget, per, flops, tokens=20.0):
    per = np.asarray(per, np.float64)
    return {"method": label, "name": name, "budget": budget, "seed": 0,
            "accuracy": float(per.mean()), "flops_useful": float(flops), "tokens": tokens,
            "per_problem": per.tolist()}


def curve_records(label, name, acc_fn, flops_per_budget=1e6, budgets=BUDGETS, p=P, seed=0):
    """Records whose per-problem correctness has mean acc_fn(budget, problem_index)."""
    out = []
    for b in budgets:
        per = np.array([acc_fn(b, i) for i in range(p)], np.float64)
        out.append(rec(label, name, b, per, flops_per_budget * b))
    return out


def test_curves_group_and_average_seeds():
    r = [rec("m", "majority", 2, [1, 0], 10.0), {**rec("m", "majority", 2, [0, 0], 30.0),
                                                  "seed": 1}, rec("m", "majority", 1, [1, 1], 5.)]
    cs = C.curves(r)
    c = cs["m"]
    np.testing.assert_array_equal(c.budgets, [1, 2])
    np.testing.assert_allclose(c.acc, [1.0, 0.25])
    np.testing.assert_allclose(c.flops, [5.0, 20.0])
    np.testing.assert_allclose(c.per_problem[1], [0.5, 0.0])


def test_missing_method_is_a_clear_error(tmp_path):
    cs = C.curves(curve_records("a", "majority", lambda b, i: 0.5))
    with pytest.raises(C.ClaimError, match="lack method"):
        C.check_verifier_free(cs, majority="a", others=["zzz"], figure=str(tmp_path / "f.png"))


def _easy_hard(b, i):
    return 1.0 if i < 50 else 0.0


def test_compute_optimal_detects_a_better_method(tmp_path):
    # 'good' solves every problem at budget 4+ for the same FLOPs; the baseline grows slowly
    base = curve_records("bon", "bon", lambda b, i: min(1.0, 0.1 * np.log2(2 * b)) if i % 2
                         else 1.0)
    good = curve_records("beam", "beam", lambda b, i: 1.0 if b >= 4 or i % 2 == 0 else 0.0)
    single = curve_records("single", "single", lambda b, i: 0.9 if i % 2 == 0 else 0.1,
                           budgets=[1])
    cs = C.curves(base + good + single)
    bins = C.oracle_bins(cs, 2)
    r = C.check_compute_optimal(cs, baseline="bon", candidates=["beam"], bins=bins,
                                figure=str(tmp_path / "co.png"))
    assert r.held is True
    assert (tmp_path / "co.png").stat().st_size > 1000
    assert "compute-optimal" in r.table
    assert "FLOPs multiplier" in r.summary and "n/ax" not in r.summary
    # and with a useless candidate the claim does not hold
    bad = curve_records("beam", "beam", lambda b, i: 0.0)
    cs = C.curves(base + bad + single)
    r = C.check_compute_optimal(cs, baseline="bon", candidates=["beam"], bins=bins,
                                figure=str(tmp_path / "co2.png"))
    assert r.held is False


def test_method_by_difficulty_verdict(tmp_path):
    single = curve_records("single", "single", lambda b, i: 0.9 if i < 50 else 0.1, budgets=[1])
    # search wins the hard half at small budgets; bon ties the easy half (and is cheaper)
    bon = curve_records("bon", "bon", lambda b, i: 1.0 if i < 50 else 0.1, 1e6)
    beam = curve_records("beam", "beam", lambda b, i: 1.0 if i < 50 else 0.5, 2e6)
    cs = C.curves(single + bon + beam)
    bins = C.oracle_bins(cs, 2)
    r = C.check_method_by_difficulty(cs, baseline="bon", candidates=["beam"], bins=bins,
                                     figure=str(tmp_path / "d.png"))
    assert r.held is True
    # if beam also wins the easy bin at the largest budget, the claim fails
    beam2 = curve_records("beam", "beam", lambda b, i: 1.0, 2e6)
    bon2 = curve_records("bon", "bon", lambda b, i: 0.9 if i < 50 else 0.1, 1e6)
    cs = C.curves(single + bon2 + beam2)
    r = C.check_method_by_difficulty(cs, baseline="bon", candidates=["beam"], bins=bins,
                                     figure=str(tmp_path / "d2.png"))
    assert r.held is False


def test_particle_filtering_multiplier(tmp_path):
    # PF reaches at budget b what beam reaches at 8b: an 8x multiplier
    pf = curve_records("pf", "particle", lambda b, i: float(i < 10 * np.log2(2 * b)))
    beam = curve_records("beam", "beam", lambda b, i: float(i < 10 * np.log2(2 * b / 8)),
                         budgets=[1, 2, 4, 8, 16, 32, 64, 128, 256])
    cs = C.curves(pf + beam)
    r = C.check_particle_filtering(cs, pairs=[("pf", ["beam"])], figure=str(tmp_path / "p.png"))
    assert r.held is True
    assert "8.0x" in r.summary
    cs = C.curves(pf + curve_records("beam", "beam", lambda b, i: float(i < 10 * np.log2(2 * b))))
    r = C.check_particle_filtering(cs, pairs=[("pf", ["beam"])], figure=str(tmp_path / "q.png"))
    assert r.held is False


def test_coverage_power_law_and_plateau(tmp_path):
    rng = np.random.default_rng(0)
    p1 = rng.beta(0.5, 2.0, size=400)
    ks = [1, 2, 4, 8, 16, 32, 64, 128, 256]
    cov = curve_records("coverage", "coverage", lambda k, i: 1 - (1 - p1[i]) ** k, budgets=ks,
                        p=400)
    flat = curve_records("majority", "majority", lambda k, i: min(p1[i] * 2, 0.4), budgets=ks,
                         p=400)
    cs = C.curves(cov + flat)
    r = C.check_coverage(cs, coverage="coverage", selectors=["majority"], n_samples=256,
                         figure=str(tmp_path / "c.png"))
    assert r.held is True, r.summary
    # a selector that keeps up with coverage: no plateau, claim fails
    cs = C.curves(cov + [{**x, "method": "majority"} for x in cov])
    r = C.check_coverage(cs, coverage="coverage", selectors=["majority"], n_samples=256,
                         figure=str(tmp_path / "c2.png"))
    assert r.held is False


def test_verifier_free_and_quality(tmp_path):
    maj = curve_records("maj", "majority", lambda b, i: float(i < 50 + 2 * np.log2(b)))
    bon = curve_records("bon", "bon_loglik", lambda b, i: float(i < 50 + 4 * np.log2(b)))
    cs = C.curves(maj + bon)
    assert C.check_verifier_free(cs, majority="maj", others=["bon"],
                                 figure=str(tmp_path / "v.png")).held is False
    assert C.check_verifier_free(cs, majority="bon", others=["maj"],
                                 figure=str(tmp_path / "v.png")).held is True
    cov = curve_records("cov", "coverage", lambda b, i: float(i < 50 + 8 * np.log2(b)))
    exact = [{**x, "method": "o0"} for x in cov]
    noisy = curve_records("o2", "bon", lambda b, i: float(i < 50 + 3 * min(np.log2(b), 2)))
    cs = C.curves(cov + exact + noisy)
    r = C.check_verifier_quality(cs, ladder=[(0.0, "o0"), (0.2, "o2")], coverage="cov",
                                 figure=str(tmp_path / "q.png"))
    assert r.held is True
    # a noisy verifier that beats the exact one contradicts the ceiling
    r = C.check_verifier_quality(cs, ladder=[(0.0, "o2"), (0.2, "o0")], coverage="cov",
                                 figure=str(tmp_path / "q2.png"))
    assert r.held is False


def test_model_size_verdict(tmp_path):
    single = curve_records("single", "single", lambda b, i: 0.9 if i < 50 else 0.1, budgets=[1])
    small = curve_records("bon", "bon", lambda b, i: (1.0 if i < 50 else 0.1), 1e6)
    cs = C.curves(single + small)
    bins = C.oracle_bins(cs, 2)
    large = C.curves(curve_records("single", "single", lambda b, i: 0.6 if i < 50 else 0.9,
                                   budgets=[1]))["single"]
    r = C.check_model_size(cs, large, baseline="bon", candidates=[], bins=bins, n_params=2.5e4,
                           size_ratio=14.0, d_pretrain=1e7, figure=str(tmp_path / "m.png"))
    assert r.held is True, r.summary
    assert "R = D_inf/D_pre" in r.table


def test_unreached_counts_only_when_significant(tmp_path):
    flat = C.curves(curve_records("bon", "bon", lambda b, i: float(i < 50)))["bon"]
    per = np.array([[float(i < k) for i in range(P)] for k in (50, 53, 80)])
    m = C._unreached_counts(np.array([1.0, np.inf, np.inf]), per, flat)
    assert m[0] == 1.0 and np.isnan(m[1]) and np.isinf(m[2])  # +3/100: noise; +30/100: real
    # particle filtering against a flat search curve: a +3/100 edge is not "unreached"
    pf = curve_records("pf", "particle", lambda b, i: float(i < (53 if b >= 8 else 50)))
    cs = C.curves(pf + curve_records("bon", "bon", lambda b, i: float(i < 50)))
    r = C.check_particle_filtering(cs, pairs=[("pf", ["bon"])], figure=str(tmp_path / "c.png"))
    assert r.held is False
    pf = curve_records("pf", "particle", lambda b, i: float(i < (80 if b >= 8 else 50)))
    cs = C.curves(pf + curve_records("bon", "bon", lambda b, i: float(i < 50)))
    r = C.check_particle_filtering(cs, pairs=[("pf", ["bon"])], figure=str(tmp_path / "d.png"))
    assert r.held is True
