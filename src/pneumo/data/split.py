"""Patient-grouped, class-stratified splits: no patient in two splits, every split's class ratio close
to the whole, reproducible per seed.

Rules (``patient_split``):
- patients are :attr:`Sample.group` (split-qualified file-name ids), never single images;
- an official ``test`` split present in the input is kept untouched (``resplit_test=True`` pools it);
  then only ``val`` is carved from the pool, and ``test`` is ignored;
- the official ``val`` folder (16 images in Kermany's release) is kept apart as ``val_official`` so it
  can never leak into train or the new val (``resplit_test=True`` pools it too);
- any other named split (e.g. ``val_official`` from an earlier manifest) is kept as it is.

Algorithm: greedy assignment of whole patients, largest first (ties shuffled by ``seed``), each to the
split that is least full relative to its per-class targets; a few seeded restarts keep the best.
Each created split's PNEUMONIA share is then within ``RATIO_TOLERANCE`` (2 points) of the pool's for any
reasonably sized input (hundreds of patients); when that cannot be met a ``UserWarning`` says so.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections import defaultdict

import numpy as np

from pneumo.data.discover import Sample, _split_order
from pneumo.errors import ConfigError, DatasetError

RATIO_TOLERANCE = 0.02
RESTARTS = 8


def _check_fractions(**fractions: float) -> None:
    for name, f in fractions.items():
        if not 0.0 <= f < 1.0:
            raise ConfigError(f"--{name} must be in [0, 1), got {f}")
    if sum(fractions.values()) >= 1.0:
        raise ConfigError(f"split fractions {fractions} leave nothing for train")


def _groups(samples: list[Sample]) -> tuple[list[str], np.ndarray]:
    """Group keys and a ``G×2`` array of (NORMAL, PNEUMONIA) image counts per group."""
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for s in samples:
        counts[s.group][s.label] += 1
    keys = sorted(counts)
    return keys, np.array([counts[k] for k in keys], dtype=np.int64).reshape(-1, 2)


def _greedy(sizes: np.ndarray, fractions: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Assign each group (rows of ``sizes``, G×2 class counts) to a part; returns the part index per group.

    Largest groups first; each goes to the part that would be least full relative to its per-class target,
    so every part fills in proportion and ends with a similar mix of large and small patients.
    """
    target = fractions[:, None] * sizes.sum(axis=0)[None, :]  # K×2 images per class
    have = np.zeros_like(target)
    order = sorted(rng.permutation(len(sizes)).tolist(), key=lambda g: -int(sizes[g].sum()))
    out = np.empty(len(sizes), dtype=np.int64)
    with np.errstate(divide="ignore", invalid="ignore"):
        for g in order:
            fill = np.nan_to_num((have + sizes[g]) / target, nan=np.inf, posinf=np.inf) @ sizes[g]
            fill[fractions == 0] = np.inf
            k = int(np.argmin(fill))
            out[g] = k
            have[k] += sizes[g]
    return out


def _ratio_error(sizes: np.ndarray, parts: np.ndarray, fractions: np.ndarray) -> float:
    whole = sizes[:, 1].sum() / max(sizes.sum(), 1)
    worst = 0.0
    for k in np.flatnonzero(fractions > 0):
        part = sizes[parts == k]
        n = part.sum()
        worst = max(worst, abs(part[:, 1].sum() / n - whole) if n else 1.0)
    return float(worst)


def assign_groups(samples: list[Sample], fractions: list[float], seed: int) -> dict[str, int]:
    """Group key → part index (0..K-1), parts sized by ``fractions``; the best of a few seeded restarts."""
    keys, sizes = _groups(samples)
    fr = np.asarray(fractions, dtype=np.float64)
    if len(keys) < int((fr > 0).sum()):
        raise DatasetError(f"only {len(keys)} patients: too few to split into {int((fr > 0).sum())} parts")
    best, best_err = None, np.inf
    for attempt in range(RESTARTS):
        parts = _greedy(sizes, fr, np.random.default_rng([seed, attempt]))
        err = _ratio_error(sizes, parts, fr)
        if err < best_err:
            best, best_err = parts, err
        if err <= RATIO_TOLERANCE / 2:
            break
    if best_err > RATIO_TOLERANCE:
        warnings.warn(
            f"patient split: a split's PNEUMONIA share differs from the whole by {best_err:.1%} "
            f"(> {RATIO_TOLERANCE:.0%}); too few patients ({len(keys)}) to stratify closely",
            stacklevel=3,
        )
    if best is None:  # every restart's error is finite (≤ 1), so the first one is kept
        raise RuntimeError("patient split: no restart produced a split")
    return dict(zip(keys, best.tolist(), strict=True))


def _relabel(s: Sample, split: str) -> Sample:
    extra = dict(s.extra)
    if s.split and s.split != split:
        extra.setdefault("source_split", s.split)
    return dataclasses.replace(s, split=split, extra=extra)


def patient_split(
    samples: list[Sample], val: float = 0.15, test: float = 0.15, seed: int = 0, *, resplit_test: bool = False
) -> list[Sample]:
    """Samples with ``split`` set to train / val / test (and ``val_official``); see the module rules.

    ``val`` and ``test`` are fractions of the pooled images. Deterministic for a given input and seed.
    """
    _check_fractions(val=val, test=test)
    samples = list(samples)
    has_train = any(s.split in ("train", None, "") for s in samples)
    keep_test = not resplit_test and any(s.split == "test" for s in samples)
    kept, pool = [], []
    for s in samples:
        if s.split in (None, "", "train") or resplit_test and s.split in ("val", "test"):
            pool.append(s)
        elif s.split == "val" and has_train:
            kept.append(_relabel(s, "val_official"))
        else:
            kept.append(s)
    if not pool:
        raise DatasetError("nothing to split: no train images (or unlabelled-split images) in the input")
    names = ["train", "val"] if keep_test else ["train", "val", "test"]
    fractions = [1.0 - val, val] if keep_test else [1.0 - val - test, val, test]
    part_of = assign_groups(pool, fractions, seed)
    return [_relabel(s, names[part_of[s.group]]) for s in pool] + kept


def kfold_by_patient(samples: list[Sample], k: int = 5, seed: int = 0) -> list[tuple[list[Sample], list[Sample]]]:
    """``k`` (train, val) folds over patients, class-stratified; each patient is in exactly one val fold.

    Returned samples have ``split`` set to ``train`` / ``val`` for that fold.
    """
    if not isinstance(k, int) or k < 2:
        raise ConfigError(f"k must be an integer ≥ 2, got {k!r}")
    samples = list(samples)
    fold_of = assign_groups(samples, [1.0 / k] * k, seed)
    folds = []
    for i in range(k):
        train = [_relabel(s, "train") for s in samples if fold_of[s.group] != i]
        val = [_relabel(s, "val") for s in samples if fold_of[s.group] == i]
        folds.append((train, val))
    return folds


def split_summary(samples: list[Sample]) -> dict:
    """Per split: images, NORMAL, PNEUMONIA, PNEUMONIA share, patients; plus groups found in two splits."""
    out: dict = {}
    where: dict[str, set] = defaultdict(set)
    for s in samples:
        row = out.setdefault(s.split or "", {"images": 0, "NORMAL": 0, "PNEUMONIA": 0, "patients": set()})
        row["images"] += 1
        row[s.class_name] += 1
        row["patients"].add(s.group)
        where[s.extra.get("source_split", s.split or "") + ":" + s.patient_id].add(s.split)
    for row in out.values():
        row["patients"] = len(row["patients"])
        row["pneumonia_share"] = round(row["PNEUMONIA"] / row["images"], 4)
    out = dict(sorted(out.items(), key=lambda kv: _split_order(kv[0])))
    return {"splits": out, "patients_in_several_splits": sorted(g for g, sp in where.items() if len(sp) > 1)}
