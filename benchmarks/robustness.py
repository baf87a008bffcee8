"""How far a bundle's saved operating point moves when its validation images are shifted the way
new hospitals' films differ: aspect ratio, sharpness, resolution, exposure, contrast, JPEG, noise.

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
import io
import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from pneumo.data import load_manifest, preprocess, read_image
from pneumo.evaluation.metrics import point_metrics
from pneumo.inference import Predictor


def _pil(a: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(a * 255.0 + 0.5, 0, 255).astype(np.uint8))


def _arr(im: Image.Image) -> np.ndarray:
    return np.asarray(im, dtype=np.float32) / 255.0


def _crop(a: np.ndarray, fy: float, fx: float) -> np.ndarray:
    """Central crop keeping ``fy``/``fx`` of the height/width: once stretched back to a square, the
    anatomy's aspect changes by ``fx / fy`` — as a wider or taller original would have."""
    h, w = a.shape
    dy, dx = int(round(h * (1 - fy) / 2)), int(round(w * (1 - fx) / 2))
    return a[dy : h - dy, dx : w - dx]


def _jpeg(a: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    _pil(a).save(buf, "JPEG", quality=quality)
    return _arr(Image.open(io.BytesIO(buf.getvalue())).convert("L"))


def _down_up(a: np.ndarray, f: float) -> np.ndarray:
    h, w = a.shape
    im = _pil(a).resize((max(1, round(w * f)), max(1, round(h * f))), Image.Resampling.BILINEAR)
    return _arr(im.resize((w, h), Image.Resampling.BILINEAR))


def _noise(a: np.ndarray, sd: float) -> np.ndarray:
    rng = np.random.default_rng(int(a.size) + int(a[0, 0] * 1000))
    return np.clip(a + rng.normal(0.0, sd, a.shape), 0.0, 1.0).astype(np.float32)


SHIFTS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "none": lambda a: a,
    "wider original (aspect ×0.83)": lambda a: _crop(a, 0.83, 1.0),
    "taller original (aspect ×1.2)": lambda a: _crop(a, 1.0, 0.83),
    "tighter framing (zoom ×1.2)": lambda a: _crop(a, 0.83, 0.83),
    "blur σ 1 px": lambda a: _arr(_pil(a).filter(ImageFilter.GaussianBlur(1.0))),
    "unsharp mask": lambda a: _arr(_pil(a).filter(ImageFilter.UnsharpMask(2, 100, 0))),
    "half resolution": lambda a: _down_up(a, 0.5),
    "darker (γ 1.4)": lambda a: a**1.4,
    "brighter (γ 0.7)": lambda a: a**0.7,
    "low contrast (×0.75)": lambda a: 0.5 + (a - 0.5) * 0.75,
    "JPEG q 30": lambda a: _jpeg(a, 30),
    "noise σ 0.03": lambda a: _noise(a, 0.03),
}


def score(bundle: str | Path, manifest: Path, split: str = "val") -> dict:
    index = load_manifest(manifest)
    samples = [s for s in index.samples if s.split == split]
    if not samples:
        raise SystemExit(f"{manifest}: no rows with split {split!r}")
    predictor = Predictor(bundle, ood=False)
    y = np.array([s.label for s in samples])
    raw = [read_image(s.path)[0] for s in samples]
    thr = predictor.bundle.threshold_logit
    rows = {}
    for name, fn in SHIFTS.items():
        batch = np.stack([preprocess(fn(a), predictor.spec) for a in raw])
        logit = np.concatenate([predictor.logits(batch[i : i + 128]) for i in range(0, len(batch), 128)])
        m = point_metrics(y, logit, predictor.probabilities(logit), thr)
        rows[name] = {
            **{k: m[k] for k in ("auroc", "sensitivity", "specificity")},
            "normal_logit_median": float(np.median(logit[y == 0])),
            "pneumonia_logit_median": float(np.median(logit[y == 1])),
        }
    shifted = [r for k, r in rows.items() if k != "none"]
    summary = {
        "mean_auroc": float(np.mean([r["auroc"] for r in shifted])),
        "mean_sensitivity": float(np.mean([r["sensitivity"] for r in shifted])),
        "mean_specificity": float(np.mean([r["specificity"] for r in shifted])),
        "worst_specificity": float(min(r["specificity"] for r in shifted)),
        "worst_sensitivity": float(min(r["sensitivity"] for r in shifted)),
    }
    return {"bundle": str(bundle), "threshold_logit": thr, "n": len(samples), "shifts": rows, "summary": summary}


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
              f"mean specificity {s['mean_specificity']:.3f} (worst {s['worst_specificity']:.3f})"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bundles", nargs="+")
    ap.add_argument("--manifest", type=Path, required=True, help="a run's manifest.csv (its val split is used)")
    ap.add_argument("--split", default="val")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    results = [score(b, args.manifest, args.split) for b in args.bundles]
    for r in results:
        print(to_markdown(r), end="\n\n")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
