"""Patient splits: invariants under hypothesis, and on the real training set."""

from __future__ import annotations

import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pneumo.data import Sample, load_dataset
from pneumo.data.split import RATIO_TOLERANCE, kfold_by_patient, patient_split, split_summary
from pneumo.errors import ConfigError


def _fake(groups: list[tuple[int, int]], split: str | None = "train") -> list[Sample]:
    """Samples for patients given as (n NORMAL images, n PNEUMONIA images)."""
    out = []
    for g, (n0, n1) in enumerate(groups):
        for i in range(n0 + n1):
            out.append(Sample(Path(f"/x/p{g}_{i}.png"), int(i >= n0), split, f"p{g}"))
    return out


def _splits_of_groups(samples: list[Sample]) -> dict[str, set]:
    where = defaultdict(set)
    for s in samples:
        where[s.extra.get("source_split", s.split) + ":" + s.patient_id].add(s.split)
    return where


def _share(samples):
    return sum(s.label for s in samples) / len(samples)


patients = st.lists(
    st.one_of(st.tuples(st.integers(1, 3), st.just(0)), st.tuples(st.just(0), st.integers(1, 6))),
    min_size=6, max_size=400,
)


@settings(max_examples=60, deadline=None)
@given(patients, st.integers(0, 2**16))
def test_no_patient_in_two_splits_and_deterministic(groups, seed):
    samples = _fake(groups)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = patient_split(samples, val=0.2, test=0.2, seed=seed)
        b = patient_split(list(reversed(samples)), val=0.2, test=0.2, seed=seed)
    assert sorted(s.path for s in a) == sorted(s.path for s in samples)  # nothing lost or duplicated
    assert all(len(v) == 1 for v in _splits_of_groups(a).values())
    assert {s.path: s.split for s in a} == {s.path: s.split for s in b}  # input order does not matter


@settings(max_examples=40, deadline=None)
@given(st.integers(300, 900), st.floats(0.2, 0.8), st.integers(1, 6), st.integers(0, 2**16))
def test_ratio_within_two_points_on_reasonable_inputs(n_patients, p_pneumonia, max_images, seed):
    # random patients: NORMAL or PNEUMONIA, 1..max_images images each (generated from the seed: fast)
    rng = np.random.default_rng(seed)
    sick = rng.random(n_patients) < p_pneumonia
    sizes = rng.integers(1, max_images + 1, n_patients)
    samples = _fake([(0, int(n)) if y else (int(n), 0) for y, n in zip(sick, sizes, strict=True)])
    out = patient_split(samples, val=0.15, test=0.15, seed=seed)
    whole = _share(samples)
    for name in ("train", "val", "test"):
        part = [s for s in out if s.split == name]
        assert abs(_share(part) - whole) <= RATIO_TOLERANCE, (name, _share(part), whole)
        assert abs(len(part) / len(samples) - {"train": 0.7, "val": 0.15, "test": 0.15}[name]) < 0.03


def test_official_test_kept_val_official_and_resplit():
    train = _fake([(1, 0)] * 150 + [(0, 2)] * 150)
    test = _fake([(1, 0)] * 20 + [(0, 1)] * 30, split="test")
    val = _fake([(1, 0)] * 3 + [(0, 1)] * 3, split="val")
    out = patient_split(train + test + val, val=0.2, seed=1)
    by = defaultdict(list)
    for s in out:
        by[s.split].append(s)
    assert set(by) == {"train", "val", "test", "val_official"}
    assert sorted(s.path for s in by["test"]) == sorted(s.path for s in test)  # untouched
    assert sorted(s.path for s in by["val_official"]) == sorted(s.path for s in val)
    assert abs(len(by["val"]) / len(train) - 0.2) < 0.03
    again = patient_split(train + test + val, val=0.2, test=0.2, seed=1, resplit_test=True)
    assert {s.split for s in again} == {"train", "val", "test"}
    # ids are unique within a source split only: p0 of train and p0 of test are different patients
    assert all(len(v) == 1 for v in _splits_of_groups(again).values())


def test_seed_changes_the_split_and_bad_fractions():
    samples = _fake([(1, 0)] * 100 + [(0, 2)] * 100)
    a = {s.path: s.split for s in patient_split(samples, seed=0)}
    b = {s.path: s.split for s in patient_split(samples, seed=1)}
    assert a != b
    with pytest.raises(ConfigError):
        patient_split(samples, val=0.6, test=0.5)
    with pytest.raises(ConfigError):
        kfold_by_patient(samples, k=1)


def test_kfold_each_patient_validated_once():
    samples = _fake([(1, 0)] * 80 + [(0, 3)] * 80 + [(2, 0)] * 20)
    folds = kfold_by_patient(samples, k=4, seed=3)
    seen = defaultdict(int)
    for train, val in folds:
        assert not {s.patient_id for s in train} & {s.patient_id for s in val}
        assert len(train) + len(val) == len(samples)
        assert abs(_share(val) - _share(samples)) <= RATIO_TOLERANCE + 0.01
        for pid in {s.patient_id for s in val}:
            seen[pid] += 1
    assert set(seen.values()) == {1} and len(seen) == 180


def test_real_training_set_split_has_no_patient_overlap(data_root):
    index = load_dataset(data_root)
    out = patient_split(index.samples, val=0.15, test=0.15, seed=0)
    summary = split_summary(out)
    assert summary["patients_in_several_splits"] == []
    train_pool = index.select("train")
    whole = _share(train_pool)
    for name in ("train", "val", "test"):
        part = [s for s in out if s.split == name]
        assert abs(_share(part) - whole) <= RATIO_TOLERANCE
        groups_here = {s.group for s in part}
        for other in {"train", "val", "test"} - {name}:
            assert not groups_here & {s.group for s in out if s.split == other}
    assert summary["splits"]["val_official"]["images"] == len(index.select("val"))
    assert sum(r["images"] for r in summary["splits"].values()) == len(index.samples)
