"""Clinical metrics at a FIXED operating point, from scikit-learn.

The decision rule is the bundle's: ``PNEUMONIA iff logit >= threshold_logit``. The threshold was
chosen on validation data when the bundle was made and is never re-tuned on the evaluated data;
the only exception is :func:`oracle_threshold`, which is labelled as not a valid estimate.

Inputs: ``y`` ``N`` labels (1 = PNEUMONIA), ``logit`` ``N`` raw logits, ``prob`` ``N`` calibrated
probabilities (``sigmoid(logit / temperature + bias)``, the bundle's calibration). Ranking metrics use
the logits (same order as the probabilities, no saturation).
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    brier_score_loss,
    confusion_matrix,
    f1_score,
    matthews_corrcoef,
    precision_score,
    recall_score,
    roc_auc_score,
)

from pneumo.bundle import probability_threshold
from pneumo.decision import decide, youden_threshold
from pneumo.evaluation.stats import bootstrap_cis

NAN = float("nan")

METRIC_LABELS: dict[str, str] = {
    "auroc": "AUROC",
    "auprc": "AUPRC (average precision)",
    "accuracy": "Accuracy",
    "balanced_accuracy": "Balanced accuracy",
    "sensitivity": "Sensitivity (recall, TPR)",
    "specificity": "Specificity (TNR)",
    "ppv": "PPV (precision)",
    "npv": "NPV",
    "f1": "F1",
    "mcc": "MCC",
    "brier": "Brier score (lower is better)",
    "ece": "ECE, 10 bins (lower is better)",
}
METRICS = tuple(METRIC_LABELS)


def expected_calibration_error(y, prob, n_bins: int = 10) -> float:
    """ECE for the PNEUMONIA probability: split [0, 1] into ``n_bins`` equal-width bins (the last one
    closed), and sum over bins of (fraction of images in the bin) × |observed PNEUMONIA rate − mean
    predicted probability|. 0 = perfectly calibrated."""
    y = np.asarray(y, dtype=np.float64)
    prob = np.asarray(prob, dtype=np.float64)
    if y.size == 0:
        return NAN
    bins = np.clip((prob * n_bins).astype(int), 0, n_bins - 1)
    gap = 0.0
    for b in np.unique(bins):
        sel = bins == b
        gap += abs(y[sel].sum() - prob[sel].sum())
    return float(gap / y.size)


def confusion(y, logit, threshold_logit: float) -> dict[str, int]:
    """Counts at the operating point: ``{"tp", "fn", "tn", "fp"}``."""
    pred = decide(logit, threshold_logit).astype(int)
    tn, fp, fn, tp = confusion_matrix(np.asarray(y, dtype=int), pred, labels=[0, 1]).ravel()
    return {"tp": int(tp), "fn": int(fn), "tn": int(tn), "fp": int(fp)}


def _mcc_defined(y, pred) -> bool:
    """scikit-learn returns 0 when a row or column of the confusion matrix is empty; we say "undefined"
    (NaN), as the bootstrap does, rather than report a made-up 0."""
    return len(set(y.tolist())) == 2 and len(set(pred.tolist())) == 2


def point_metrics(y, logit, prob, threshold_logit: float, n_bins: int = 10) -> dict[str, float]:
    """Every metric of :data:`METRICS` at the operating point; NaN where undefined (e.g. one class)."""
    y = np.asarray(y, dtype=int)
    logit = np.asarray(logit, dtype=np.float64)
    pred = decide(logit, threshold_logit).astype(int)
    both = y.min(initial=1) == 0 and y.max(initial=0) == 1
    nz = {"zero_division": np.nan}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        warnings.simplefilter("ignore", UserWarning)
        out = {
            "auroc": roc_auc_score(y, logit) if both else NAN,
            "auprc": average_precision_score(y, logit) if y.any() else NAN,
            "accuracy": accuracy_score(y, pred),
            "balanced_accuracy": balanced_accuracy_score(y, pred) if both else NAN,
            "sensitivity": recall_score(y, pred, pos_label=1, labels=[0, 1], **nz),
            "specificity": recall_score(y, pred, pos_label=0, labels=[0, 1], **nz),
            "ppv": precision_score(y, pred, pos_label=1, labels=[0, 1], **nz),
            "npv": precision_score(y, pred, pos_label=0, labels=[0, 1], **nz),
            "f1": f1_score(y, pred, labels=[0, 1], **nz),
            "mcc": matthews_corrcoef(y, pred) if _mcc_defined(y, pred) else NAN,
            "brier": brier_score_loss(y, prob, pos_label=1),
            "ece": expected_calibration_error(y, prob, n_bins),
        }
    return {k: float(v) for k, v in out.items()}


def metrics_with_ci(y, logit, prob, threshold_logit: float, groups, n_boot: int = 1000, seed: int = 0) -> dict:
    """``{metric: {"value", "lo", "hi", "n_valid"}}``: point estimate plus a patient-bootstrap 95% CI."""
    point = point_metrics(y, logit, prob, threshold_logit)
    if n_boot <= 0 or len(y) == 0:
        return {k: {"value": v, "lo": NAN, "hi": NAN, "n_valid": 0} for k, v in point.items()}
    cis = bootstrap_cis(y, logit, prob, threshold_logit, groups, n_boot=n_boot, seed=seed)
    return {k: {"value": point[k], **cis[k]} for k in METRICS}


def oracle_threshold(y, logit, temperature: float = 1.0, bias: float = 0.0) -> dict:
    """The Youden-optimal threshold ON THIS DATA (max sensitivity + specificity − 1).

    Optimistic by construction — picking the threshold on the data you score is exactly the mistake
    this module exists to avoid. Shown only to say how much a locally tuned threshold could move.
    """
    y = np.asarray(y, dtype=int)
    if y.min(initial=1) != 0 or y.max(initial=0) != 1:
        return {}
    point = youden_threshold(y, logit)
    t, sens, spec = point["logit"], point["val_sensitivity"], point["val_specificity"]
    pred = decide(logit, t)
    return {
        "label": "oracle (best threshold on THIS data — not a valid estimate)",
        "rule": "youden",
        "threshold_logit": float(t),
        "threshold_probability": probability_threshold(t, temperature, bias),
        "sensitivity": float(sens),
        "specificity": float(spec),
        "youden_j": float(sens + spec - 1),
        "accuracy": float((pred == y).mean()),
    }


def pathogen_sensitivity(y, logit, threshold_logit: float, pathogens, groups, n_boot: int = 1000,
                         seed: int = 0) -> dict:
    """Sensitivity among PNEUMONIA images per pathogen (bacteria / virus / unknown), with CIs."""
    y = np.asarray(y, dtype=int)
    patho = np.array([p or "unknown" for p in pathogens], dtype=object)
    out = {}
    for name in sorted(set(patho[y == 1])):
        sel = (y == 1) & (patho == name)
        m = metrics_with_ci(y[sel], np.asarray(logit)[sel], np.full(sel.sum(), 0.5), threshold_logit,
                            np.asarray(groups, dtype=object)[sel], n_boot, seed)
        out[name] = {"n": int(sel.sum()), **m["sensitivity"]}
    return out


def subgroup_metrics(y, logit, prob, threshold_logit: float, extras: list[dict], groups,
                     n_boot: int = 1000, seed: int = 0, max_levels: int = 20) -> dict:
    """Metrics per level of each manifest column in ``Sample.extra`` (columns with more than
    ``max_levels`` distinct values, e.g. identifiers, are skipped)."""
    y = np.asarray(y, dtype=int)
    logit, prob = np.asarray(logit), np.asarray(prob)
    groups = np.asarray(groups, dtype=object)
    cols = sorted({k for e in extras for k in e})
    out: dict[str, dict] = {}
    keep = ("auroc", "sensitivity", "specificity", "accuracy", "ppv", "npv")
    for col in cols:
        values = np.array([str(e.get(col, "") or "(blank)") for e in extras], dtype=object)
        levels = sorted(set(values))
        if len(levels) > max_levels or len(levels) < 1:
            continue
        out[col] = {}
        for level in levels:
            sel = values == level
            m = metrics_with_ci(y[sel], logit[sel], prob[sel], threshold_logit, groups[sel], n_boot, seed)
            out[col][level] = {"n": int(sel.sum()), "n_pneumonia": int(y[sel].sum()),
                               **{k: m[k] for k in keep}}
    return out
