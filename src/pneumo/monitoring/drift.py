"""Audit rows → the figures hospital IT watches, and the alarms that say "look now".

Figures per window and per day/week bucket: volume, refusal rate (not a chest X-ray), atypical rate
(when the audit log records the gate's ``population``), positive rate, latency p50/p95, errors, and
the live score distribution against the bundle's validation reference: population stability index
(PSI, ten validation-decile bins) and the Kolmogorov–Smirnov statistic.

Scores are compared per *image* (rows deduplicated by ``image_sha256``: a film opened, then reported,
is one image) and only for rows of the model whose reference is used. Live probabilities are turned
back into raw logits (``T · (logit(p) − bias)``, the bundle's calibration) so they sit on the reference's scale.

An alarm is a prompt to look, not proof of harm: a change of patient mix (more pneumonia in winter)
moves the score distribution as much as a new scanner does.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields

import numpy as np
from scipy.special import kolmogorov

from pneumo.errors import ConfigError
from pneumo.monitoring.reference import QUANTILE_PROBS

ENV_BOUNDS = "PNEUMO_MONITOR_BOUNDS"
P_EPS = 1e-6  # the API rounds probabilities to 6 decimals; clip both sides to the same range
PSI_FLOOR = 1e-4
DISPLAY_EDGES = np.linspace(0.0, 1.0, 11)


@dataclass(frozen=True)
class Bounds:
    """Alarm bounds; every one can be changed (``PNEUMO_MONITOR_BOUNDS`` JSON, query, CLI options).

    Args:
        psi_max: PSI above this is drift (0.1–0.25 "moderate", > 0.25 "significant" by the usual rule).
        ks_max: KS statistic above this is drift (at 100 images the chance level is about 0.1).
        min_scored: fewer scored images than this: the distribution is not judged (PSI/KS are noisy).
        refusal_max: share of images refused as not a chest X-ray.
        atypical_max: share of images the gate calls atypical for the training population.
        error_max: share of requests that ended in an error (busy, bad uploads, crashes).
        latency_p95_max_ms: 95th-percentile latency of answered requests.
        min_requests: fewer requests than this: rates are shown but raise no alarm.
    """

    psi_max: float = 0.25
    ks_max: float = 0.20
    min_scored: int = 100
    refusal_max: float = 0.10
    atypical_max: float = 0.20
    error_max: float = 0.05
    latency_p95_max_ms: float = 2000.0
    min_requests: int = 20

    @classmethod
    def from_env(cls, **overrides) -> Bounds:
        """Defaults, then ``$PNEUMO_MONITOR_BOUNDS`` (JSON object), then ``overrides`` that are not None."""
        values = asdict(cls())
        raw = os.environ.get(ENV_BOUNDS)
        if raw:
            try:
                values.update(json.loads(raw))
            except (json.JSONDecodeError, TypeError, ValueError) as exc:
                raise ConfigError(f"${ENV_BOUNDS} is not a JSON object of bounds: {exc}") from exc
        values.update({k: v for k, v in overrides.items() if v is not None})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown monitor bounds {unknown}; known: {sorted(known)}")
        return cls(**{k: type(getattr(cls(), k))(v) for k, v in values.items()})


def _rate(num: int, den: int) -> float | None:
    return round(num / den, 4) if den else None


def _pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 2) if values else None


def to_logits(probabilities, temperature: float, bias: float = 0.0) -> np.ndarray:
    """Inverse of :func:`pneumo.bundle.calibrated_probability`: ``T · (logit(p) − bias)``."""
    p = np.clip(np.asarray(probabilities, dtype=np.float64), P_EPS, 1 - P_EPS)
    return temperature * (np.log(p / (1 - p)) - bias)


def psi(live: np.ndarray, reference: dict, lo: float, hi: float) -> float:
    """Population stability index of ``live`` logits over the reference's decile bins."""
    edges = np.clip(np.asarray(reference["psi_edges"], dtype=np.float64), lo, hi)
    expected = np.asarray(reference["psi_counts"], dtype=np.float64)
    expected = np.maximum(expected / expected.sum(), PSI_FLOOR)
    actual = np.bincount(np.searchsorted(edges, live, side="right"), minlength=len(expected)) / len(live)
    actual = np.maximum(actual, PSI_FLOOR)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def reference_cdf(x, reference: dict, lo: float, hi: float) -> np.ndarray:
    q = np.clip(np.asarray(reference["quantiles"], dtype=np.float64), lo, hi)
    return np.interp(x, q, QUANTILE_PROBS, left=0.0, right=1.0)


def ks(live: np.ndarray, reference: dict, lo: float, hi: float) -> tuple[float, float]:
    """Two-sample KS statistic against the reference CDF (0.5 % quantile grid) and its asymptotic p."""
    x = np.sort(live)
    n, m = len(x), int(reference["n"])
    f = reference_cdf(x, reference, lo, hi)
    d = float(max(np.max(np.arange(1, n + 1) / n - f), np.max(f - np.arange(n) / n)))
    en = np.sqrt(n * m / (n + m))
    return d, float(kolmogorov((en + 0.12 + 0.11 / en) * d))


def _scores(rows: list[dict], model_sha: str | None) -> list[float]:
    by_image: dict[str, float] = {}
    for i, r in enumerate(rows):
        if r.get("outcome") != "ok" or r.get("probability") is None:
            continue
        if model_sha and r.get("model_sha256") != model_sha:
            continue
        by_image[r.get("image_sha256") or f"row{i}"] = float(r["probability"])
    return list(by_image.values())


def group_stats(rows: list[dict], reference: dict | None, calib: tuple[float, float], model_sha: str | None) -> dict:
    """The figures for one set of audit rows (a window or a bucket)."""
    outcomes = Counter(r.get("outcome") for r in rows)
    answered = outcomes["ok"] + outcomes["refused_ood"]
    has_population = any(r.get("population") is not None for r in rows)
    atypical = sum(1 for r in rows if r.get("population") == "atypical")
    with_population = sum(1 for r in rows if r.get("population") is not None)
    latencies = [float(r["latency_ms"]) for r in rows
                 if r.get("outcome") != "error" and r.get("latency_ms") is not None]
    positives = sum(1 for r in rows if r.get("outcome") == "ok" and r.get("decision") == "PNEUMONIA")
    probs = _scores(rows, model_sha)
    # every reason a film was flagged or refused for (analysis codes: atypical_population, age_outside_range,
    # not_a_chest_xray, far_outside_population, lateral_view, ...); a row can carry several
    reasons = Counter(code for r in rows if r.get("outcome") != "error"
                      for code in (r.get("flags") or "").split(",") if code)
    flagged = sum(1 for r in rows if r.get("outcome") == "ok" and r.get("flags"))
    out = {
        "requests": len(rows),
        "images": len({r["image_sha256"] for r in rows if r.get("image_sha256")}),
        "answered": answered,
        "refused": outcomes["refused_ood"],
        "errors": outcomes["error"],
        "error_codes": dict(Counter(r.get("error_code") or "unknown" for r in rows if r.get("outcome") == "error")),
        "refusal_rate": _rate(outcomes["refused_ood"], answered),
        "atypical_rate": _rate(atypical, with_population) if has_population else None,
        "flagged": flagged,
        "flagged_rate": _rate(flagged, outcomes["ok"]),
        "flags_by_reason": dict(reasons.most_common()),
        "positive_rate": _rate(positives, outcomes["ok"]),
        "error_rate": _rate(outcomes["error"], len(rows)),
        "latency_p50_ms": _pct(latencies, 50),
        "latency_p95_ms": _pct(latencies, 95),
        "n_scored": len(probs),
        "mean_probability": round(float(np.mean(probs)), 4) if probs else None,
        "psi": None,
        "ks": None,
        "ks_p": None,
    }
    if reference and probs:
        lo, hi = to_logits([0.0, 1.0], *calib)
        live = to_logits(probs, *calib)
        out["psi"] = round(psi(live, reference, lo, hi), 4)
        ks_stat, p = ks(live, reference, lo, hi)
        out["ks"], out["ks_p"] = round(ks_stat, 4), float(f"{p:.3g}")
        cdf = reference_cdf(to_logits(DISPLAY_EDGES, *calib), reference, lo, hi)
        cdf[0], cdf[-1] = 0.0, 1.0
        out["histogram"] = {
            "edges": [round(float(e), 2) for e in DISPLAY_EDGES],
            "live": [round(float(v), 4) for v in np.histogram(probs, DISPLAY_EDGES)[0] / len(probs)],
            "reference": [round(float(v), 4) for v in np.diff(cdf)],
        }
    return out


def alarms(stats: dict, bounds: Bounds, reference: dict | None) -> tuple[list[dict], list[str]]:
    """Alarms (``metric``, ``value``, ``bound``, ``message``) and notes on what could not be judged."""
    found, notes = [], []

    def over(metric: str, bound: float, what: str) -> None:
        value = stats.get(metric)
        if value is not None and value > bound:
            found.append({"metric": metric, "value": value, "bound": bound, "message": what.format(v=value, b=bound)})

    if stats["requests"] >= bounds.min_requests:
        over("refusal_rate", bounds.refusal_max, "{v:.1%} of images were refused as not a chest X-ray (bound {b:.0%}).")
        over("atypical_rate", bounds.atypical_max,
             "{v:.1%} of images are atypical for the training population (bound {b:.0%}).")
        over("error_rate", bounds.error_max, "{v:.1%} of requests ended in an error (bound {b:.0%}).")
        over("latency_p95_ms", bounds.latency_p95_max_ms, "95th-percentile latency is {v:.0f} ms (bound {b:.0f} ms).")
    else:
        notes.append(f"Only {stats['requests']} requests: rates raise no alarm below {bounds.min_requests}.")
    if reference is None:
        notes.append("The model bundle stores no validation score reference, so score drift is not assessed.")
    elif stats["n_scored"] < bounds.min_scored:
        notes.append(f"Only {stats['n_scored']} scored images: score drift is judged from {bounds.min_scored} on.")
    else:
        over("psi", bounds.psi_max, "Score distribution differs from validation: PSI {v:.2f} (bound {b:.2f}).")
        over("ks", bounds.ks_max, "Score distribution differs from validation: KS {v:.2f} (bound {b:.2f}).")
    return found, notes


def bucket_key(time: str, bucket: str) -> str:
    """A UTC ISO time → its day (``2026-01-31``) or the Monday that starts its ISO week."""
    day = dt.date.fromisoformat(time[:10])
    if bucket == "week":
        day -= dt.timedelta(days=day.weekday())
    return day.isoformat()


def summarise(
    rows: Iterable[dict],
    meta: dict | None,
    *,
    model_sha: str | None = None,
    bucket: str = "day",
    bounds: Bounds | None = None,
    since: str | None = None,
    until: str | None = None,
) -> dict:
    """The monitor answer for audit ``rows`` and the serving bundle's ``meta`` (its reference, temperature)."""
    if bucket not in ("day", "week"):
        raise ConfigError(f"bucket must be day or week, got {bucket!r}")
    bounds = bounds or Bounds()
    rows = list(rows)
    meta = meta or {}
    reference = meta.get("score_reference")
    temperature = float(meta.get("temperature", 1.0))
    calib = (temperature, float(meta.get("calibration_bias", 0.0)))
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(bucket_key(r["time"], bucket), []).append(r)
    overall = group_stats(rows, reference, calib, model_sha)
    found, notes = alarms(overall, bounds, reference)
    per_bucket = []
    for key in sorted(groups):
        stats = group_stats(groups[key], reference, calib, model_sha)
        stats.pop("histogram", None)
        stats["alarms"] = [a["metric"] for a in alarms(stats, bounds, reference)[0]]
        per_bucket.append({"start": key, **stats})
    models = Counter(r.get("model_sha256") for r in rows if r.get("model_sha256"))
    return {
        "since": since,
        "until": until,
        "bucket": bucket,
        "status": "alarm" if found else "ok",
        "alarms": found,
        "notes": notes,
        "bounds": asdict(bounds),
        "model": {"name": meta.get("name"), "sha256": model_sha, "temperature": temperature, "bias": calib[1]},
        "models_seen": dict(models),
        "reference": None if reference is None else {
            "n": reference.get("n"), "split": reference.get("split"), "positive_rate": reference.get("positive_rate"),
            "created": reference.get("created"),
        },
        "overall": overall,
        "buckets": per_bucket,
    }
