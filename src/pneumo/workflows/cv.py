"""Patient-grouped K-fold cross-validation of a training config or a bundle recipe, with an honest operating point.

A recipe (:mod:`pneumo.workflows.bundle`) is cross-validated as it is shipped: per fold every member
is trained on the fold's inner train split, the members are combined (mirror averaging included) and
the operating point is chosen by the recipe's rule on the fold's inner val, before the held-out fold
is scored.

Each fold (``pneumo.data.split.kfold_by_patient``: class-stratified, every patient in exactly one
held-out fold) is trained with the *same recipe* as ``pneumo train``: the fold's training portion is
itself split by patient into train / val (``data.val_fraction``), early stopping, best epoch and the
operating threshold (``threshold.rule``) are chosen on that inner val. The held-out fold is never
seen before it is scored, so its sensitivity / specificity are those of a threshold fixed in
advance — the situation of the shipped model on an unseen test set.

Held-out logits are scored through the deployment path (``Predictor`` on the image files).
Per fold: AUROC and metrics at the fold's own threshold, with patient-bootstrap 95% CIs
(``pneumo.evaluation.metrics.metrics_with_ci``). Pooled: the out-of-fold logits of all folds, each
centred on its fold's threshold (``logit − threshold``), so pooled decisions are exactly the fold
decisions and pooled AUROC ranks images on a common scale.

Layout: ``OUT/fold{i}/`` is an ordinary run directory (its manifest marks held-out rows
``cv_holdout``); ``OUT/oof.csv`` and ``OUT/cv.json`` hold the results. Finished folds are kept: a
rerun with the same ``OUT`` skips folds whose bundle exists.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from pneumo.bundle import calibrated_probability, load_bundle
from pneumo.data import Sample, load_dataset, resolve_data, write_manifest
from pneumo.data.split import kfold_by_patient, patient_split
from pneumo.errors import ConfigError, DatasetError
from pneumo.evaluation.metrics import metrics_with_ci
from pneumo.fsutil import atomic_write_json, atomic_write_text
from pneumo.inference import Predictor
from pneumo.training.config import load_config
from pneumo.training.datamodule import limit_samples
from pneumo.training.run import train
from pneumo.workflows.bundle import is_recipe, load_recipe, train_member
from pneumo.workflows.ensemble import combine_members

HOLDOUT = "cv_holdout"
SUMMARY_METRICS = ("auroc", "accuracy", "sensitivity", "specificity", "balanced_accuracy", "brier")


def fold_manifests(samples: Sequence[Sample], k: int, val_fraction: float, seed: int, out: Path,
                   extra: Sequence[Sample] = ()) -> list[Path]:
    """Write ``OUT/fold{i}/fold_manifest.csv`` per fold: inner ``train``/``val`` + ``cv_holdout`` rows.

    ``extra`` rows (e.g. the official originals, as ``val_official``) are copied unchanged; training
    ignores them, they only keep the decode cache shared with ordinary runs.
    """
    paths = []
    for i, (fold_train, held) in enumerate(kfold_by_patient(list(samples), k=k, seed=seed)):
        inner = patient_split(fold_train, val=val_fraction, test=0.0, seed=seed + i)
        inner = [s for s in inner if s.split in ("train", "val")]
        rows = [*inner, *(replace(s, split=HOLDOUT) for s in held), *extra]
        paths.append(write_manifest(rows, out / f"fold{i}" / "fold_manifest.csv"))
    return paths


def _source_group(s: Sample) -> str:
    return f"{s.extra.get('source_split', 'train')}:{s.patient_id}"


def score_fold(bundle_dir: Path, manifest: Path, progress: bool = False) -> dict:
    """Held-out labels, logits, groups and the fold's operating threshold (a logit)."""
    held = load_dataset(manifest).select(HOLDOUT)
    bundle = load_bundle(bundle_dir)
    logits = Predictor(bundle, backend="torch").logits_for([s.path for s in held], progress=progress)
    return {"y": np.array([s.label for s in held]), "logit": logits.astype(np.float64),
            "group": [_source_group(s) for s in held], "path": [str(s.path) for s in held],
            "threshold_logit": float(bundle.threshold_logit),
            "wall_time_s": bundle.meta.get("training", {}).get("wall_time_s")}


def fold_metrics(y, logit, threshold_logit: float, groups, n_boot: int, seed: int) -> dict:
    """Metrics with patient-bootstrap CIs at ``threshold_logit`` (probability = sigmoid(logit))."""
    prob = calibrated_probability(logit)
    m = metrics_with_ci(y, logit, prob, threshold_logit, groups, n_boot=n_boot, seed=seed)
    return {k: {kk: (None if isinstance(vv, float) and math.isnan(vv) else vv) for kk, vv in v.items()}
            for k, v in m.items() if k in SUMMARY_METRICS}


def pool(folds: list[dict]) -> dict:
    """Concatenate held-out results; logits centred on each fold's threshold."""
    return {"y": np.concatenate([f["y"] for f in folds]),
            "logit": np.concatenate([f["logit"] - f["threshold_logit"] for f in folds]),
            "group": [g for f in folds for g in f["group"]],
            "fold": np.concatenate([np.full(len(f["y"]), i) for i, f in enumerate(folds)])}


def cross_validate(config, data=None, out: str | Path = "runs/cv", k: int = 5, *, overrides: Sequence[str] = (),
                   n_boot: int = 1000, progress: bool = True) -> dict:
    """Train ``config`` (a training config or a recipe) on each of ``k`` patient-grouped folds; returns
    (and writes) the CV report."""
    recipe = load_recipe(config) if is_recipe(config) else None
    cfg = load_config(recipe["members"][0]["config"] if recipe else config,
                      [*(recipe["members"][0]["overrides"] if recipe else []), *overrides])
    out = Path(out)
    index = load_dataset(resolve_data(data))
    pool_samples = index.select("train") or [s for s in index.samples if not s.split]
    if not pool_samples:
        raise DatasetError(f"{index.root}: no training images to cross-validate on")
    if cfg.data.limit:
        pool_samples = limit_samples(pool_samples, int(cfg.data.limit), cfg.seed)
    extra = [replace(s, split="val_official") for s in index.select("val")] if index.source == "folders" else []
    manifests = fold_manifests(pool_samples, k, float(cfg.data.val_fraction), int(cfg.seed), out, extra)
    folds = []
    for manifest in manifests:
        if recipe is not None:
            folds.append(score_fold(_recipe_fold(recipe, manifest, overrides), manifest))
            continue
        run_dir = manifest.parent / "run"
        bundle = run_dir / "bundle"
        if not (bundle / "pneumo.json").is_file():
            if run_dir.exists():
                raise ConfigError(f"{run_dir} holds an unfinished fold: remove it or resume it with "
                                  "pneumo train --resume")
            train(config, data=manifest, out=run_dir, overrides=[*overrides, "data.limit=null"], progress=progress)
        folds.append(score_fold(bundle, manifest))
    rule = recipe["threshold"]["rule"] if recipe is not None else cfg.threshold.rule
    return _report(folds, out, k, n_boot, int(cfg.seed), cfg, rule)


def _recipe_fold(recipe: dict, manifest: Path, overrides: Sequence[str]) -> Path:
    """One fold of a recipe: members trained on the fold's inner split, combined and thresholded on its inner val."""
    fold = manifest.parent
    members = [train_member(m["config"], fold / "members" / m["name"], manifest,
                            [*m["overrides"], *overrides, "data.limit=null"]) for m in recipe["members"]]
    return combine_members(members, fold / "bundle", mirror=recipe["mirror"], rule=recipe["threshold"]["rule"],
                           target_sensitivity=float(recipe["threshold"]["target_sensitivity"]), name=fold.name)


def _report(folds: list[dict], out: Path, k: int, n_boot: int, seed: int, cfg, rule: str) -> dict:
    per_fold = []
    for i, f in enumerate(folds):
        per_fold.append({"fold": i, "n_images": int(len(f["y"])), "n_pneumonia": int(f["y"].sum()),
                         "threshold_logit": f["threshold_logit"], "wall_time_s": f["wall_time_s"],
                         **fold_metrics(f["y"], f["logit"], f["threshold_logit"], f["group"], n_boot, seed)})
    p = pool(folds)
    pooled = {"n_images": int(len(p["y"])), **fold_metrics(p["y"], p["logit"], 0.0, p["group"], n_boot, seed)}
    pooled.pop("brier", None)  # sigmoid of a threshold-centred logit is not a probability
    spread = {m: {"mean": float(np.mean(v)), "sd": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0}
              for m in SUMMARY_METRICS if (v := [r[m]["value"] for r in per_fold if r[m]["value"] is not None])}
    report = {"k": k, "config": cfg.name, "recipe_rule": rule,
              "threshold_note": "each fold's threshold chosen by the recipe's rule on an inner patient-grouped "
                                "val carved from that fold's training portion; held-out fold unseen until scored",
              "folds": per_fold, "pooled": pooled, "across_folds": spread}
    atomic_write_json(out / "cv.json", report)  # atomic: an interrupted run leaves no half report
    buf = io.StringIO(newline="")
    w = csv.writer(buf)
    w.writerow(["fold", "path", "group", "label", "logit_minus_threshold"])
    paths = [q for f in folds for q in f["path"]]
    for row in zip(p["fold"], paths, p["group"], p["y"], p["logit"], strict=True):
        w.writerow([int(row[0]), row[1], row[2], int(row[3]), f"{row[4]:.6f}"])
    atomic_write_text(out / "oof.csv", buf.getvalue())
    return report


def format_table(report: dict) -> str:
    """Markdown table: one row per fold plus the pooled row, value [95% CI]."""
    def cell(m: dict) -> str:
        if m["value"] is None:
            return "—"
        lo, hi = m.get("lo"), m.get("hi")
        ci = f" [{lo:.3f}, {hi:.3f}]" if lo is not None and hi is not None else ""
        return f"{m['value']:.3f}{ci}"

    cols = ("auroc", "accuracy", "sensitivity", "specificity")
    lines = ["| fold | images | " + " | ".join(cols) + " |", "|---|---|" + "---|" * len(cols)]
    for r in report["folds"]:
        lines.append(f"| {r['fold']} | {r['n_images']} | " + " | ".join(cell(r[c]) for c in cols) + " |")
    lines.append(f"| pooled | {report['pooled']['n_images']} | "
                 + " | ".join(cell(report["pooled"][c]) for c in cols) + " |")
    sd = report["across_folds"]
    lines.append("| mean ± sd | | " + " | ".join(
        f"{sd[c]['mean']:.3f} ± {sd[c]['sd']:.3f}" if c in sd else "—" for c in cols) + " |")
    return "\n".join(lines)


__all__ = ["HOLDOUT", "cross_validate", "fold_manifests", "fold_metrics", "format_table", "pool", "score_fold"]
