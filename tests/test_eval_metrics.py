"""Evaluation maths: metrics against hand-worked confusion matrices, the patient bootstrap, DeLong,
temperature scaling. Pure numpy/scikit-learn, no model: a few seconds in all."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

from pneumo.evaluation import stats
from pneumo.evaluation.calibration import calibration_summary, fit_temperature
from pneumo.evaluation.metrics import (
    confusion,
    expected_calibration_error,
    metrics_with_ci,
    oracle_threshold,
    point_metrics,
)

# Hand-worked fixture, threshold logit 0:
#   positives (y=1) logits  2.0  1.5  0.5 -1.0   -> TP, TP, TP, FN
#   negatives (y=0) logits  1.0  0.2 -0.5 -1.5 -2.0 -3.0  -> FP, FP, TN, TN, TN, TN
# TP=3 FN=1 TN=4 FP=2, N=10.
Y = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
LOGIT = np.array([2.0, 1.5, 0.5, -1.0, 1.0, 0.2, -0.5, -1.5, -2.0, -3.0])
# Explicit probabilities for the calibration metrics (each in its own tenth-bin: 9,8,6,3,7,5,4,2,1,0).
PROB = np.array([0.9, 0.8, 0.6, 0.3, 0.7, 0.55, 0.4, 0.2, 0.1, 0.05])
HAND = {
    "sensitivity": 3 / 4,  # 0.75
    "specificity": 4 / 6,  # 0.6667
    "ppv": 3 / 5,  # 0.6
    "npv": 4 / 5,  # 0.8
    "accuracy": 7 / 10,  # 0.7
    "balanced_accuracy": (3 / 4 + 4 / 6) / 2,  # 0.7083
    "f1": 2 * 3 / (2 * 3 + 2 + 1),  # 0.6667
    "mcc": (3 * 4 - 2 * 1) / np.sqrt(5 * 4 * 6 * 5),  # 10/sqrt(600) = 0.4082
    # pairs positive > negative: 6 + 6 + 5 + 3 = 20 of 24
    "auroc": 20 / 24,
    # ranked: P P N P N N P ... ; precision at each positive 1, 1, 3/4, 4/7
    "auprc": (1 + 1 + 0.75 + 4 / 7) / 4,
    # positives (1-p)^2: .01 .04 .16 .49 ; negatives p^2: .49 .3025 .16 .04 .01 .0025 ; sum 1.705
    "brier": 1.705 / 10,
    # every image alone in its bin: mean |y - p| = (0.1+0.2+0.4+0.7 + 0.7+0.55+0.4+0.2+0.1+0.05)/10
    "ece": 3.4 / 10,
}


def test_point_metrics_match_hand_calculation():
    assert confusion(Y, LOGIT, 0.0) == {"tp": 3, "fn": 1, "tn": 4, "fp": 2}
    got = point_metrics(Y, LOGIT, PROB, 0.0)
    for k, v in HAND.items():
        assert got[k] == pytest.approx(v, abs=1e-12), k


def test_vectorised_metrics_match_hand_calculation_with_unit_weights():
    got = stats.weighted_metrics(np.ones((1, len(Y))), Y, LOGIT, PROB, 0.0)
    for k, v in HAND.items():
        assert got[k][0] == pytest.approx(v, abs=1e-12), k


def test_decision_is_logit_at_or_above_threshold():
    # threshold exactly at a score: that image is PNEUMONIA (>=), moving TP 0.5 -> still TP, 0.2 -> FP
    assert confusion(Y, LOGIT, 0.5) == {"tp": 3, "fn": 1, "tn": 5, "fp": 1}
    assert confusion(Y, LOGIT, 0.51) == {"tp": 2, "fn": 2, "tn": 5, "fp": 1}


def test_ece_pools_bins():
    # two images in bin 9 (0.9, 0.95) both positive: gap |2 - 1.85| ; one negative at 0.15 in bin 1: 0.15
    assert expected_calibration_error([1, 1, 0], [0.9, 0.95, 0.15]) == pytest.approx((0.15 + 0.15) / 3)
    assert expected_calibration_error([1], [1.0]) == 0.0  # p = 1 falls in the last (closed) bin


def test_undefined_metrics_are_nan_not_crashes():
    got = point_metrics(np.ones(4, int), np.array([1.0, 2, -1, 3]), np.full(4, 0.7), 0.0)
    assert np.isnan(got["auroc"]) and np.isnan(got["specificity"]) and got["sensitivity"] == 0.75
    # both classes, but every image called PNEUMONIA: MCC and NPV are undefined, not 0
    got = point_metrics(Y, np.full(len(Y), 5.0), PROB, 0.0)
    assert np.isnan(got["mcc"]) and np.isnan(got["npv"]) and got["sensitivity"] == 1.0 and got["specificity"] == 0.0


def test_weighted_formulas_equal_sklearn_sample_weight():
    rng = np.random.default_rng(3)
    n = 300
    y = (rng.random(n) < 0.6).astype(int)
    logit = np.round(rng.normal(y * 1.2, 1.0), 1)  # rounding creates ties
    prob = 1 / (1 + np.exp(-logit / 1.7))
    w = stats.patient_weights(stats.group_codes([f"p{i // 3}" for i in range(n)]), 6, rng)
    got = stats.weighted_metrics(w, y, logit, prob, 0.2)
    for b in range(len(w)):
        assert got["auroc"][b] == pytest.approx(roc_auc_score(y, logit, sample_weight=w[b]), abs=1e-12)
        assert got["auprc"][b] == pytest.approx(average_precision_score(y, logit, sample_weight=w[b]), abs=1e-12)
        assert got["brier"][b] == pytest.approx(brier_score_loss(y, prob, sample_weight=w[b]), abs=1e-12)
        rep = np.repeat(np.arange(n), w[b].astype(int))  # weights = copies of images
        assert got["ece"][b] == pytest.approx(expected_calibration_error(y[rep], prob[rep]), abs=1e-12)
        assert got["mcc"][b] == pytest.approx(point_metrics(y[rep], logit[rep], prob[rep], 0.2)["mcc"], abs=1e-12)


def test_patient_bootstrap_resamples_whole_patients():
    sizes = [1, 2, 5, 3, 1, 4]
    groups = [f"g{i}" for i, s in enumerate(sizes) for _ in range(s)]
    codes = stats.group_codes(groups)
    w = stats.patient_weights(codes, 500, np.random.default_rng(0))
    for g in range(len(sizes)):
        cols = w[:, codes == g]
        assert (cols == cols[:, :1]).all()  # a patient's images always share one weight
    per_patient = np.stack([w[:, codes == g][:, 0] for g in range(len(sizes))], axis=1)
    assert (per_patient.sum(1) == len(sizes)).all()  # G patients drawn per resample
    assert per_patient.max() >= 3  # real resampling with replacement


def test_clustered_images_widen_the_interval():
    # 40 patients x 10 identical images: the patient bootstrap must see 40 units, not 400.
    rng = np.random.default_rng(1)
    pat_y = np.r_[np.ones(20, int), np.zeros(20, int)]
    pat_logit = rng.normal(pat_y * 1.0, 1.0)
    y, logit = np.repeat(pat_y, 10), np.repeat(pat_logit, 10)
    prob = 1 / (1 + np.exp(-logit))
    by_patient = metrics_with_ci(y, logit, prob, 0.5, np.repeat(np.arange(40), 10), n_boot=1000)
    by_image = metrics_with_ci(y, logit, prob, 0.5, np.arange(400), n_boot=1000)
    w_pat = by_patient["sensitivity"]["hi"] - by_patient["sensitivity"]["lo"]
    w_img = by_image["sensitivity"]["hi"] - by_image["sensitivity"]["lo"]
    assert w_pat > 2.0 * w_img


def _binormal(n: int, d: float, seed: int):
    rng = np.random.default_rng(seed)
    y = np.r_[np.ones(n, int), np.zeros(n, int)]
    logit = np.r_[rng.normal(d, 1, n), rng.normal(0, 1, n)]
    return y, logit, 1 / (1 + np.exp(-logit))


def test_bootstrap_ci_covers_known_auroc_and_shrinks_with_n():
    d = 1.0
    true_auc = norm.cdf(d / np.sqrt(2))  # binormal, equal variances: 0.7602
    widths = []
    for n in (150, 3000):
        y, logit, prob = _binormal(n, d, seed=n)
        ci = metrics_with_ci(y, logit, prob, 0.5, np.arange(2 * n), n_boot=1000, seed=0)["auroc"]
        assert ci["lo"] <= true_auc <= ci["hi"], (n, ci)
        assert ci["n_valid"] == 1000
        widths.append(ci["hi"] - ci["lo"])
    assert widths[1] < 0.35 * widths[0]  # ~ sqrt(150/3000) = 0.22


def test_bootstrap_is_seeded():
    """Same seed, same CIs (its time budget, 3 s, is benchmarks/timing_checks.py --only bootstrap)."""
    y, logit, prob = _binormal(312, 1.2, seed=7)  # 624 images, like the official test split
    groups = [f"p{i // 2}" for i in range(624)]
    a = stats.bootstrap_cis(y, logit, prob, 0.5, groups, n_boot=1000, seed=5)
    b = stats.bootstrap_cis(y, logit, prob, 0.5, groups, n_boot=1000, seed=5)
    c = stats.bootstrap_cis(y, logit, prob, 0.5, groups, n_boot=1000, seed=6)
    assert a == b and a != c


def test_delong_matches_sklearn_and_paired_bootstrap():
    rng = np.random.default_rng(11)
    n = 400
    y = np.r_[np.ones(n, int), np.zeros(n, int)]
    shared = rng.normal(0, 1, 2 * n)  # correlated models, as two CNNs on the same images
    a = 1.0 * y + shared + 0.6 * rng.normal(0, 1, 2 * n)
    b = 0.7 * y + shared + 0.6 * rng.normal(0, 1, 2 * n)
    res = stats.delong_test(y, a, b)
    assert res["auroc_a"] == pytest.approx(roc_auc_score(y, a))
    assert res["auroc_b"] == pytest.approx(roc_auc_score(y, b))
    pa, pb = 1 / (1 + np.exp(-a)), 1 / (1 + np.exp(-b))
    reps = stats.paired_bootstrap(y, np.arange(2 * n), [(a, pa, 0.0), (b, pb, 0.0)], n_boot=2000, seed=0)
    diff = reps[0]["auroc"] - reps[1]["auroc"]
    assert res["se"] == pytest.approx(diff.std(ddof=1), rel=0.15)
    p_boot = stats.bootstrap_p_value(diff, res["diff"])
    assert res["p_value"] < 0.05 and p_boot < 0.05
    # no real difference: both tests agree that nothing is detected
    null = stats.delong_test(y, a, a + 1e-9 * rng.normal(size=2 * n))
    assert null["p_value"] > 0.5


def test_delong_variance_matches_single_auc_bootstrap():
    y, logit, prob = _binormal(300, 1.0, seed=2)
    _, cov = stats.delong_covariance(y, logit[None])
    boot = stats.bootstrap_distribution(y, logit, prob, 0.0, np.arange(600), n_boot=2000)["auroc"]
    assert np.sqrt(cov[0, 0]) == pytest.approx(boot.std(ddof=1), rel=0.15)


def test_temperature_scaling_recovers_known_temperature():
    rng = np.random.default_rng(0)
    z = rng.normal(0, 2.0, 20000)  # true, calibrated logits
    y = (rng.random(z.size) < 1 / (1 + np.exp(-z))).astype(int)
    for t_true in (0.5, 2.5):
        t = fit_temperature(z * t_true, y)  # over-/under-confident model: logits scaled by T
        assert t == pytest.approx(t_true, rel=0.05)
    s = calibration_summary(z * 2.5, y, 1.0, fit_temperature(z * 2.5, y))
    assert s["ece_after"] < s["ece_before"] and s["nll_after"] < s["nll_before"]


def test_oracle_is_labelled_and_optimistic():
    o = oracle_threshold(Y, LOGIT)
    assert "not a valid estimate" in o["label"]
    fixed = point_metrics(Y, LOGIT, PROB, 0.0)
    assert o["sensitivity"] + o["specificity"] >= fixed["sensitivity"] + fixed["specificity"]
