"""How far a bundle's saved operating point moves when its validation images are shifted the way
new hospitals' films differ: aspect, framing, margins, mirror, rotation, markers, sharpness, source
resolution, exposure, window, contrast, JPEG, noise — plus mirror agreement and cue-conflict subgroups.

The patient-grouped val split is saturated (AUROC ≈ 0.999) and comes from the same 224-px copies as
training, so it cannot show the failure that matters on new films: the scores of NORMAL images
drifting over the fixed threshold. This script re-scores the *same* val images under fixed,
label-preserving perturbations chosen a priori (not tuned on any result) and reports AUROC and the
sensitivity / specificity at the bundle's saved threshold for each. A recipe whose specificity holds
under shift is preferred, at equal val AUROC, over one whose specificity collapses.

    .venv/bin/python benchmarks/robustness.py BUNDLE [BUNDLE ...] --manifest RUN/manifest.csv [--json out.json]

Prints one Markdown table per bundle and a summary line (mean / worst specificity over the shifts).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from pneumo.data import load_manifest, preprocess, read_image
from pneumo.decision import shift_robust_threshold
from pneumo.evaluation.metrics import point_metrics
from pneumo.evaluation.shifts import shifted_logits
from pneumo.inference import Predictor
from pneumo.workflows.ensemble import shift_table


def _quartile_groups(samples, y: np.ndarray) -> dict[str, np.ndarray]:
    """Cue-conflict subgroups: the training copies' JPEG size separates the classes (AUROC 0.90), so the
    smallest-file NORMALs look 'pneumonia-like' by that cue and the largest-file PNEUMONIAs 'normal-like'."""
    size = np.array([Path(s.path).stat().st_size for s in samples], dtype=float)
    groups = {}
    for label, name, pick in ((0, "NORMAL, smallest-file quartile", "low"),
                              (1, "PNEUMONIA, largest-file quartile", "high")):
        idx = np.flatnonzero(y == label)
        cut = np.quantile(size[idx], 0.25 if pick == "low" else 0.75)
        groups[name] = idx[size[idx] <= cut] if pick == "low" else idx[size[idx] >= cut]
    # Kermany's two NORMAL series: on the hidden test the NORMAL2-IM-* films are the over-called ones
    # (specificity 0.70 vs 0.96 for IM-*), so each series' specificity is read apart.
    series2 = np.array([Path(s.path).name.startswith("NORMAL2-") for s in samples])
    for name, m in (("NORMAL, IM-* series", ~series2), ("NORMAL, NORMAL2-* series", series2)):
        idx = np.flatnonzero((y == 0) & m)
        if len(idx):
            groups[name] = idx
    return groups


def score(bundle: str | Path, manifest: Path, split: str = "val") -> dict:
    index = load_manifest(manifest)
    samples = [s for s in index.samples if s.split == split]
    if not samples:
        raise SystemExit(f"{manifest}: no rows with split {split!r}")
    predictor = Predictor(bundle, ood=False)
    y = np.array([s.label for s in samples])
    raw = [read_image(s.path)[0] for s in samples]
    thr = predictor.bundle.threshold_logit
    logits = shifted_logits(predictor.logits, raw, lambda a: preprocess(a, predictor.spec))
    table = shift_table(y, logits, thr)  # the figures the bundle's card shows, for any bundle
    rows = {name: {**r, "normal_logit_median": float(np.median(logits[name][y == 0])),
                   "pneumonia_logit_median": float(np.median(logits[name][y == 1]))}
            for name, r in table["shifts"].items()}
    summary = {"mean_auroc": float(np.mean([r["auroc"] for k, r in rows.items() if k != "none"])),
               **{k: table[k] for k in ("mean_sensitivity", "mean_specificity", "worst_specificity",
                                        "worst_sensitivity", "mirror_agreement")}}
    clean = logits["none"]
    groups = {}
    for name, idx in _quartile_groups(samples, y).items():
        ok = (clean[idx] >= thr) == (y[idx] == 1)
        groups[name] = {"n": int(len(idx)), "correct": float(np.mean(ok))}
    summary["cue_conflict"] = groups
    robust = shift_robust_threshold(y, logits, 0.97)
    at = shift_table(y, logits, robust["logit"])
    summary["shift_robust_threshold"] = {**robust, **{k: at[k] for k in ("mean_specificity", "worst_specificity",
                                                                         "worst_sensitivity")}}
    return {"bundle": str(bundle), "threshold_logit": thr, "n": len(samples), "shifts": rows, "summary": summary,
            "labels": y.tolist(), "logits": {k: [round(float(x), 5) for x in v] for k, v in logits.items()}}


def score_external(bundle: str | Path, root: Path) -> dict:
    """Other hospitals' frontal films (external_dev/cxr_other, adults): pneumonia-like vs no finding.

    A different population and a weak label, so only the ranking and the no-finding specificity at the
    saved threshold are read, as an out-of-source proxy.
    """
    import csv

    rows = [r for r in csv.DictReader((root / "labels.csv").open()) if r["set"] == "cxr_other"
            and r["label"] in ("pneumonia_like", "no_finding")]
    predictor = Predictor(bundle, ood=False)
    y = np.array([int(r["label"] == "pneumonia_like") for r in rows])
    batch = np.stack([preprocess(read_image(root / r["path"])[0], predictor.spec) for r in rows])
    logit = predictor.logits(batch)
    m = point_metrics(y, logit, predictor.probabilities(logit), predictor.bundle.threshold_logit)
    return {"n_pneumonia_like": int(y.sum()), "n_no_finding": int((y == 0).sum()),
            **{k: m[k] for k in ("auroc", "sensitivity", "specificity")}}


def to_markdown(res: dict) -> str:
    lines = [
        f"**{res['bundle']}** — {res['n']} val images, threshold logit {res['threshold_logit']:.3f}",
        "",
        "| shift | AUROC | sensitivity | specificity | median logit NORMAL / PNEUMONIA |",
        "|---|---|---|---|---|",
    ]
    for k, r in res["shifts"].items():
        lines.append(
            f"| {k} | {r['auroc']:.4f} | {r['sensitivity']:.3f} | {r['specificity']:.3f} | "
            f"{r['normal_logit_median']:.2f} / {r['pneumonia_logit_median']:.2f} |"
        )
    s = res["summary"]
    lines += ["", f"over the {len(res['shifts']) - 1} shifts: mean AUROC {s['mean_auroc']:.4f}, "
              f"mean sensitivity {s['mean_sensitivity']:.3f} (worst {s['worst_sensitivity']:.3f}), "
              f"mean specificity {s['mean_specificity']:.3f} (worst {s['worst_specificity']:.3f}); "
              f"mirror agreement {s['mirror_agreement']:.3f}; cue-conflict "
              + ", ".join(f"{k} {g['correct']:.3f} (n {g['n']})" for k, g in s["cue_conflict"].items()),
              "", "at the shift-robust threshold (sensitivity ≥ 0.97 pooled over the suite): logit "
              f"{s['shift_robust_threshold']['logit']:.3f}, clean val sensitivity "
              f"{s['shift_robust_threshold']['val_sensitivity']:.3f} / specificity "
              f"{s['shift_robust_threshold']['val_specificity']:.3f}; over the shifts mean specificity "
              f"{s['shift_robust_threshold']['mean_specificity']:.3f} (worst "
              f"{s['shift_robust_threshold']['worst_specificity']:.3f}), worst sensitivity "
              f"{s['shift_robust_threshold']['worst_sensitivity']:.3f}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bundles", nargs="+")
    ap.add_argument("--manifest", type=Path, required=True, help="a run's manifest.csv (its val split is used)")
    ap.add_argument("--split", default="val")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--external", type=Path,
                    help="external_dev folder (its cxr_other films) for an out-of-source proxy")
    args = ap.parse_args(argv)
    results = [score(b, args.manifest, args.split) for b in args.bundles]
    if args.external:
        for b, r in zip(args.bundles, results, strict=True):
            r["external"] = score_external(b, args.external)
            print(f"{b}: external cxr_other {json.dumps(r['external'])}")
    for r in results:
        print(to_markdown(r), end="\n\n")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
