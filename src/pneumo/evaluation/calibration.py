"""Calibration: ``p = sigmoid(logit / T + b)``, fitted on a held-out split, at a stated prevalence.

Two methods, both by minimising the negative log-likelihood:

- ``platt`` (default; Platt 1999): ``T`` and ``b``. Balanced class weights train a model at a 50%
  prior; a temperature alone cannot move a prior, so a bias is needed for probabilities that are
  calibrated at the prevalence of the data (the calibration split's, the training prevalence when it
  is a stratified split of train).
- ``temperature`` (Guo et al. 2017): ``T`` only, ``b = 0``.

A site with another prevalence re-targets the probabilities without refitting: by Bayes, changing
the prior from ``π₀`` to ``π`` adds ``logit(π) − logit(π₀)`` to every log-odds
(:func:`retarget_prevalence`). Decisions never change: the operating point is a raw logit, and
``T > 0`` and ``b`` keep every image on the same side of it (the probability threshold moves instead).
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy.optimize import minimize, minimize_scalar
from scipy.special import log_expit
from scipy.special import logit as log_odds

from pneumo.bundle import calibrated_probability, load_bundle, update_meta
from pneumo.data.discover import Sample
from pneumo.errors import DatasetError
from pneumo.evaluation.metrics import expected_calibration_error
from pneumo.evaluation.runner import predict_samples
from pneumo.inference import Predictor

LOG_T_BOUNDS = (-4.0, 4.0)  # T in [0.018, 55]
# What a calibration set must hold before a fit is stored (issue 21: 16 official val films, all ranked
# correctly, fitted T = 0.018 and b = +45.6, after which every probability was 0 or 1). Each class needs
# enough images for its mean log-odds to be estimated (30 per class ≈ ±0.35 on the bias at the shipped
# model's spread), and the two classes must overlap: when every PNEUMONIA logit is above every NORMAL one
# the likelihood keeps rising as T → 0, so the "fit" is the search bound, not a property of the model.
MIN_PER_CLASS = 30
# After a fit, probabilities this close to 0 or 1 are "certain"; more than half the set certain means the
# fit degenerated (issue 21's had every one). Scale-free, unlike a bound on T: a weak model's logits span
# a tenth of a strong one's and legitimately need T ≈ 0.03. The shipped model: 0.0% of its val set.
CERTAIN = 1e-6
MAX_CERTAIN_SHARE = 0.5


def nll(logit: np.ndarray, y: np.ndarray, temperature: float, bias: float = 0.0) -> float:
    """Mean binary cross-entropy of ``sigmoid(logit / T + b)`` (numerically stable)."""
    z = np.asarray(logit, dtype=np.float64) / temperature + bias
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


def fit_platt(logit, y) -> tuple[float, float]:
    """``(T, b)`` minimising the NLL of ``sigmoid(logit / T + b)``; ``T`` is kept within the temperature bounds."""
    logit = np.asarray(logit, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if y.size == 0:
        raise DatasetError("cannot fit a calibration on zero images")
    t0 = fit_temperature(logit, y)

    def loss(v: np.ndarray) -> float:
        return nll(logit, y, float(np.exp(np.clip(v[0], *LOG_T_BOUNDS))), float(v[1]))

    res = minimize(loss, x0=np.array([np.log(t0), 0.0]), method="Nelder-Mead",
                   options={"xatol": 1e-7, "fatol": 1e-10, "maxiter": 2000})
    return float(np.exp(np.clip(res.x[0], *LOG_T_BOUNDS))), float(res.x[1])


def check_fittable(logit, y, min_per_class: int = MIN_PER_CLASS) -> None:
    """Refuse (:class:`DatasetError`, one line saying what is needed) a set a calibration cannot be fitted on:
    fewer than ``min_per_class`` images of either class, or classes the logits separate perfectly."""
    logit = np.asarray(logit, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n_pos, n_neg = int((y == 1).sum()), int((y == 0).sum())
    if min(n_pos, n_neg) < min_per_class:
        raise DatasetError(
            f"calibration refused: {n_neg} NORMAL and {n_pos} PNEUMONIA images; it needs at least "
            f"{min_per_class} of each (a held-out split by patient, e.g. the training manifest's val split); "
            "the bundle is unchanged")
    if logit[y == 1].min() > logit[y == 0].max():
        raise DatasetError(
            f"calibration refused: the model ranks all {len(y)} images perfectly, so the fit has no optimum "
            "(temperature → 0, every probability 0 or 1); it needs a larger or harder held-out set in which "
            "some NORMAL and PNEUMONIA scores overlap; the bundle is unchanged")


def retarget_prevalence(bias: float, from_prevalence: float, to_prevalence: float) -> float:
    """The bias that gives the same model's probabilities at ``to_prevalence`` instead (Bayes' rule on the prior)."""
    for name, p in (("from_prevalence", from_prevalence), ("to_prevalence", to_prevalence)):
        if not 0.0 < p < 1.0:
            raise DatasetError(f"{name} must be a prevalence strictly between 0 and 1, got {p!r}")
    return float(bias + log_odds(to_prevalence) - log_odds(from_prevalence))


def calibration_summary(logit, y, t_before: float, t_after: float, b_before: float = 0.0, b_after: float = 0.0) -> dict:
    """ECE, Brier and NLL before/after for the same logits."""
    p0, p1 = calibrated_probability(logit, t_before, b_before), calibrated_probability(logit, t_after, b_after)
    y = np.asarray(y, dtype=np.float64)
    return {
        "temperature_before": float(t_before),
        "temperature": float(t_after),
        "ece_before": expected_calibration_error(y, p0),
        "ece_after": expected_calibration_error(y, p1),
        "brier_before": float(np.mean((p0 - y) ** 2)),
        "brier_after": float(np.mean((p1 - y) ** 2)),
        "nll_before": nll(logit, y, t_before, b_before),
        "nll_after": nll(logit, y, t_after, b_after),
    }


def calibrate_bundle(bundle_dir: str | Path, samples: Sequence[Sample], split: str | None = None,
                     progress: bool = False, logits: np.ndarray | None = None, method: str = "platt",
                     prevalence: float | None = None, data_description: str | None = None) -> dict:
    """Fit the calibration on ``samples`` and store it (plus a ``calibration`` block) in ``pneumo.json``.

    The probabilities are calibrated at the samples' own prevalence, then re-targeted to
    ``prevalence`` when one is given. Returns the calibration block. ``logits`` may be given to skip
    prediction (e.g. from training). Unreadable images are skipped and counted. A set too small or
    too separable to fit (:func:`check_fittable`, :data:`TEMPERATURE_RANGE`) raises
    :class:`DatasetError` before anything is written. ``data_description`` says where the images came
    from (stored as ``calibration.data``).
    """
    if method not in ("platt", "temperature"):
        raise DatasetError(f"calibration method must be platt or temperature, got {method!r}")
    bundle = load_bundle(bundle_dir)
    samples = list(samples)
    skipped: list = []
    if logits is None:
        logits, ok, skipped = predict_samples(Predictor(bundle), samples, progress=progress)
        samples = [s for s, k in zip(samples, ok, strict=True) if k]
        logits = logits[ok]
    y = np.array([s.label for s in samples], dtype=np.float64)
    check_fittable(logits, y)
    if method == "platt":
        t, b = fit_platt(logits, y)
    else:
        t, b = fit_temperature(logits, y), 0.0
    at_bound = bool(min(abs(np.log(t) - lb) for lb in LOG_T_BOUNDS) < 1e-3)
    p = calibrated_probability(logits, t, b)
    certain = float(np.mean((p < CERTAIN) | (p > 1 - CERTAIN)))
    if at_bound or certain > MAX_CERTAIN_SHARE:
        raise DatasetError(
            f"calibration refused: the fit (T {t:.3g}, bias {b:+.3g}) puts {certain:.0%} of the films at probability "
            f"0 or 1{' and T hit its search limit' if at_bound else ''}: the set, not the model, decided it; the "
            "bundle is unchanged. Needed: a larger held-out split whose classes overlap in score, e.g. the training "
            "manifest's val split")
    summary = calibration_summary(logits, y, bundle.temperature, t, bundle.bias, b)
    fitted_prevalence = float(y.mean())
    target = fitted_prevalence if prevalence is None else float(prevalence)
    bias = retarget_prevalence(b, fitted_prevalence, target)
    block = {
        "method": ("Platt scaling: sigmoid(logit / T + b), NLL" if method == "platt"
                   else "temperature scaling (NLL, scipy bounded)"),
        "fitted_prevalence": fitted_prevalence,
        "fitted_bias": b,
        "prevalence": target,
        "split": split or (samples[0].split if samples else None),
        "data": data_description,
        "n": int(len(y)),
        "n_normal": int((y == 0).sum()),
        "n_pneumonia": int((y == 1).sum()),
        "n_unreadable": len(skipped),
        "at_bound": at_bound,  # T hit its search limit: the logits carry (almost) no usable signal
        **{k: v for k, v in summary.items() if k != "temperature"},
        "fitted": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    update_meta(bundle.path, temperature=t, calibration_bias=bias, calibration=block)
    return {"temperature": t, "bias": bias, **block}


def set_prevalence(bundle_dir: str | Path, prevalence: float) -> dict:
    """Re-target a calibrated bundle's probabilities to a site's ``prevalence`` (decisions unchanged)."""
    bundle = load_bundle(bundle_dir)
    block = dict(bundle.meta.get("calibration") or {})
    if "fitted_prevalence" not in block:
        raise DatasetError(f"{bundle.path}: its calibration states no prevalence; "
                           "run pneumo calibrate with --data first")
    bias = retarget_prevalence(float(block.get("fitted_bias", 0.0)), float(block["fitted_prevalence"]), prevalence)
    block["prevalence"] = float(prevalence)
    block["retargeted"] = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    update_meta(bundle.path, calibration_bias=bias, calibration=block)
    return {"temperature": bundle.temperature, "bias": bias, **block}
