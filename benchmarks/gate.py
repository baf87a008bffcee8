"""How well the chest-X-ray gate (question 1) and the population check (question 2) do, by held-out source.

    python benchmarks/gate.py [--data ROOT] [--external DIR] [--bundle models/default] [--cache F.npz] [--json OUT]

1. Leave one source out: for every external source (and the scikit-image / pydicom package images)
   the gate is refitted without that source (nor negatives derived from it) and scored on that
   source's original images: acceptance of chest X-rays, refusal of the rest, the failures by name.
2. The gate fitted on everything, on images it never saw: the held-out 20 % of training patients,
   the 16 official val originals, those films rotated 90°/180°/270°, upside down or inverted, and
   squashed to 32×10000 / 4000×48 px.
3. With ``--bundle``: the population answer (typical/atypical) of the bundle's Predictor on the
   held-out training films, the 16 originals and the external chest X-rays.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

from pneumo.data import load_dataset, read_image, resolve_data
from pneumo.inference import Predictor
from pneumo.inference.gate import (
    DEFAULT_THRESHOLD,
    EXTERNAL_ENV,
    features_of,
    split_chest,
    train_classifier,
    training_items,
)
from pneumo.inference.gate_corpus import Item, read_items


def loso(items, x, y, classifier: str, thr: float) -> dict:
    src = np.array([i.source for i in items])
    orig = np.array([i.original for i in items])
    out = {}
    for s in sorted({i.source for i in items if i.original and i.source != "dataset"}):
        fit = (src != s) & (src != f"derived:{s}")
        gate = train_classifier(x[fit], y[fit], classifier)
        te = (src == s) & orig
        sc = gate.score(x[te])
        pos = y[te]
        names = [items[i] for i in np.where(te)[0]]
        out[s] = {
            "n_chest": int(pos.sum()), "chest_accepted": int((sc[pos] <= thr).sum()),
            "n_other": int((~pos).sum()), "other_refused": int((sc[~pos] > thr).sum()),
            "failures": [f"{it.kind}:{it.name}:{v:.2f}" for it, v, p in zip(names, sc, pos, strict=True)
                         if (v > thr) == bool(p)],
        }
        print(s, {k: v for k, v in out[s].items() if k != "failures"}, out[s]["failures"][:6], flush=True)
    return out


def orientation_and_geometry(gate, val_items, originals) -> dict:
    thr = gate.threshold
    sub = val_items[:300]
    res = {}
    for name, f in {"rot90": lambda a: np.rot90(a, 1), "rot180": lambda a: np.rot90(a, 2),
                    "rot270": lambda a: np.rot90(a, 3), "upside_down(flipud)": lambda a: a[::-1],
                    "inverted": lambda a: 1.0 - a}.items():
        sc = gate.score(features_of([Item(np.ascontiguousarray(f(i.pixels)), False, "", "") for i in sub]))
        res[name] = {"n": len(sub), "refused": int((sc > thr).sum())}
    geo = {}
    for p in originals[:4]:
        im = Image.fromarray(read_image(p)[0], mode="F")
        for w, h in ((10000, 32), (48, 4000)):
            _, why = gate.check(np.asarray(im.resize((w, h), Image.Resampling.BILINEAR), dtype=np.float32))
            geo[f"{Path(p).name}@{w}x{h}"] = why is not None
    res["extreme_geometry_refused"] = f"{sum(geo.values())}/{len(geo)}"
    return res


def population(bundle: str, paths: dict[str, list[str]]) -> dict:
    pred = Predictor(bundle)
    out = {}
    for name, ps in paths.items():
        c = defaultdict(int)
        for p in (o.prediction for o in pred.predict(ps, batch_size=32, on_error="record")):
            if p is None or p.population_score is None:
                c["error" if p is None else "no population score"] += 1
                continue
            # question 2 on its own (the same answer a gated bundle gives every film its gate accepts)
            c["atypical" if p.population_score > pred.ood_detector.threshold else "typical"] += 1
            c["refused_by_gate_or_geometry"] += bool(p.ood and pred.gate is not None)
        out[name] = dict(c) | {"n": len(ps)}
        print("population", name, out[name], flush=True)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None)
    ap.add_argument("--external", default=os.environ.get(EXTERNAL_ENV))
    ap.add_argument("--bundle", default=None, help="Also report the population answer of this bundle.")
    ap.add_argument("--classifier", default="mlp", choices=["mlp", "lr"])
    ap.add_argument("--cache", type=Path, default=None, help="Feature cache (.npz) between runs.")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    if not args.external:
        print(f"no external folder: pass --external or set ${EXTERNAL_ENV}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    items, val_items, ext = training_items(args.data, args.external)
    if args.cache and args.cache.exists():
        x = np.load(args.cache)["x"]
    else:
        x = features_of(items)
        if args.cache:
            np.savez(args.cache, x=x)
    y = np.array([i.positive for i in items])
    print(f"{len(items)} training items ({y.sum()} chest), features in {time.perf_counter() - t0:.0f} s", flush=True)
    thr = DEFAULT_THRESHOLD
    report: dict = {"classifier": args.classifier, "threshold": thr,
                    "leave_one_source_out": loso(items, x, y, args.classifier, thr)}
    gate = train_classifier(x, y, args.classifier)
    gate.threshold = thr
    ds = load_dataset(resolve_data(args.data))
    originals = [str(s.path) for s in ds.select("val")]
    vs = gate.score(features_of(val_items))
    os_ = gate.score(features_of(read_items(originals, True, "val", "val")))
    report["held_out_training_patients"] = {"n": len(vs), "accepted": int((vs <= thr).sum()),
                                            "score_q99.5": float(np.quantile(vs, 0.995))}
    report["val_originals"] = {"n": len(os_), "accepted": int((os_ <= thr).sum()), "max_score": float(os_.max())}
    report["orientation"] = orientation_and_geometry(gate, val_items, originals)
    print({k: report[k] for k in ("held_out_training_patients", "val_originals", "orientation")}, flush=True)
    if args.bundle:
        _, val = split_chest(ds.select("train"))
        ext_chest = [str(Path(args.external) / p) for p in _chest_paths(args.external)]
        report["population"] = population(args.bundle, {"held_out_training_patients": [str(s.path) for s in val],
                                                        "val_originals": originals, "external_chest": ext_chest})
    report["wall_s"] = round(time.perf_counter() - t0, 1)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    print(f"done in {report['wall_s']} s")
    return 0


def _chest_paths(external: str) -> list[str]:
    import csv

    with (Path(external) / "labels.csv").open(newline="") as fh:
        return [r["path"] for r in csv.DictReader(fh) if r["set"] == "cxr_other"]


if __name__ == "__main__":
    sys.exit(main())
