"""Features for fitting and measuring the population check (issue 21): one cached ``.npz`` per film set.

For every film (and some acquisition-shifted copies of it) it stores what the population model of
:mod:`pneumo.inference.population` reads — the model embedding, :func:`image_statistics` and
:func:`gate_features` — plus the gate score, the logit and the bundle's current population score.

Sets: ``fit``/``val`` — the bundle's training manifest, train and patient-grouped validation split
(224-px copies); ``val_orig`` — the 16 official val originals (full resolution), as read and as a
224-px JPEG copy like the training films; ``ext`` — external_dev frontal chest films, as read and as
a 224-px copy (so "resized vs original" is never what separates the classes); ``nonchest`` —
external_dev non-chest images plus scikit-image's sample images.

    PYTHONPATH=src python benchmarks/population_features.py [BUNDLE] --data ROOT --external DIR --out .cache/pop
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

from pneumo.data import load_dataset, read_image, resolve_data
from pneumo.evaluation.shifts import SHIFTS
from pneumo.inference import Predictor
from pneumo.inference.population import film_features
from pneumo.workflows.population import copy_like_training

# Shifts a film from the validated hospital may arrive under (pneumo.evaluation.shifts); the measure
# of "stays typical" uses every one of them.
TRAIN_SHIFTS = [k for k in SHIFTS if k != "none"]


def featurise(pred: Predictor, films: list[np.ndarray], tag: str) -> dict[str, np.ndarray]:
    out = film_features(pred, films, batch_size=64, progress=tag)
    return out


def save(dest: Path, feats: dict, **extra) -> None:
    np.savez_compressed(dest, **feats, **{k: np.asarray(v) for k, v in extra.items()})
    print(f"wrote {dest} ({len(next(iter(feats.values())))} rows)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("bundle", nargs="?", default="models/default")
    ap.add_argument("--data", default=None)
    ap.add_argument("--external", required=True)
    ap.add_argument("--out", default=".cache/pop")
    ap.add_argument("--n-fit", type=int, default=1500)
    ap.add_argument("--sets", default="fit,val,val_orig,ext,nonchest")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pred = Predictor(args.bundle, threads=2)
    rng = np.random.default_rng(0)
    sets = args.sets.split(",")
    manifest = Path(args.bundle) / "training_manifest.csv"
    index = load_dataset(manifest)
    if "fit" in sets or "val" in sets:
        for split, n in (("train", args.n_fit), ("val", None)):
            tag = "fit" if split == "train" else "val"
            if tag not in sets:
                continue
            samples = index.select(split)
            if n is not None and len(samples) > n:
                samples = [samples[i] for i in sorted(rng.choice(len(samples), n, replace=False))]
            pix = [read_image(s.path)[0] for s in samples]
            films, shift, group = [], [], []
            for s, p in zip(samples, pix, strict=True):
                names = ["none", *TRAIN_SHIFTS] if tag == "val" else ["none", str(rng.choice(TRAIN_SHIFTS))]
                for name in names:
                    films.append(SHIFTS[name](p))
                    shift.append(name)
                    group.append(s.group)
            save(out / f"{tag}.npz", featurise(pred, films, tag), shift=shift, group=group)
    if "val_orig" in sets:
        vs = load_dataset(resolve_data(args.data)).select("val")
        pix = [read_image(s.path)[0] for s in vs]
        films = pix + [copy_like_training(p) for p in pix]
        kind = ["original"] * len(pix) + ["copy224"] * len(pix)
        save(out / "val_orig.npz", featurise(pred, films, "val originals"), kind=kind,
             path=[str(s.path) for s in vs] * 2)
    ext = Path(args.external)
    with (ext / "labels.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    if "ext" in sets:
        chest = [r for r in rows if r["set"] == "cxr_other"]
        films, kind, src, path, shift = [], [], [], [], []
        for r in chest:
            p = read_image(ext / r["path"])[0]
            name = str(rng.choice(TRAIN_SHIFTS))
            for k, f in (("original", p), ("copy224", copy_like_training(p)),
                         ("copy224+shift", SHIFTS[name](copy_like_training(p)))):
                films.append(f)
                kind.append(k)
                src.append(r["source_repo"].split("@")[0])
                path.append(r["path"])
                shift.append(name if "shift" in k else "none")
        save(out / "ext.npz", featurise(pred, films, "external chest"), kind=kind, source=src, path=path, shift=shift)
    if "nonchest" in sets:
        films, path = [], []
        for r in rows:
            if r["set"] != "cxr_other":
                try:
                    films.append(read_image(ext / r["path"])[0])
                    path.append(r["path"])
                except Exception as exc:  # noqa: BLE001 - a file the reader refuses is refused anyway
                    print("skip", r["path"], exc)
        import skimage.data as skd

        for name in ("coffee", "camera", "astronaut", "chelsea", "moon", "page", "text", "coins", "horse",
                     "rocket", "clock", "retina", "brick", "grass", "gravel"):
            a = np.asarray(getattr(skd, name)(), dtype=np.float32)
            a = a.mean(axis=2) if a.ndim == 3 else a
            films.append(a / max(float(a.max()), 1.0) if a.max() > 1 else a)
            path.append(f"skimage:{name}")
        save(out / "nonchest.npz", featurise(pred, films, "non-chest"), path=path)


if __name__ == "__main__":
    main()
