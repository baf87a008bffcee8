"""Temperature scaling (Guo et al. 2017): one scalar ``T > 0`` so that ``sigmoid(logit / T)`` is a
calibrated probability. Fitted by minimising the negative log-likelihood on a held-out split.

Decisions never change: the bundle's operating point is a logit, and dividing by a positive ``T``
keeps every image on the same side of it (the probability threshold moves with ``T`` instead).
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import expit, log_expit

from pneumo.bundle import load_bundle, update_meta
from pneumo.data.discover import Sample
from pneumo.errors import DatasetError
from pneumo.evaluation.metrics import expected_calibration_error

LOG_T_BOUNDS = (-4.0, 4.0)  # T in [0.018, 55]


def nll(logit: np.ndarray, y: np.ndarray, temperature: float) -> float:
    """Mean binary cross-entropy of ``sigmoid(logit / T)`` (numerically stable)."""
    z = np.asarray(logit, dtype=np.float64) / temperature
    y = np.asarray(y, dtype=np.float64)
    return float(-(y * log_expit(z) + (1 - y) * log_expit(-z)).mean())


def fit_temperature(logit, y) -> float:
    """The ``T > 0`` minimising the NLL of ``y`` (``N`` in {0,1}) given ``logit`` (``N``).

    Optimised over ``log T`` (bounded), which keeps ``T`` positive and the problem one-dimensional.
    """
    logit = np.asarray(logit, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if y.size == 0:
        raise DatasetError("cannot fit a temperature on zero images")
    res = minimize_scalar(lambda lt: nll(logit, y, float(np.exp(lt))), bounds=LOG_T_BOUNDS, method="bounded",
                          options={"xatol": 1e-6})
    return float(np.exp(res.x))


def calibration_summary(logit, y, t_before: float, t_after: float) -> dict:
    """ECE, Brier and NLL before/after for the same logits."""
    p0, p1 = expit(np.asarray(logit, dtype=np.float64) / t_before), expit(np.asarray(logit, dtype=np.float64) / t_after)
    y = np.asarray(y, dtype=np.float64)
    return {
        "temperature_before": float(t_before),
        "temperature": float(t_after),
        "ece_before": expected_calibration_error(y, p0),
        "ece_after": expected_calibration_error(y, p1),
        "brier_before": float(np.mean((p0 - y) ** 2)),
        "brier_after": float(np.mean((p1 - y) ** 2)),
        "nll_before": nll(logit, y, t_before),
        "nll_after": nll(logit, y, t_after),
    }


def calibrate_bundle(bundle_dir: str | Path, samples: Sequence[Sample], split: str | None = None,
                     progress: bool = False, logits: np.ndarray | None = None) -> dict:
    """Fit the temperature on ``samples`` and store it (plus a ``calibration`` block) in ``pneumo.json``.

    Returns the calibration block. ``logits`` may be given to skip prediction (e.g. from training).
    Unreadable images are skipped and counted.
    """
    from pneumo.evaluation.runner import predict_samples
    from pneumo.inference import Predictor

    bundle = load_bundle(bundle_dir)
    samples = list(samples)
    skipped: list = []
    if logits is None:
        logits, ok, skipped = predict_samples(Predictor(bundle), samples, progress=progress)
        samples = [s for s, k in zip(samples, ok, strict=True) if k]
        logits = logits[ok]
    y = np.array([s.label for s in samples], dtype=np.float64)
    if len(set(y.tolist())) < 2:
        raise DatasetError(f"calibration needs both NORMAL and PNEUMONIA images; got {len(y)} of one class")
    t = fit_temperature(logits, y)
    at_bound = bool(min(abs(np.log(t) - b) for b in LOG_T_BOUNDS) < 1e-3)
    summary = calibration_summary(logits, y, bundle.temperature, t)
    block = {
        "method": "temperature scaling (NLL, scipy bounded)",
        "split": split or (samples[0].split if samples else None),
        "n": int(len(y)),
        "n_unreadable": len(skipped),
        "at_bound": at_bound,  # T hit its search limit: the logits carry (almost) no usable signal
        **{k: v for k, v in summary.items() if k != "temperature"},
        "fitted": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    update_meta(bundle.path, temperature=t, calibration=block)
    return {"temperature": t, **block}
