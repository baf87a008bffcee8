"""``evaluate_bundle``: predict a split, score it at the saved operating point, write the outputs.

Order matters for honesty: the model sees only image paths; labels are looked up afterwards; the
threshold is the bundle's (a logit chosen on validation data), never tuned here.

Outputs in ``out_dir``: ``metrics.json``, ``predictions.csv`` (path, patient, label, probability,
decision, logit), ``figures/*.png`` and a self-contained ``report.html``.
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pneumo.bundle import Bundle, atomic_write_bytes, atomic_write_json, load_bundle
from pneumo.data.discover import CLASS_NAMES, Sample
from pneumo.decision import decision_name
from pneumo.errors import BundleError, ConfigError, DatasetError
from pneumo.evaluation import metrics as M
from pneumo.evaluation.plots import evaluation_figures
from pneumo.evaluation.report import error_gallery, render_report
from pneumo.inference import Predictor
from pneumo.version import __version__

BOOT_SEED = 0


def predict_samples(predictor, samples: Sequence[Sample], batch_size: int = 32, progress: bool = False):
    """Logits for the samples' image files (paths only; labels are never passed to the model).

    Returns ``(logits N, ok N bool, unreadable [(path, reason)])``; an unreadable file costs its own
    image, not the run (``Predictor.logits_for(..., on_error="record")``).
    """
    paths = [s.path for s in samples]
    res = predictor.logits_for(paths, batch_size=batch_size, on_error="record", progress=progress)
    logits = np.array([np.nan if r.logit is None else r.logit for r in res], dtype=np.float64)
    ok = np.array([r.ok for r in res], dtype=bool)
    bad = [(r.path, r.message) for r in res if not r.ok]
    broken = ok & ~np.isfinite(logits)
    if broken.any():
        first = paths[int(np.flatnonzero(broken)[0])]
        raise BundleError(f"{predictor.bundle.path}: the model returned non-finite logits for {int(broken.sum())} "
                          f"image(s), e.g. {first}; the weights are broken")
    return logits, ok, bad


def check_out_dir(out_dir: Path, data_path: Path | None, samples: Sequence[Sample]) -> Path:
    """Refuse an output folder inside the dataset (its root, or any folder holding its images)."""
    out = Path(out_dir).resolve()
    protected = {Path(s.path).resolve().parent for s in samples}
    if data_path is not None:
        dp = Path(data_path).resolve()
        if dp.is_dir():
            protected.add(dp)
    for p in protected:
        if out == p or p in out.parents:
            raise ConfigError(f"--out {out_dir} is inside the dataset folder {p}; choose a folder outside the data")
    return out


def select_split(index, split: str | None) -> list[Sample]:
    """The samples of ``split``, or a clear error naming the splits that exist."""
    if split in (None, "", "all"):
        return list(index.samples)
    chosen = index.select(split)
    if not chosen:
        have = ", ".join(index.splits) or "none (use --split all)"
        raise DatasetError(f"{index.root}: no split {split!r}; available splits: {have}")
    return chosen


def bundle_summary(bundle: Bundle) -> dict:
    op = bundle.meta.get("operating_point", {})
    return {
        "name": bundle.name,
        "path": str(bundle.path),
        "architecture": bundle.meta.get("architecture", {}),
        "weights_sha256": bundle.sha256,
        "model_version": bundle.version,
        "pneumo_version": bundle.meta.get("pneumo_version"),
        "temperature": bundle.temperature,
        "operating_point_rule": op.get("rule"),
        "threshold_logit": bundle.threshold_logit,
        "threshold_probability": bundle.threshold,
    }


def score(y, logit, prob, bundle: Bundle, kept: Sequence[Sample], n_boot: int, seed: int) -> dict:
    """Every number of the report (without the figures)."""
    thr = bundle.threshold_logit
    groups = [s.group for s in kept]
    return {
        "metrics": M.metrics_with_ci(y, logit, prob, thr, groups, n_boot, seed),
        "confusion": M.confusion(y, logit, thr),
        "pathogen_sensitivity": M.pathogen_sensitivity(y, logit, thr, [s.pathogen for s in kept], groups, n_boot, seed),
        "subgroups": M.subgroup_metrics(y, logit, prob, thr, [s.extra for s in kept], groups, n_boot, seed),
        "oracle": M.oracle_threshold(y, logit, bundle.temperature, bundle.bias),
    }


def write_predictions(path: Path, kept: Sequence[Sample], logit, prob, threshold_logit: float) -> None:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["path", "patient", "label", "probability", "decision", "logit"])
    for s, lg, p in zip(kept, logit, prob, strict=True):
        w.writerow([str(s.path), s.group, CLASS_NAMES[s.label], f"{p:.6f}",
                    decision_name(lg, threshold_logit), f"{lg:.6f}"])
    atomic_write_bytes(path, buf.getvalue().encode())


def evaluate_bundle(bundle: Bundle | str | Path, samples: Sequence[Sample], out_dir: str | Path, *,
                    split: str | None = None, data_path: Path | None = None, n_boot: int = 1000,
                    seed: int = BOOT_SEED, progress: bool = False, backend: str = "auto",
                    gallery: int = 8) -> dict:
    """Evaluate ``bundle`` on ``samples`` and write every output into ``out_dir``; returns metrics.json's content."""
    bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
    samples = list(samples)
    if not samples:
        raise DatasetError("no images to evaluate")
    out = check_out_dir(Path(out_dir), data_path, samples)
    predictor = Predictor(bundle, backend=backend)
    logit_all, ok, unreadable = predict_samples(predictor, samples, progress=progress)
    kept = [s for s, k in zip(samples, ok, strict=True) if k]
    if not kept:
        raise DatasetError(f"none of the {len(samples)} images could be read; first error: {unreadable[0][1]}")
    logit = logit_all[ok]
    prob = predictor.probabilities(logit)
    y = np.array([s.label for s in kept], dtype=int)  # labels looked up only now
    result = {
        "pneumo_version": __version__,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "bundle": bundle_summary(bundle),
        "data": {
            "source": str(data_path) if data_path else None,
            "split": split,
            "n_images": len(kept),
            "n_pneumonia": int(y.sum()),
            "n_normal": int((1 - y).sum()),
            "n_patients": len({s.group for s in kept}),
            "n_unreadable": len(unreadable),
        },
        "bootstrap": {"n_resamples": int(n_boot), "seed": int(seed), "unit": "patient (Sample.group)",
                      "interval": "95% percentile"},
        **score(y, logit, prob, bundle, kept, n_boot, seed),
        "unreadable": [{"path": p, "error": e} for p, e in unreadable],
    }
    out.mkdir(parents=True, exist_ok=True)
    write_predictions(out / "predictions.csv", kept, logit, prob, bundle.threshold_logit)
    figures = evaluation_figures(y, logit, prob, bundle.threshold_logit, bundle.threshold, result["confusion"])
    for name, png in figures.items():
        atomic_write_bytes(out / "figures" / f"{name}.png", png)
    cases = error_gallery(bundle, kept, y, logit, prob, n=gallery)
    result["gallery"] = {k: [{kk: vv for kk, vv in c.items() if kk != "png"} for c in v] for k, v in cases.items()}
    atomic_write_json(out / "metrics.json", result)
    atomic_write_bytes(out / "report.html", render_report(result, figures, cases).encode("utf-8"))
    return result
