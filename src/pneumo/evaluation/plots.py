"""Evaluation figures as PNG bytes (matplotlib, Agg backend; nothing is shown on screen).

Each function takes ``y`` (``N`` labels, 1 = PNEUMONIA) and scores, and returns the PNG bytes so the
same figure can be written to disk and inlined into the HTML report.

scikit-learn computes every curve (``roc_curve``, ``precision_recall_curve``, ``calibration_curve``) and
draws the confusion matrix (``ConfusionMatrixDisplay``); the ROC, PR and reliability axes are drawn here
rather than by ``RocCurveDisplay`` / ``PrecisionRecallDisplay`` / ``CalibrationDisplay`` because every
one of them carries what those do not: the saved operating point as a marker, several models on one ROC,
the prevalence line, the count histogram under the reliability curve, and axis names a clinician reads
(sensitivity, 1 − specificity, PPV).
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.calibration import calibration_curve  # noqa: E402
from sklearn.metrics import ConfusionMatrixDisplay, precision_recall_curve, roc_curve  # noqa: E402

from pneumo.decision import decide  # noqa: E402

FIGSIZE = (5.0, 4.0)


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def _both(y) -> bool:
    y = np.asarray(y)
    return bool(y.size and y.min() == 0 and y.max() == 1)


def roc_png(curves: Sequence[dict]) -> bytes:
    """ROC curves. ``curves``: dicts with ``label``, ``y``, ``score`` and optional ``op``
    (``(fpr, tpr)`` of the saved operating point, drawn as a marker)."""
    fig, ax = plt.subplots(figsize=FIGSIZE)
    ax.plot([0, 1], [0, 1], ls=":", color="grey", lw=1, label="chance")
    for c in curves:
        if not _both(c["y"]):
            continue
        fpr, tpr, _ = roc_curve(c["y"], c["score"])
        line, = ax.plot(fpr, tpr, lw=1.8, label=c["label"])
        if c.get("op") is not None:
            ax.plot(*c["op"], "o", ms=8, mec="black", color=line.get_color(), label=f"operating point ({c['label']})")
    ax.set(xlabel="1 − specificity (false-positive rate)", ylabel="sensitivity (true-positive rate)",
           xlim=(-0.01, 1.01), ylim=(-0.01, 1.01), title="ROC")
    ax.legend(loc="lower right", fontsize=7)
    return _png(fig)


def pr_png(y, score, op: tuple[float, float] | None = None) -> bytes:
    """Precision–recall curve; the dashed line is the prevalence (a useless classifier's precision)."""
    fig, ax = plt.subplots(figsize=FIGSIZE)
    if np.asarray(y).sum() > 0:
        precision, recall, _ = precision_recall_curve(y, score)
        ax.step(recall, precision, where="post", lw=1.8, label="model")
        ax.axhline(float(np.mean(y)), ls=":", color="grey", label="prevalence")
    if op is not None:
        ax.plot(*op, "o", ms=8, mec="black", label="operating point")
    ax.set(xlabel="recall (sensitivity)", ylabel="precision (PPV)", xlim=(-0.01, 1.01), ylim=(0, 1.02),
           title="Precision–recall")
    ax.legend(loc="lower left", fontsize=7)
    return _png(fig)


def reliability_png(y, prob, n_bins: int = 10) -> bytes:
    """Reliability diagram: observed PNEUMONIA rate per equal-width probability bin vs the mean
    predicted probability; the diagonal is perfect calibration; bars below show how many images."""
    fig, (ax, axh) = plt.subplots(2, 1, figsize=(5.0, 5.0), height_ratios=[3, 1], sharex=True)
    ax.plot([0, 1], [0, 1], ls=":", color="grey", label="perfectly calibrated")
    if len(y):
        frac, mean_pred = calibration_curve(y, prob, n_bins=n_bins, strategy="uniform")
        ax.plot(mean_pred, frac, "o-", label="model")
    ax.set(ylabel="observed PNEUMONIA fraction", ylim=(-0.02, 1.02), title="Reliability")
    ax.legend(loc="upper left", fontsize=7)
    axh.hist(prob, bins=np.linspace(0, 1, n_bins + 1), color="tab:grey")
    axh.set(xlabel="predicted probability of PNEUMONIA", ylabel="images", xlim=(0, 1))
    return _png(fig)


def histogram_png(y, prob, threshold: float) -> bytes:
    """Predicted-probability histograms per true class, with the operating threshold."""
    fig, ax = plt.subplots(figsize=FIGSIZE)
    y = np.asarray(y)
    bins = np.linspace(0, 1, 21)
    ax.hist(np.asarray(prob)[y == 0], bins=bins, alpha=0.6, label="true NORMAL", color="tab:blue")
    ax.hist(np.asarray(prob)[y == 1], bins=bins, alpha=0.6, label="true PNEUMONIA", color="tab:red")
    ax.axvline(threshold, color="black", ls="--", label=f"threshold {threshold:.3f}")
    ax.set(xlabel="predicted probability of PNEUMONIA", ylabel="images", title="Scores per class")
    ax.legend(fontsize=7)
    return _png(fig)


def threshold_png(y, prob, threshold: float) -> bytes:
    """Sensitivity and specificity as the probability threshold moves; the saved one is marked."""
    fig, ax = plt.subplots(figsize=FIGSIZE)
    y, prob = np.asarray(y), np.asarray(prob)
    grid = np.linspace(0, 1, 1001)
    if (y == 1).any():
        ax.plot(grid, (prob[y == 1][None, :] >= grid[:, None]).mean(1), color="tab:red", label="sensitivity")
        ax.plot([threshold], [(prob[y == 1] >= threshold).mean()], "o", color="tab:red", mec="black", ms=8)
    if (y == 0).any():
        ax.plot(grid, (prob[y == 0][None, :] < grid[:, None]).mean(1), color="tab:blue", label="specificity")
        ax.plot([threshold], [(prob[y == 0] < threshold).mean()], "o", color="tab:blue", mec="black", ms=8)
    ax.axvline(threshold, color="black", ls="--", lw=1, label=f"operating point {threshold:.3f}")
    ax.set(xlabel="probability threshold", ylabel="rate", xlim=(0, 1), ylim=(-0.02, 1.02),
           title="Sensitivity / specificity vs threshold")
    ax.legend(fontsize=7, loc="center left")
    return _png(fig)


def confusion_png(conf: dict) -> bytes:
    """The 2×2 confusion matrix at the operating point (rows: truth, columns: decision)."""
    cm = np.array([[conf["tn"], conf["fp"]], [conf["fn"], conf["tp"]]])
    fig, ax = plt.subplots(figsize=(4.2, 3.6))
    ConfusionMatrixDisplay(cm, display_labels=["NORMAL", "PNEUMONIA"]).plot(ax=ax, colorbar=False, cmap="Blues",
                                                                           values_format="d")
    ax.set(xlabel="model decision", ylabel="truth", title="Confusion matrix")
    return _png(fig)


def evaluation_figures(y, logit, prob, threshold_logit: float, threshold_prob: float, conf: dict) -> dict[str, bytes]:
    """All six figures of an evaluation, name → PNG bytes."""
    y = np.asarray(y)
    pred = decide(logit, threshold_logit)
    sens = float(pred[y == 1].mean()) if (y == 1).any() else np.nan
    fpr = float(pred[y == 0].mean()) if (y == 0).any() else np.nan
    ppv = float(y[pred].mean()) if pred.any() else np.nan
    return {
        "roc": roc_png([{"label": "model", "y": y, "score": logit, "op": (fpr, sens)}]),
        "precision_recall": pr_png(y, logit, (sens, ppv)),
        "reliability": reliability_png(y, prob),
        "score_histogram": histogram_png(y, prob, threshold_prob),
        "threshold_sweep": threshold_png(y, prob, threshold_prob),
        "confusion_matrix": confusion_png(conf),
    }
