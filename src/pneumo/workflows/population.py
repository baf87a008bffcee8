"""Fitting the population check of :mod:`pneumo.inference.population` into a bundle (``pneumo population fit``).

A workflow (not under :mod:`pneumo.inference`) because it reads the acquisition shifts of
:mod:`pneumo.evaluation.shifts`, and evaluation already imports inference.

Films used (nothing from them is stored but the fitted numbers and the source names):

- **in-distribution, fitted**: ``n_fit`` films of the bundle's training split, each as read and under one
  random acquisition shift;
- **in-distribution, thresholds**: the bundle's patient-grouped validation split (never fitted), as
  read and under *every* shift — the flag thresholds keep ``typical_target`` of these typical, pooled;
- **other populations**: ``external/labels.csv`` rows with ``set == cxr_other`` (other hospitals'
  frontal chest films), each as read, as a 224-px JPEG copy made like the training copies, and as that
  copy under a random shift — so "resized vs original" is on both sides of the boundary;
- **checks**: the data root's official ``val`` originals (how many stay typical), and one refit per
  external source with that source held out (how many of its films are flagged) — the figures in the
  ``population`` block and the card.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import time
from pathlib import Path

import numpy as np
from PIL import Image
from safetensors.numpy import save_file

from pneumo.bundle import POPULATION, load_bundle, record_derived, replace_readable, sha256_file, update_meta
from pneumo.data import load_dataset, read_image, resolve_data
from pneumo.errors import ConfigError, DatasetError
from pneumo.evaluation.shifts import SHIFTS
from pneumo.inference.population import METHOD, PopulationModel, film_features, stack_views
from pneumo.inference.predictor import Predictor

MANIFEST = "training_manifest.csv"
SHIFT_NAMES = [k for k in SHIFTS if k != "none"]
EXTERNAL_SET = "cxr_other"


def copy_like_training(pixels: np.ndarray) -> np.ndarray:
    """What the shared training copies went through: stretched to 224×224, 8-bit JPEG at quality 75."""
    im = Image.fromarray((np.clip(pixels, 0, 1) * 255).round().astype(np.uint8))
    im = im.resize((224, 224), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    im.convert("RGB").save(buf, "JPEG", quality=75)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("L"), dtype=np.float32) / 255.0


def fit_discriminator(x_in: np.ndarray, x_out: np.ndarray, c: float = 0.01):
    """Standardised L2 logistic regression, classes balanced: ``(mean, scale, coef, intercept)``."""
    from sklearn.linear_model import LogisticRegression

    x = np.vstack([x_in, x_out])
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale < 1e-8] = 1.0
    lr = LogisticRegression(C=c, class_weight="balanced", max_iter=3000)
    lr.fit((x - mean) / scale, np.r_[np.zeros(len(x_in)), np.ones(len(x_out))])
    return mean, scale, lr.coef_[0].astype(np.float64), float(lr.intercept_[0])


def choose_thresholds(p_cal: np.ndarray, d_cal: np.ndarray, typical_target: float,
                      gate_refused: np.ndarray | None = None) -> tuple[float, float]:
    """``(flag_probability, flag_distance)`` keeping ≥ ``typical_target`` of the calibration films typical
    (films the gate refuses count against it): the distance keeps its 99.5th percentile, the probability
    takes the rest of the budget."""
    fd = float(np.quantile(d_cal, 0.995, method="higher"))
    keep = d_cal <= fd if gate_refused is None else (d_cal <= fd) & ~gate_refused
    inside = np.sort(p_cal[keep])
    need = int(np.ceil(typical_target * len(p_cal)))
    if need > len(inside):
        raise DatasetError(f"population thresholds: the distance alone flags more than {1 - typical_target:.1%}")
    return float(max(inside[need - 1], 1e-6)), fd


def build(fit_in: dict, cal_in: dict, ext: dict, typical_target: float = 0.975, c: float = 0.01,
          gate_threshold: float = 0.5) -> PopulationModel:
    """Fit the model from feature dicts (:func:`film_features`; ``ext`` rows are other populations)."""
    x_in, x_out = (stack_views(d["embedding"], d["stats"], d["gate"]) for d in (fit_in, ext))
    mean, scale, coef, b = fit_discriminator(x_in, x_out, c)
    model = PopulationModel(mean, scale, coef, b, 0.5, 1.0, np.inf, 1.0)
    p_cal = model.p_other(stack_views(cal_in["embedding"], cal_in["stats"], cal_in["gate"]))
    model.flag_probability, model.flag_distance = choose_thresholds(p_cal, cal_in["ood_score"], typical_target,
                                                                    cal_in["gate_score"] > gate_threshold)
    chest_d = np.concatenate([cal_in["ood_score"], ext["ood_score"], fit_in["ood_score"]])
    chest_g = np.concatenate([cal_in["gate_score"], ext["gate_score"]])
    model.refuse_distance = float(1.5 * chest_d.max())
    model.refuse_gate = float(min(max(0.1, np.quantile(chest_g, 0.995)), 0.8 * gate_threshold))
    return model


def rates(model: PopulationModel, feats: dict) -> dict:
    """typical / atypical / far fractions of the films in ``feats`` (gate refusals counted apart)."""
    refused_by_gate = feats["gate_score"] > 0.5
    a = model.assess(stack_views(feats["embedding"], feats["stats"], feats["gate"]), feats["ood_score"],
                     feats["gate_score"])
    st = np.array([x.status for x in a])
    n = len(st)
    return {"n": n, "typical": float(np.mean((st == "typical") & ~refused_by_gate)),
            "flagged": float(np.mean((st == "atypical") & ~refused_by_gate)),
            "refused": float(np.mean((st == "far") | refused_by_gate))}


def _subset(d: dict, mask: np.ndarray) -> dict:
    return {k: v[mask] for k, v in d.items()}


def held_out_sources(fit_in: dict, cal_in: dict, ext: dict, sources: np.ndarray, kinds: np.ndarray,
                     typical_target: float, c: float) -> dict:
    """Refit without each source; that source's films *as read* → their rates (the honest figure)."""
    out = {}
    for src in sorted(set(sources.tolist())):
        model = build(fit_in, cal_in, _subset(ext, sources != src), typical_target, c)
        out[src] = rates(model, _subset(ext, (sources == src) & (kinds == "original")))
    return out


def fit_population(bundle_dir: str | Path, data: str | Path | None = None, external: str | Path | None = None,
                   n_fit: int = 1500, typical_target: float = 0.975, c: float = 0.01, shifts: list[str] | None = None,
                   progress: bool = False, seed: int = 0) -> dict:
    """Fit and save the population model; returns the ``population`` block written to ``pneumo.json``."""
    started = time.monotonic()
    bundle = load_bundle(bundle_dir)
    if external is None:
        raise ConfigError("population fit needs --external DIR (other hospitals' chest films, labels.csv "
                          f"with set == {EXTERNAL_SET}) or $PNEUMO_EXTERNAL")
    pred = Predictor(bundle)
    if pred.ood_detector is None:
        raise ConfigError(f"{bundle.path}: no fitted ood.safetensors; the population check builds on it")
    manifest = bundle.path / MANIFEST
    index = load_dataset(manifest if manifest.exists() else resolve_data(data))
    train, val = index.select("train"), index.select("val")
    if len(train) < 20 or len(val) < 10:
        raise DatasetError(f"population fit needs ≥20 train and ≥10 val films, got {len(train)} and {len(val)}")
    rng = np.random.default_rng(seed)
    names = list(shifts if shifts is not None else SHIFT_NAMES)
    if len(train) > n_fit:
        train = [train[i] for i in sorted(rng.choice(len(train), n_fit, replace=False))]
    fit_px = []
    for s in train:
        p = read_image(s.path)[0]
        fit_px += [p, SHIFTS[str(rng.choice(names))](p)] if names else [p]
    cal_px = [SHIFTS[n](p) for p in (read_image(s.path)[0] for s in val) for n in ["none", *names]]
    ext_px, sources, kinds = external_films(Path(external), names, rng)
    fit_in = film_features(pred, fit_px, progress="population: fit films" if progress else False)
    cal_in = film_features(pred, cal_px, progress="population: val films × shifts" if progress else False)
    ext_f = film_features(pred, ext_px, progress="population: external films" if progress else False)
    model = build(fit_in, cal_in, ext_f, typical_target, c, pred.gate.threshold if pred.gate else 0.5)
    block = describe(model, fit_in, cal_in, ext_f, sources, kinds, typical_target, c, names)
    block["fit_films"] = {"in_population": f"{len(train)} films of {MANIFEST if manifest.exists() else 'train'} "
                          "split 'train', each as read and under one random shift",
                          "thresholds": f"{len(val)} films of split 'val' (patient-grouped, never fitted) × "
                          f"{1 + len(names)} shift conditions",
                          "other_populations": f"{int(np.sum(kinds == 'original'))} frontal chest films of "
                          f"{len(set(sources.tolist()))} sources, each as read, as a 224-px copy, and shifted"}
    block["held_out_sources"] = held_out_sources(fit_in, cal_in, ext_f, sources, kinds, typical_target, c)
    block["val_originals"] = val_originals(pred, model, data)
    block["fit_seconds"] = round(time.monotonic() - started, 1)
    save_population(bundle.path, model, block)
    return block


def external_films(root: Path, names: list[str], rng) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Other hospitals' frontal chest films: as read, as a training-like copy, and that copy shifted."""
    labels = root / "labels.csv"
    if not labels.is_file():
        raise ConfigError(f"{root}: no labels.csv (expected columns path,set,source_repo)")
    with labels.open(newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("set") == EXTERNAL_SET]
    if len(rows) < 20:
        raise DatasetError(f"{labels}: {len(rows)} rows with set == {EXTERNAL_SET}; the population check needs ≥20")
    films, sources, kinds = [], [], []
    for r in rows:
        p = read_image(root / r["path"])[0]
        copy = copy_like_training(p)
        variants = [("original", p), ("copy224", copy)]
        if names:
            variants.append(("copy224+shift", SHIFTS[str(rng.choice(names))](copy)))
        for kind, film in variants:
            films.append(film)
            sources.append(r.get("source_repo", "unknown").split("@")[0])
            kinds.append(kind)
    return films, np.array(sources), np.array(kinds)


def val_originals(pred: Predictor, model: PopulationModel, data) -> dict | None:
    """How the data root's official ``val`` originals (full resolution, never fitted) fare, if present."""
    try:
        samples = load_dataset(resolve_data(data)).select("val")
    except Exception:  # noqa: BLE001 - no data root: the check is reported as absent, not failed
        return None
    if not samples:
        return None
    return rates(model, film_features(pred, [read_image(s.path)[0] for s in samples]))


def describe(model: PopulationModel, fit_in: dict, cal_in: dict, ext: dict, sources: np.ndarray, kinds: np.ndarray,
             typical_target: float, c: float, names: list[str]) -> dict:
    n_cond = 1 + len(names)
    cal_rates = rates(model, cal_in)
    st = model.assess(stack_views(cal_in["embedding"], cal_in["stats"], cal_in["gate"]), cal_in["ood_score"],
                      cal_in["gate_score"])
    typ = np.array([a.status == "typical" for a in st]).reshape(-1, n_cond)
    per_shift = {n: float(typ[:, i].mean()) for i, n in enumerate(["none", *names])}
    return {
        "method": METHOD,
        "flag_probability": model.flag_probability,
        "flag_distance": model.flag_distance,
        "refuse_distance": model.refuse_distance,
        "refuse_gate": model.refuse_gate,
        "typical_target": typical_target,
        "regularisation_C": c,
        "n_features": int(len(model.mean)),
        "val_shifted": cal_rates,
        "val_typical_by_shift": per_shift,
        "external_in_fit": rates(model, _subset(ext, kinds == "original")),
        "external_sources": sorted(set(sources.tolist())),
        "shifts": ["none", *names],
        "fitted": True,
        "fitted_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def save_population(path: Path, model: PopulationModel, block: dict) -> None:
    tmp = path / f".{POPULATION}.tmp"
    save_file(model.tensors(), str(tmp))
    replace_readable(tmp, path / POPULATION)
    block["sha256"] = sha256_file(path / POPULATION)
    update_meta(path, population=block)
    record_derived(path, POPULATION)
