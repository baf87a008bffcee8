"""Population check (question 2): "is this chest film like the ones the model was validated on?"

Issue 21 measured the Mahalanobis score of :mod:`pneumo.inference.ood` alone: it flagged only 59% of
other hospitals' chest films, and on the rest the model ranked at chance. A one-class distance to the
training films cannot tell "another hospital" from "this hospital on a bad day": both are a little far
away. So the check adds a **discriminator trained with outlier exposure**: a logistic regression
(standardised inputs, L2) that tells the validated hospital's films from other hospitals' frontal chest
films, over three views pneumo already computes — the model's embedding, :func:`image_statistics` and
the gate's exposure-normalised layout features (:func:`gate_features`). Measured with one external
source held out it flags 92–98% of the held-out source (the one-class distance on the same features:
26–52%), see ``docs/inference.md``.

Guarding against the shortcut "resized copy vs original": the training films are 224-px resized JPEG
copies, real films arrive as originals. Every feature is computed from a ≤224-px stretched view, and
the foreign films are fitted both as read and as 224-px JPEG copies made the way the training copies
were, so the resizing is on both sides of the boundary; the 16 official val originals are checked.

A film is

- ``typical`` when both the discriminator's P(other population) ≤ ``flag_probability`` and the
  Mahalanobis score ≤ ``flag_distance``;
- ``atypical`` (answered, led by "Outside the validated population") otherwise;
- ``far`` (refused, no answer) when it is atypical *and* the chest-X-ray gate was unsure about it
  (gate score above ``refuse_gate``, a level ≤0.5% of chest films reach), or when the Mahalanobis score
  exceeds ``refuse_distance`` (beyond every chest film seen in fitting): the second line behind the gate
  for photos, mammograms and test objects that pass it (issue 21: all three were atypical and answered).
  The distance alone cannot do it: photos and documents score 4–20, other hospitals' chest films up to 80.

Both flag thresholds are set on patient-grouped validation films *under the acquisition shifts of*
:mod:`pneumo.evaluation.shifts`, so that ≥ ``typical_target`` of them stay typical.

``population_score`` = max(P(other) / flag_probability, distance / flag_distance): 1.0 at the limit.
Stored in ``BUNDLE/population.safetensors`` + ``pneumo.json`` → ``population``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pneumo.bundle import POPULATION, Bundle, fitted_tensors
from pneumo.data.preprocess import preprocess
from pneumo.inference.gate_features import gate_features
from pneumo.inference.ood import image_statistics

METHOD = ("logistic regression (outlier exposure: validated hospital vs other hospitals' frontal chest films) on "
          "model embedding + image statistics + gate layout features, OR the Mahalanobis distance of ood.py; "
          "refused beyond refuse_distance")
VIEWS = ("embedding", "stats", "gate")


@dataclass
class Assessment:
    """One film's population answer: ``status`` ``typical``/``atypical``/``far`` and why."""

    status: str
    score: float  # max of the normalised views: 1.0 at the flag limit
    p_other: float
    distance: float
    reason: str | None


class PopulationModel:
    """Discriminator weights and the three thresholds (see the module docstring)."""

    def __init__(self, mean: np.ndarray, scale: np.ndarray, coef: np.ndarray, intercept: float,
                 flag_probability: float, flag_distance: float, refuse_distance: float, refuse_gate: float,
                 meta: dict | None = None):
        self.mean, self.scale = np.asarray(mean, np.float64), np.asarray(scale, np.float64)
        self.coef, self.intercept = np.asarray(coef, np.float64), float(intercept)
        self.flag_probability, self.flag_distance = float(flag_probability), float(flag_distance)
        self.refuse_distance, self.refuse_gate = float(refuse_distance), float(refuse_gate)
        self.meta = meta or {}

    def p_other(self, features: np.ndarray) -> np.ndarray:
        """``B×F`` (:func:`stack_views`) → ``B`` P(from another population than the validated one)."""
        z = (np.asarray(features, np.float64) - self.mean) / self.scale @ self.coef + self.intercept
        return 1.0 / (1.0 + np.exp(-np.clip(z, -50, 50)))

    def assess(self, features: np.ndarray, distances: np.ndarray, gate_scores: np.ndarray) -> list[Assessment]:
        """Features, :class:`~pneumo.inference.ood.OODDetector` scores and gate scores of ``B`` films → answers."""
        p = self.p_other(features)
        out = []
        for pi, di, gi in zip(p, np.asarray(distances, np.float64), np.asarray(gate_scores, np.float64), strict=True):
            score = max(pi / self.flag_probability, di / self.flag_distance)
            if di > self.refuse_distance or (score > 1.0 and gi > self.refuse_gate):
                why = (f"distance {di:.1f}, refusal limit {self.refuse_distance:.1f}" if di > self.refuse_distance
                       else f"unlike the validated films and barely recognised as a chest X-ray: gate score "
                            f"{gi:.2f}, refusal limit {self.refuse_gate:.2f}")
                out.append(Assessment("far", score, pi, di, f"too far outside the films pneumo was checked on to "
                                                            f"answer ({why})"))
            elif score > 1.0:
                why = (f"it looks like another hospital's or an older patient's film (P {pi:.2f}, limit "
                       f"{self.flag_probability:.2f})" if pi > self.flag_probability else
                       f"it is unusually far from the validated films (distance {di:.1f}, limit "
                       f"{self.flag_distance:.1f})")
                out.append(Assessment("atypical", score, pi, di, why))
            else:
                out.append(Assessment("typical", score, pi, di, None))
        return out

    def tensors(self) -> dict[str, np.ndarray]:
        arr = {"mean": self.mean, "scale": self.scale, "coef": self.coef, "intercept": np.array([self.intercept]),
               "thresholds": np.array([self.flag_probability, self.flag_distance, self.refuse_distance,
                                       self.refuse_gate])}
        return {k: np.ascontiguousarray(v, dtype=np.float64) for k, v in arr.items()}

    @classmethod
    def load(cls, bundle: Bundle | str | Path) -> PopulationModel | None:
        """The bundle's population model, or ``None`` when it has none (then the Mahalanobis score alone flags)."""
        found = fitted_tensors(bundle, "population", POPULATION, "the population model")
        if found is None:
            return None
        t, block = found
        fp, fd, rd, rg = (float(v) for v in t["thresholds"])
        return cls(t["mean"], t["scale"], t["coef"], float(t["intercept"][0]), fp, fd, rd, rg, block)


def stack_views(embedding: np.ndarray, stats: np.ndarray, gate: np.ndarray) -> np.ndarray:
    """The discriminator's input: ``B×(D + N_IMAGE_STATS + gate N_FEATURES)`` float64."""
    return np.hstack([np.asarray(embedding, np.float64).reshape(len(stats), -1), np.asarray(stats, np.float64),
                      np.asarray(gate, np.float64)])


def film_features(predictor, films: Sequence[np.ndarray], batch_size: int = 64,
                  progress: bool | str = False) -> dict[str, np.ndarray]:
    """``read_image`` arrays → ``{embedding N×D, stats N×86, gate N×798, logit N, gate_score N, ood_score N}``:
    what fitting and measuring the population check read (the serving path computes the same per batch)."""
    from tqdm import tqdm

    parts: dict[str, list] = {k: [] for k in ("embedding", "stats", "gate", "logit", "gate_score", "ood_score")}
    starts = range(0, len(films), batch_size)
    for s in tqdm(starts, desc=progress or "features", disable=not progress):
        chunk = list(films[s:s + batch_size])
        batch = np.stack([preprocess(p, predictor.spec) for p in chunk])
        logit, emb = predictor.logits_and_embeddings(batch)
        stats = np.stack([image_statistics(p) for p in chunk])
        gate = np.stack([gate_features(p) for p in chunk])
        parts["embedding"].append(np.asarray(emb, np.float32))
        parts["stats"].append(stats)
        parts["gate"].append(gate)
        parts["logit"].append(np.asarray(logit, np.float32))
        gate_score = predictor.gate.score(gate) if predictor.gate is not None else np.zeros(len(chunk))
        parts["gate_score"].append(gate_score)
        det = predictor.ood_detector
        parts["ood_score"].append(det.score(emb, stats) if det is not None else np.zeros(len(chunk)))
    return {k: np.concatenate(v) for k, v in parts.items()}
