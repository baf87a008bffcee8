"""Deletion / insertion AUC (Petsiuk et al., "RISE", 2018): does the map rank pixels by what the model uses?

On the model grid, pixels are ordered by saliency (most salient first). *Deletion* replaces them,
step by step, with the image mean and records the probability of the explained class: a faithful map
makes it fall fast (low AUC). *Insertion* starts from a heavily blurred image and restores the original
pixels in the same order: a faithful map makes it rise fast (high AUC). A random map is the baseline.
The explained class is the model's own decision on each image (PNEUMONIA iff logit ≥ threshold).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from scipy.ndimage import gaussian_filter
from torch import nn

from pneumo.decision import POSITIVE, decision_name
from pneumo.explain.core import explain_tensor, torch_score

STEPS = 20
# issue 17's targets for the default method: this far below / above the random map
DELETION_MARGIN = 0.08
INSERTION_MARGIN = 0.06


def _logits(model: nn.Module, batch: np.ndarray) -> np.ndarray:
    """``N×1×S×S`` → ``N`` pneumonia logits (the one torch-on-numpy helper, :func:`torch_score`)."""
    return torch_score(model)(batch)


def _scores(model: nn.Module, batch: np.ndarray, sign: float) -> np.ndarray:
    """``N×1×S×S`` → probability of the explained class (``sign`` +1 pneumonia, −1 normal)."""
    return 1.0 / (1.0 + np.exp(-sign * _logits(model, batch).astype(np.float64)))


def curves(
    model: nn.Module, x: np.ndarray, saliency: np.ndarray, sign: float, steps: int = STEPS, baseline: str = "blur"
) -> tuple[np.ndarray, np.ndarray]:
    """Deletion and insertion curves (``steps+1`` probabilities each, fractions 0, 1/steps, …, 1)
    for one input ``1×S×S`` and its ``S×S`` saliency. Ties are broken at random (fixed seed).

    ``baseline`` is what deleted pixels become: ``blur`` (Gaussian, σ = S/16; no new edges) or ``mean``.
    Insertion always starts from the blurred image."""
    img: np.ndarray = np.asarray(x, dtype=np.float32).reshape(x.shape[-2:])
    s = img.shape[-1]
    jitter = np.random.default_rng(0).random(img.size) * 1e-6
    order = np.argsort(-(np.asarray(saliency, dtype=np.float64).ravel() + jitter), kind="stable")
    blurred = gaussian_filter(img, sigma=max(1.0, s / 16)).astype(np.float32)
    mean = blurred if baseline == "blur" else np.full_like(img, img.mean())
    dele, ins = [], []
    for k in range(steps + 1):
        n = round(k * img.size / steps)
        mask: np.ndarray = np.zeros(img.size, dtype=bool)
        mask[order[:n]] = True
        mask = mask.reshape(img.shape)
        dele.append(np.where(mask, mean, img))
        ins.append(np.where(mask, img, blurred))
    probs = _scores(model, np.stack(dele + ins)[:, None], sign)
    return probs[: steps + 1], probs[steps + 1 :]


def random_map(size: int, rng: np.random.Generator, cells: int = 8) -> np.ndarray:
    """Baseline saliency with a CAM's smoothness: uniform noise on a ``cells×cells`` grid, bilinearly
    upsampled to ``size×size`` (pixel-level noise would delete salt-and-pepper patterns instead of
    regions, an unfair, out-of-distribution comparison)."""
    coarse = torch.from_numpy(rng.random((1, 1, cells, cells)).astype(np.float32))
    up = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    return up[0, 0].numpy()


def auc(curve: np.ndarray) -> float:
    """Area under a curve sampled at equally spaced fractions of [0, 1] (trapezoid rule)."""
    c = np.asarray(curve, dtype=np.float64)
    return float(((c[:-1] + c[1:]) / 2).mean())


def faithfulness(
    model: nn.Module,
    inputs: Sequence[np.ndarray],
    methods: Sequence[str] = ("occlusion", "gradcam", "gradcam++"),
    threshold_logit: float = 0.0,
    layer: str | None = None,
    steps: int = STEPS,
    seed: int = 0,
    baseline: str = "blur",
    explain: Callable[[np.ndarray, str, str], np.ndarray] | None = None,
) -> dict:
    """Deletion/insertion AUC per method (and for a random map) on preprocessed inputs (each ``1×S×S``).

    Returns ``{"n_images", "steps", "methods": {name: {deletion_auc, insertion_auc,
    beats_random_deletion, beats_random_insertion, meets_targets}}, "random": {...}}`` (means over
    images). ``meets_targets``: deletion ≤ random − :data:`DELETION_MARGIN` and insertion ≥ random +
    :data:`INSERTION_MARGIN`. ``explain(x, method, target)`` replaces :func:`explain_tensor` (e.g. a
    persistent :class:`~pneumo.explain.Explainer` on ONNX Runtime); the curves always use ``model``.
    """
    rng = np.random.default_rng(seed)
    per: dict[str, dict[str, list[float]]] = {m: {"deletion": [], "insertion": []} for m in [*methods, "random"]}
    for x in inputs:
        logit = float(_logits(model, np.asarray(x)[None])[0])
        sign, target = (1.0, "pneumonia") if decision_name(logit, threshold_logit) == POSITIVE else (-1.0, "normal")
        maps = {m: explain(x, m, target) if explain else explain_tensor(model, x, method=m, target=target, layer=layer)
                for m in methods}
        maps["random"] = random_map(np.shape(x)[-1], rng)
        for name, sal in maps.items():
            d, i = curves(model, x, sal, sign, steps, baseline)
            per[name]["deletion"].append(auc(d))
            per[name]["insertion"].append(auc(i))
    summary = {name: {"deletion_auc": _mean(v["deletion"]), "insertion_auc": _mean(v["insertion"])}
               for name, v in per.items()}
    rand = summary.pop("random")
    for v in summary.values():
        dele, ins = v["deletion_auc"], v["insertion_auc"]
        rand_dele, rand_ins = rand["deletion_auc"], rand["insertion_auc"]
        if dele is None or ins is None or rand_dele is None or rand_ins is None:  # _mean of no images
            raise ValueError("faithfulness needs at least one input image")
        v["beats_random_deletion"] = bool(dele < rand_dele)
        v["beats_random_insertion"] = bool(ins > rand_ins)
        v["meets_targets"] = bool(dele <= rand_dele - DELETION_MARGIN and ins >= rand_ins + INSERTION_MARGIN)
    return {
        "test": "deletion (lower is better) / insertion (higher is better) AUC, Petsiuk et al. 2018",
        "n_images": len(inputs),
        "steps": steps,
        "baseline": baseline,
        "margins": {"deletion": DELETION_MARGIN, "insertion": INSERTION_MARGIN},
        "methods": summary,
        "random": rand,
    }


def _mean(v: list[float]) -> float | None:
    return round(float(np.mean(v)), 4) if v else None
