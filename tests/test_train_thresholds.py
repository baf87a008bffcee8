"""Threshold rules on hand-made validation logits (the answers are worked out by hand)."""

from __future__ import annotations

import numpy as np
import pytest

from pneumo.decision import (
    all_thresholds,
    binary_metrics_at,
    choose,
    sensitivity_threshold,
    youden_threshold,
)
from pneumo.errors import ConfigError

# negatives: -3, -2, -1, 0.5 ; positives: 0.2, 1, 2, 3
y_val = np.array([0, 0, 0, 0, 1, 1, 1, 1])
logits_val = np.array([-3.0, -2.0, -1.0, 0.5, 0.2, 1.0, 2.0, 3.0])


def test_youden_picks_max_j_and_reports_what_it_reaches():
    op = youden_threshold(y_val, logits_val)
    # logit >= 1.0: sens 3/4, spec 4/4 (J = .75); logit >= 0.2: sens 1, spec 3/4 (J = .75): tie → higher threshold
    assert op["rule"] == "youden"
    assert op["logit"] == pytest.approx(1.0)
    assert op["val_sensitivity"] == pytest.approx(0.75)
    assert op["val_specificity"] == pytest.approx(1.0)


def test_sensitivity_rule_meets_target_with_best_specificity():
    op = sensitivity_threshold(y_val, logits_val, target=1.0)
    assert op["logit"] == pytest.approx(0.2)
    assert (op["val_sensitivity"], op["val_specificity"]) == (pytest.approx(1.0), pytest.approx(0.75))
    op = sensitivity_threshold(y_val, logits_val, target=0.7)
    assert op["logit"] == pytest.approx(1.0) and op["target"] == 0.7


def test_thresholds_are_logits_that_reproduce_their_figures():
    table = all_thresholds(y_val, logits_val, 0.97)
    assert set(table) == {"youden", "sensitivity", "default"}
    for op in table.values():
        m = binary_metrics_at(y_val, logits_val >= op["logit"])
        assert m["sensitivity"] == pytest.approx(op["val_sensitivity"])
        assert m["specificity"] == pytest.approx(op["val_specificity"])


def test_constant_scores_give_a_finite_threshold_that_float32_logits_respect():
    logits = np.full(6, 0.3, dtype=np.float32)
    op = youden_threshold([0, 0, 0, 1, 1, 1], logits)
    assert np.isfinite(op["logit"])
    decided = logits >= op["logit"]  # float32 comparison, as at inference
    m = binary_metrics_at([0, 0, 0, 1, 1, 1], decided)
    assert (m["sensitivity"], m["specificity"]) == (pytest.approx(op["val_sensitivity"]),
                                                    pytest.approx(op["val_specificity"]))


def test_choose_and_errors():
    op, table = choose(y_val, logits_val, "sensitivity", 0.97)
    assert op == table["sensitivity"] and op is not table["sensitivity"]
    with pytest.raises(ConfigError, match="both classes"):
        youden_threshold([1, 1, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ConfigError, match="threshold.rule"):
        choose(y_val, logits_val, "f1")
    with pytest.raises(ConfigError):
        sensitivity_threshold(y_val, logits_val, target=1.5)


def test_binary_metrics_counts():
    m = binary_metrics_at([1, 1, 0, 0, 0], [True, False, True, False, False])
    assert (m["tp"], m["fn"], m["fp"], m["tn"]) == (1, 1, 1, 2)
    assert m["accuracy"] == pytest.approx(3 / 5) and m["ppv"] == pytest.approx(0.5)


def test_the_decision_is_logit_at_or_above_the_threshold_in_the_logits_own_precision():
    from pneumo.decision import decide, decision_name

    assert decide(logits_val, 0.5).tolist() == [False, False, False, True, False, True, True, True]
    assert decision_name(0.5, 0.5) == "PNEUMONIA" and decision_name(0.4999, 0.5) == "NORMAL"
    # a chosen threshold is float32-representable, so float32 logits decide as their float64 copies do
    thr = youden_threshold(y_val, logits_val.astype(np.float32))["logit"]
    f32 = logits_val.astype(np.float32)
    assert decide(f32, thr).tolist() == decide(f32.astype(np.float64), thr).tolist()
    assert decide(f32, thr).tolist() == [decision_name(float(z), thr) == "PNEUMONIA" for z in f32]


def test_rule_names_live_in_decision_only():
    from pneumo.decision import RULES, SHIFT_RULE, shift_robust_threshold
    from pneumo.training.config import CHOICES

    assert CHOICES["threshold.rule"] is RULES
    assert shift_robust_threshold(y_val, {"none": logits_val}, 1.0)["rule"] == SHIFT_RULE
