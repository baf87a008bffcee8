"""Model-parameter randomisation test (Adebayo et al., "Sanity Checks for Saliency Maps", 2018).

An explanation that barely changes when the model's learned weights are replaced by random ones is
explaining the *image* (edges, brightness), not the *model*. We compare, per image, the map from the
trained model with the map from a fully re-initialised copy (optionally cascading from the top):
Spearman rank correlation and SSIM. The check passes when the mean ``|Spearman|`` stays below a bound.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import numpy as np
import torch
from scipy.stats import spearmanr
from skimage.metrics import structural_similarity
from torch import nn

from pneumo.decision import decision_name
from pneumo.explain.core import DEFAULT_METHOD, _normalise, explain_tensor, torch_score

DEFAULT_BOUND = 0.30  # issue 17: the default explanation must stay at or below this
# A random network's Grad-CAM is often all-zero (the ReLU'd class evidence is negative everywhere), which
# would "pass" trivially; we then try the next seed, up to this many, and report the seed used.
SEED_TRIES = 5
# (model, x 1×S×S) → S×S map; lets a test plug in a deliberately broken explainer
Explainer = Callable[[nn.Module, np.ndarray], np.ndarray]


def randomise(model: nn.Module, seed: int = 0, top_k: int | None = None) -> nn.Module:
    """A copy of ``model`` with re-initialised weights (BatchNorm statistics reset too).

    ``top_k=None`` randomises every layer; ``top_k=k`` only the last ``k`` parametrised layers
    (the cascading variant: randomise from the output towards the input).
    """
    torch.manual_seed(seed)
    net = copy.deepcopy(model)
    layers = [m for m in net.modules() if hasattr(m, "reset_parameters") and any(True for _ in m.parameters(False))]
    chosen = layers if top_k is None else layers[len(layers) - top_k :]
    with torch.no_grad():
        for m in chosen:
            m.reset_parameters()
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                # fresh BN is the identity; give it random affine params so the layer is really random
                m.weight.normal_(1.0, 0.5)
                m.bias.normal_(0.0, 0.5)
    return net.eval()


def map_similarity(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Spearman rank correlation and SSIM of two ``S×S`` maps (each min–max normalised first).

    A constant map carries no ranking, so its correlation counts as 0 (no agreement)."""
    a, b = _normalise(a), _normalise(b)
    rho = 0.0 if a.std() == 0 or b.std() == 0 else float(spearmanr(a.ravel(), b.ravel())[0])
    ssim = float(structural_similarity(a, b, data_range=1.0))
    return rho, ssim


def gradient_explainer(method: str = DEFAULT_METHOD, target: str = "pneumonia", layer: str | None = None) -> Explainer:
    return lambda model, x: explain_tensor(model, x, method=method, target=target, layer=layer)


def decision_targets(model: nn.Module, inputs: Sequence[np.ndarray], threshold_logit: float) -> list[str]:
    """The class each input's map explains when the map shows the trained model's decision."""
    logits = torch_score(model)(np.stack([np.asarray(x, np.float32) for x in inputs]))
    return [decision_name(float(z), threshold_logit).lower() for z in logits]


def sanity_check(
    model: nn.Module,
    inputs: Sequence[np.ndarray],
    method: str = DEFAULT_METHOD,
    target: str = "pneumonia",
    layer: str | None = None,
    *,
    explainer: Explainer | None = None,
    threshold_logit: float | None = None,
    bound: float = DEFAULT_BOUND,
    seed: int = 0,
) -> dict:
    """Run the randomisation test on preprocessed inputs (each ``1×S×S``) and return a JSON-able report.

    Keys: ``method``, ``n_images``, ``spearman_mean``, ``abs_spearman_mean``, ``ssim_mean``,
    ``per_image`` [{spearman, ssim}], ``random_seed``, ``n_flat_random_maps``, ``inconclusive``
    (most random maps flat even after :data:`SEED_TRIES` seeds), ``bound``, ``passed`` (mean |Spearman| ≤ bound).
    ``target="decision"``: each map explains the trained model's decision at ``threshold_logit``.
    """
    if target == "decision":  # each map explains the trained model's own decision, as the page shows it
        targets = decision_targets(model, inputs, 0.0 if threshold_logit is None else threshold_logit)
        explains = [explainer or gradient_explainer(method, t, layer) for t in targets]
    else:
        explains = [explainer or gradient_explainer(method, target, layer)] * len(inputs)
    trained = [f(model, x) for f, x in zip(explains, inputs, strict=True)]
    for attempt in range(SEED_TRIES):
        random_model = randomise(model, seed=seed + attempt)
        randoms = [f(random_model, x) for f, x in zip(explains, inputs, strict=True)]
        n_flat = sum(float(np.ptp(r)) == 0.0 for r in randoms)
        if 2 * n_flat <= len(randoms):
            break
    rows = []
    for a, r in zip(trained, randoms, strict=True):
        rho, ssim = map_similarity(a, r)
        rows.append({"spearman": round(rho, 4), "ssim": round(ssim, 4)})
    rhos = np.array([r["spearman"] for r in rows], dtype=float)
    ssims = np.array([r["ssim"] for r in rows], dtype=float)
    abs_mean = float(np.abs(rhos).mean()) if len(rows) else float("nan")
    return {
        "test": "model-parameter randomisation (Adebayo et al. 2018), all layers re-initialised",
        "method": method if explainer is None else getattr(explainer, "__name__", "custom"),
        "target": target,
        "n_images": len(rows),
        "spearman_mean": round(float(rhos.mean()), 4) if len(rows) else None,
        "abs_spearman_mean": round(abs_mean, 4) if len(rows) else None,
        "ssim_mean": round(float(ssims.mean()), 4) if len(rows) else None,
        "random_seed": seed + attempt,
        "n_flat_random_maps": n_flat,
        "inconclusive": bool(2 * n_flat > len(rows)),
        "bound": bound,
        "passed": bool(len(rows) and abs_mean <= bound),
        "per_image": rows,
    }
