"""The validation score distribution a deployed model is compared against, stored in ``pneumo.json``.

Why in the bundle: drift is only meaningful against the scores this exact model gave on data it was
validated on. The reference travels with the weights, so any server or ``pneumo audit monitor`` can
compare without the training data at hand.

Stored under ``score_reference`` (raw logits, before temperature, so recalibration does not move it):
``quantiles`` of the validation logits every 0.5 % (201 values: the CDF for the KS statistic),
``psi_edges``/``psi_counts`` (the nine validation deciles and the count in each of the ten bins, for
the population stability index), ``n``, ``split``, ``positive_rate`` at the operating point.

Call :func:`score_reference` with the validation logits when a bundle is made, or
:func:`add_score_reference` on an existing bundle (it predicts its ``training_manifest.csv`` val rows).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np

from pneumo.decision import decide
from pneumo.errors import ConfigError

KEY = "score_reference"
QUANTILE_PROBS = np.linspace(0.0, 1.0, 201)
PSI_BINS = 10
MIN_REFERENCE = 20


def score_reference(logits, *, threshold_logit: float | None = None, split: str = "val") -> dict:
    """Validation logits → the ``score_reference`` block for ``pneumo.json``."""
    values = np.asarray(logits, dtype=np.float64).reshape(-1)
    values = values[np.isfinite(values)]
    if len(values) < MIN_REFERENCE:
        raise ConfigError(f"a score reference needs at least {MIN_REFERENCE} validation scores, got {len(values)}")
    quantiles = np.quantile(values, QUANTILE_PROBS)
    edges = np.quantile(values, np.linspace(0.0, 1.0, PSI_BINS + 1)[1:-1])
    counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=PSI_BINS)
    block = {
        "space": "logit",
        "split": split,
        "n": int(len(values)),
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "quantiles": [round(float(q), 5) for q in quantiles],
        "psi_edges": [round(float(e), 5) for e in edges],
        "psi_counts": [int(c) for c in counts],
    }
    if threshold_logit is not None:
        block["positive_rate"] = round(float(np.mean(decide(values, threshold_logit))), 5)
    return block


def add_score_reference(bundle: str | Path, manifest: str | Path | None = None, split: str = "val") -> dict:
    """Predict the bundle's own ``split`` rows (default: its ``training_manifest.csv``) and store the
    reference in its ``pneumo.json``; returns the block. About a second per thousand 224-px images."""
    # imported here: the monitor's readers (``pneumo audit monitor``) start without torch
    from pneumo.bundle import read_meta, update_meta
    from pneumo.data import load_dataset
    from pneumo.inference import Predictor

    bundle = Path(bundle)
    meta = read_meta(bundle)
    default = meta.get("training_data", {}).get("manifest", "training_manifest.csv")
    source = Path(manifest) if manifest else bundle / default
    samples = load_dataset(source).select(split)
    if not samples:
        raise ConfigError(f"{source}: no {split!r} rows to build a score reference from")
    predictor = Predictor(bundle, ood=False)
    logits = predictor.logits_for([s.path for s in samples], batch_size=64)
    block = score_reference(logits, threshold_logit=float(meta["operating_point"]["logit"]), split=split)
    update_meta(bundle, **{KEY: block})
    return block
