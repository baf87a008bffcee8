"""Perturbation maps computed as a few large batches: occlusion and RISE.

Both only need ``score(batch N×1×S×S) → N logits``, so they run on ONNX Runtime when the bundle has
``model.onnx`` (≈0.5 ms per 224-px copy on 2 cores) and on torch otherwise — including a weight-
randomised model in the sanity check. All masked copies of one image are built with numpy in one go
(no per-patch Python loop as in MONAI's ``OcclusionSensitivity``).

What is hidden is replaced by the blurred image (σ = S/16, the faithfulness check's own baseline), not
by a constant: a constant patch adds edges the network reacts to whatever its weights, which makes a
random network's map follow the anatomy (see docs/explain.md).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Score = Callable[[np.ndarray], np.ndarray]
BATCH = 64


def blurred(img: np.ndarray) -> np.ndarray:
    from scipy.ndimage import gaussian_filter  # lazy: predict imports this package, only heatmaps need scipy

    return gaussian_filter(img, sigma=max(1.0, img.shape[-1] / 16)).astype(np.float32)


def _run(score: Score, stack: np.ndarray) -> np.ndarray:
    return np.concatenate([np.asarray(score(stack[i : i + BATCH]), dtype=np.float64).reshape(-1)
                           for i in range(0, len(stack), BATCH)])


def _upsample(grid: np.ndarray, size: int) -> np.ndarray:
    """``g×g`` → ``size×size``, bilinear on cell centres (edge cells extend to the border)."""
    g = grid.shape[-1]
    pos = (np.arange(size) + 0.5) * g / size - 0.5
    i0 = np.clip(np.floor(pos).astype(int), 0, g - 1)
    i1 = np.clip(i0 + 1, 0, g - 1)
    t = np.clip(pos - i0, 0.0, 1.0)
    rows = grid[..., i0, :] * (1 - t)[:, None] + grid[..., i1, :] * t[:, None]
    return rows[..., i0] * (1 - t) + rows[..., i1] * t


def occlusion(score: Score, x: np.ndarray, sign: float, cells: int = 16, patch: float = 2.0,
              fill: str = "blur") -> np.ndarray:
    """``S×S`` map: drop of ``sign·logit`` when a soft square patch around each of ``cells×cells``
    centres is hidden (patch side ``patch`` cells, i.e. S/8 with the defaults; 256 copies), clipped at 0.

    ``fill``: ``blur`` (the blurred image) or ``mean`` (the image mean; MONAI-like)."""
    img: np.ndarray = np.asarray(x, dtype=np.float32).reshape(np.shape(x)[-2:])
    s = img.shape[-1]
    base = blurred(img) if fill == "blur" else np.full_like(img, img.mean())
    step = s / cells
    centres = (np.arange(cells) + 0.5) * step
    coords = np.arange(s) + 0.5
    half = patch * step / 2
    # soft edges (2 px ramps): hard-edged patches add edges the network reacts to
    w1 = np.clip((half - np.abs(coords[None, :] - centres[:, None])) / 2 + 0.5, 0.0, 1.0).astype(np.float32)
    diff = (base - img)[None]
    base_logit = float(np.asarray(score(img[None, None])).reshape(-1)[0])
    drops = []
    for r0 in range(0, cells, max(1, BATCH // cells)):  # a few rows of patches per batch: small peak memory
        rows = w1[r0 : r0 + max(1, BATCH // cells)]
        masks = (rows[:, None, :, None] * w1[None, :, None, :]).reshape(-1, s, s)  # (rows·cells)×S×S
        drops.append(base_logit - _run(score, (img[None] + masks * diff)[:, None]))
    drop = sign * np.concatenate(drops)
    return np.clip(_upsample(drop.reshape(cells, cells), s), 0.0, None).astype(np.float32)


def rise(score: Score, x: np.ndarray, sign: float, n_masks: int = 500, cells: int = 8, p_keep: float = 0.5,
         seed: int = 0) -> np.ndarray:
    """RISE (Petsiuk 2018): ``Σ_i (s_i − mean s)·M_i`` over ``n_masks`` random smooth masks that keep
    each coarse cell with probability ``p_keep`` (random sub-cell shift; the rest is blurred), clipped
    at 0. Centring the scores removes the bias towards what every mask keeps."""
    img: np.ndarray = np.asarray(x, dtype=np.float32).reshape(np.shape(x)[-2:])
    s = img.shape[-1]
    rng = np.random.default_rng(seed)
    cell = int(np.ceil(s / cells))
    grid = (rng.random((n_masks, cells + 1, cells + 1)) < p_keep).astype(np.float32)
    up = _upsample(grid, (cells + 1) * cell)
    dy, dx = rng.integers(0, cell, size=(2, n_masks))
    masks = np.stack([up[i, dy[i] : dy[i] + s, dx[i] : dx[i] + s] for i in range(n_masks)]).astype(np.float32)
    base = blurred(img)
    scores = sign * _run(score, (base[None] + masks * (img - base)[None])[:, None])
    sal = np.tensordot(scores - scores.mean(), masks, axes=1) / (n_masks * p_keep)
    return np.clip(sal, 0.0, None).astype(np.float32)
