"""``combine_members``: trained member bundles → one ensemble bundle, operating point re-chosen.

The members must have been trained on the same patient-grouped split with the same preprocessing
(checked: the training manifests' fingerprints and the specs must match), so that the ensemble's
validation split is still held out for every member. The operating point is chosen again, on the
*ensemble's* validation logits, through the serving path (file → ``read_image`` → ``preprocess`` →
model), because a mean of logits has its own distribution. Nothing here looks at a test split.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from pneumo.bundle import load_bundle, save_bundle, update_meta
from pneumo.data import load_dataset, preprocess, read_image
from pneumo.data.manifest import write_manifest
from pneumo.decision import SHIFT_RULE, binary_metrics_at, choose, decide, shift_robust_threshold
from pneumo.errors import ConfigError, PneumoError
from pneumo.evaluation.shifts import SHIFTS, shifted_logits
from pneumo.inference.predictor import Predictor
from pneumo.models.ensemble import ensemble_from_models
from pneumo.training.finalize import metrics_at

MANIFEST = "training_manifest.csv"


def combine_members(
    members: Sequence[str | Path], out: str | Path, *, mirror: bool = True, rule: str = "sensitivity",
    target_sensitivity: float = 0.97, name: str | None = None,
) -> Path:
    """Write the ensemble of ``members`` (logits averaged, over both orientations when ``mirror``) to ``out``."""
    if not members:
        raise ConfigError("combine_members: no member bundles given")
    bundles = [load_bundle(m) for m in members]
    first = bundles[0]
    for b in bundles[1:]:
        if b.spec != first.spec:
            raise ConfigError(f"{b.path}: preprocessing {b.spec.to_dict()} differs from {first.path}'s "
                              f"{first.spec.to_dict()}; ensemble members must share one input")
        if b.meta["training_data"].get("fingerprint") != first.meta["training_data"].get("fingerprint"):
            raise ConfigError(f"{b.path} was trained on another split than {first.path}: its validation images "
                              "would not be held out for every member")
    out = Path(out)
    model = ensemble_from_models([b.model for b in bundles], mirror=mirror)
    arch = {"name": "ensemble", "kwargs": {"members": [dict(b.meta["architecture"]) for b in bundles],
                                           "mirror": mirror}}
    out.mkdir(parents=True, exist_ok=True)
    index = load_dataset(first.path / MANIFEST)  # paths resolved against the member's bundle
    write_manifest(index.samples, out / MANIFEST)
    training = {"members": [{"path": str(b.path), "weights_sha256": b.sha256, **b.meta.get("training", {})}
                            for b in bundles],
                "wall_time_s": float(sum(b.meta.get("training", {}).get("wall_time_s") or 0 for b in bundles)),
                "mirror_averaged": mirror}
    provisional = {"rule": rule, "logit": 0.0}
    save_bundle(out, model, architecture=arch, spec=first.spec, operating_point=provisional,
                training_data=dict(first.meta["training_data"]), name=name or out.name, extra={"training": training})
    val = index.select("val")
    predictor = Predictor(out, backend="torch", ood=False)
    pixels, bad = [], []
    for s in val:  # each file read once: the clean logits are the suite's "none" shift
        try:
            pixels.append(read_image(s.path)[0])
        except PneumoError as exc:
            bad.append((str(s.path), str(exc)))
    if bad:
        raise ConfigError(f"{len(bad)} validation images could not be read (first: {bad[0][0]}: {bad[0][1]})")
    by_shift = shifted_logits(predictor.logits, pixels, lambda a: preprocess(a, predictor.spec),
                              shifts=None if rule == SHIFT_RULE else {"none": SHIFTS["none"]})
    logits = by_shift["none"]
    y = np.array([s.label for s in val])
    op, table = choose(y, logits, "sensitivity" if rule == SHIFT_RULE else rule, target_sensitivity)
    if rule == SHIFT_RULE:
        op = shift_robust_threshold(y, by_shift, target_sensitivity)
        table[SHIFT_RULE] = dict(op)
    metrics = {"split": "validation carved from train by patient (the members' shared split), serving path",
               **metrics_at(y, logits, op["logit"])}
    extra = {"shift_suite": shift_table(y, by_shift, op["logit"])} if rule == SHIFT_RULE else {}
    update_meta(out, operating_point=op, thresholds=table, validation_metrics=metrics, **extra)
    return out


def shift_table(y: np.ndarray, by_shift: dict[str, np.ndarray], logit: float) -> dict:
    """Per shift of the suite: AUROC, and sensitivity / specificity at the operating point (the card's
    table); plus how often a left-right mirrored film keeps its decision."""
    rows = {}
    for name, v in by_shift.items():
        m = binary_metrics_at(y, decide(v, logit))
        rows[name] = {"auroc": float(roc_auc_score(y, v)), "sensitivity": m["sensitivity"],
                      "specificity": m["specificity"]}
    shifted = [r for k, r in rows.items() if k != "none"]
    mirror = "mirror (left-right)"
    return {
        "split": "validation carved from train by patient", "n_images": int(len(y)), "shifts": rows,
        "mean_sensitivity": float(np.mean([r["sensitivity"] for r in shifted])),
        "worst_sensitivity": float(min(r["sensitivity"] for r in shifted)),
        "mean_specificity": float(np.mean([r["specificity"] for r in shifted])),
        "worst_specificity": float(min(r["specificity"] for r in shifted)),
        "mirror_agreement": float(np.mean(decide(by_shift["none"], logit) == decide(by_shift[mirror], logit)))
        if mirror in by_shift else None,
    }
