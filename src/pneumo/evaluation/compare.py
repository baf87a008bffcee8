"""``compare_bundles``: several models on exactly the same images, with paired tests.

Fairness rules: every model sees the same images (those every model could read), each decides with
its own saved operating point (``logit >= threshold_logit``; nothing is re-tuned), and the bootstrap
draws the same patients for every model so differences are paired.

Tests per pair: DeLong's test for AUROC (image-level) and a paired patient-bootstrap p-value for
sensitivity, specificity and accuracy (see :func:`stats.bootstrap_p_value`). p-values are not
corrected for multiple comparisons.
"""

from __future__ import annotations

import datetime as _dt
import itertools
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pneumo.bundle import atomic_write_bytes, atomic_write_json, load_bundle
from pneumo.data.discover import Sample
from pneumo.decision import decide
from pneumo.errors import ConfigError, DatasetError
from pneumo.evaluation import stats
from pneumo.evaluation.metrics import METRIC_LABELS, METRICS, point_metrics
from pneumo.evaluation.plots import roc_png
from pneumo.evaluation.report import b64, fmt
from pneumo.evaluation.runner import bundle_summary, predict_samples
from pneumo.inference import Predictor
from pneumo.templates import render
from pneumo.version import __version__

PAIRED_METRICS = ("sensitivity", "specificity", "accuracy")


def _predict_all(bundles, samples, progress):
    preds, ok_all, unreadable = [], np.ones(len(samples), dtype=bool), {}
    for b in bundles:
        p = Predictor(b)
        logit, ok, bad = predict_samples(p, samples, progress=progress)
        ok_all &= ok
        unreadable.update(dict(bad))
        preds.append((p, logit))
    return preds, ok_all, unreadable


def _pair_tests(y, groups, models, names, reps, points) -> list[dict]:
    out = []
    for i, j in itertools.combinations(range(len(models)), 2):
        row = {"a": names[i], "b": names[j]}
        try:
            row["auroc"] = stats.delong_test(y, models[i][0], models[j][0])
            row["auroc"]["test"] = "DeLong (paired)"
        except ValueError as exc:
            row["auroc"] = {"test": "DeLong (paired)", "p_value": float("nan"), "note": str(exc)}
        for k in PAIRED_METRICS:
            diff = points[i][k] - points[j][k]
            p = stats.bootstrap_p_value(reps[i][k] - reps[j][k], diff)
            lo, hi, _ = stats.percentile_ci(reps[i][k] - reps[j][k])
            row[k] = {"test": "paired patient bootstrap", "diff": float(diff), "lo": lo, "hi": hi, "p_value": p}
        out.append(row)
    return out


def fmt_p(p: float | None, floor: float = 1e-4) -> str:
    """``p=0.032``, ``p<0.0001``: a p-value is never printed as 0 (DeLong's underflows, a bootstrap's
    cannot go below one resample in ``n``: ``floor``)."""
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "p n/a"
    if p < floor:
        return f"p<{floor:.2g}"
    return f"p={p:.3f}" if p >= 0.001 else f"p={p:.4f}"


def markdown_table(result: dict) -> str:
    names = [m["name"] for m in result["models"]]
    lines = ["| metric | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for k in METRICS:
        cells = [f"{fmt(m['metrics'][k]['value'])} [{fmt(m['metrics'][k]['lo'])}, {fmt(m['metrics'][k]['hi'])}]"
                 for m in result["models"]]
        lines.append(f"| {METRIC_LABELS[k]} | " + " | ".join(cells) + " |")
    lines += ["", "| pair | ΔAUROC (DeLong p) | Δsensitivity (p) | Δspecificity (p) | Δaccuracy (p) |",
              "|---|---|---|---|---|"]
    boot_floor = 1.0 / (int(result["bootstrap"].get("n_resamples") or 0) + 1)
    for t in result["pairs"]:
        cells = [f"{fmt(t['auroc'].get('diff'))} ({fmt_p(t['auroc']['p_value'])})"]
        cells += [f"{fmt(t[k]['diff'])} ({fmt_p(t[k]['p_value'], max(boot_floor, 1e-4))})" for k in PAIRED_METRICS]
        lines.append(f"| {t['a']} vs {t['b']} | " + " | ".join(cells) + " |")
    d = result["data"]
    lines += ["", f"{d['n_images']} images ({d['n_pneumonia']} PNEUMONIA) from {d['n_patients']} patients, split "
              f"{d['split'] or 'all'}; 95% CIs from {result['bootstrap']['n_resamples']} paired patient-bootstrap "
              "resamples; each model at its own saved operating point; p-values uncorrected."]
    return "\n".join(lines) + "\n"


def _blocks(md: str) -> list[tuple[str, object]]:
    """``comparison.md`` as blocks in order: ``("table", rows of cells)`` (the Markdown rule rows dropped)
    or ``("p", line)`` for any other non-blank line."""
    blocks: list[tuple[str, object]] = []
    rows: list[list[str]] = []
    for line in md.splitlines():
        if line.startswith("|"):
            if set(line.replace("|", "").strip()) <= set("-"):
                continue
            rows.append([c.strip() for c in line.strip("|").split("|")])
        else:
            if rows:
                blocks.append(("table", rows))
                rows = []
            if line.strip():
                blocks.append(("p", line))
    if rows:
        blocks.append(("table", rows))
    return blocks


def _html(result: dict, md: str, roc: bytes) -> str:
    """A minimal self-contained HTML rendering of the Markdown tables plus the ROC plot
    (layout: ``pneumo/templates/comparison.html``)."""
    return render("comparison.html", blocks=_blocks(md), roc=b64(roc)) + "\n"


def compare_bundles(bundle_dirs: Sequence[str | Path], samples: Sequence[Sample], out_dir: str | Path, *,
                    split: str | None = None, data_path: Path | None = None, n_boot: int = 1000, seed: int = 0,
                    progress: bool = False) -> dict:
    """Score every bundle on the same images; write comparison.{md,html,json} and roc.png into ``out_dir``."""
    if len(bundle_dirs) < 2:
        raise ConfigError("compare needs at least two bundles")
    bundles = [load_bundle(b) for b in bundle_dirs]
    names = [b.name for b in bundles]
    if len(set(names)) < len(names):
        names = [f"{b.name} ({b.path})" for b in bundles]
    samples = list(samples)
    preds, ok, unreadable = _predict_all(bundles, samples, progress)
    kept = [s for s, k in zip(samples, ok, strict=True) if k]
    if not kept:
        raise DatasetError("no image could be read by every model")
    y = np.array([s.label for s in kept], dtype=int)
    groups = [s.group for s in kept]
    models = [(logit[ok], p.probabilities(logit[ok]), b.threshold_logit)
              for (p, logit), b in zip(preds, bundles, strict=True)]
    points = [point_metrics(y, lg, pr, t) for lg, pr, t in models]
    reps = stats.paired_bootstrap(y, groups, models, n_boot=max(n_boot, 1), seed=seed)
    result: dict[str, Any] = {
        "pneumo_version": __version__,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "data": {"source": str(data_path) if data_path else None, "split": split, "n_images": len(kept),
                 "n_pneumonia": int(y.sum()), "n_patients": len(set(groups)), "n_unreadable": len(unreadable)},
        "bootstrap": {"n_resamples": int(n_boot), "seed": seed, "unit": "patient (Sample.group)", "paired": True},
        "models": [],
        "pairs": _pair_tests(y, groups, models, names, reps, points),
        "unreadable": [{"path": k, "error": v} for k, v in unreadable.items()],
    }
    for b, name, pt, rep in zip(bundles, names, points, reps, strict=True):
        ms = {}
        for k in METRICS:
            lo, hi, n_valid = stats.percentile_ci(rep[k]) if n_boot else (float("nan"), float("nan"), 0)
            ms[k] = {"value": pt[k], "lo": lo, "hi": hi, "n_valid": n_valid}
        result["models"].append({**bundle_summary(b), "name": name, "metrics": ms})
    md = markdown_table(result)
    roc = roc_png([{"label": n, "y": y, "score": lg, "op": _op(y, lg, t)}
                   for n, (lg, _, t) in zip(names, models, strict=True)])
    out = Path(out_dir)
    atomic_write_bytes(out / "comparison.md", md.encode())
    atomic_write_bytes(out / "roc.png", roc)
    atomic_write_bytes(out / "comparison.html", _html(result, md, roc).encode())
    atomic_write_json(out / "comparison.json", result)
    result["markdown"] = md
    return result


def _op(y, logit, thr) -> tuple[float, float] | None:
    pred = decide(logit, thr)
    if y.min() == y.max():
        return None
    return float(pred[y == 0].mean()), float(pred[y == 1].mean())
