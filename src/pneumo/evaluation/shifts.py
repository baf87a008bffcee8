"""The acquisition-shift suite: fixed, label-preserving ways new films differ from the training copies.

Chosen a priori (before any candidate model of issue 11 was scored) and used twice: by
``benchmarks/robustness.py`` to score a bundle's saved operating point under each shift, and by the
bundle workflow to choose an operating point that keeps its sensitivity when films change
(:func:`pneumo.decision.shift_robust_threshold`). Each shift maps ``read_image`` pixels (float32
H×W in [0, 1]) to pixels of the same kind.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageFilter


def _pil(a: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(a * 255.0 + 0.5, 0, 255).astype(np.uint8))


def _arr(im: Image.Image) -> np.ndarray:
    return np.asarray(im, dtype=np.float32) / 255.0


def _crop(a: np.ndarray, fy: float, fx: float) -> np.ndarray:
    """Central crop keeping ``fy``/``fx`` of the height/width: once stretched back to a square, the
    anatomy's aspect changes by ``fx / fy`` — as a wider or taller original would have."""
    h, w = a.shape
    dy, dx = int(round(h * (1 - fy) / 2)), int(round(w * (1 - fx) / 2))
    return a[dy : h - dy, dx : w - dx]


def _jpeg(a: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    _pil(a).save(buf, "JPEG", quality=quality)
    return _arr(Image.open(io.BytesIO(buf.getvalue())).convert("L"))


def _down_up(a: np.ndarray, f: float) -> np.ndarray:
    h, w = a.shape
    im = _pil(a).resize((max(1, round(w * f)), max(1, round(h * f))), Image.Resampling.BILINEAR)
    return _arr(im.resize((w, h), Image.Resampling.BILINEAR))


def _noise(a: np.ndarray, sd: float) -> np.ndarray:
    rng = np.random.default_rng(int(a.size) + int(a[0, 0] * 1000))
    return np.clip(a + rng.normal(0.0, sd, a.shape), 0.0, 1.0).astype(np.float32)


def _rotate(a: np.ndarray, deg: float) -> np.ndarray:
    return _arr(_pil(a).rotate(deg, resample=Image.Resampling.BILINEAR))


def _pad(a: np.ndarray, frac: float) -> np.ndarray:
    """Black margins on all sides (a smaller patient or a collimated film, stretched back to a square)."""
    h, w = a.shape
    py, px = int(round(h * frac)), int(round(w * frac))
    return np.pad(a, ((py, py), (px, px)))


def _marker(a: np.ndarray) -> np.ndarray:
    """A bright burned-in block of 'text' in the upper-left and a lead marker in the lower-right corner."""
    out = a.copy()
    h, w = a.shape
    out[int(h * 0.04) : int(h * 0.10), int(w * 0.05) : int(w * 0.30)] = 0.95
    out[int(h * 0.85) : int(h * 0.93), int(w * 0.86) : int(w * 0.94)] = 1.0
    return out


def _window(a: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return np.clip((a - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


# Chosen a priori, before any candidate of issue 11 was scored; each one is a way new films differ.
SHIFTS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "none": lambda a: a,
    "wider original (aspect ×0.83)": lambda a: _crop(a, 0.83, 1.0),
    "taller original (aspect ×1.2)": lambda a: _crop(a, 1.0, 0.83),
    "tighter framing (zoom ×1.2)": lambda a: _crop(a, 0.83, 0.83),
    "black margins 8%": lambda a: _pad(a, 0.08),
    "mirror (left-right)": lambda a: a[:, ::-1],
    "rotate +7°": lambda a: _rotate(a, 7.0),
    "rotate −7°": lambda a: _rotate(a, -7.0),
    "burned-in text + marker": _marker,
    "blur σ 1 px": lambda a: _arr(_pil(a).filter(ImageFilter.GaussianBlur(1.0))),
    "unsharp mask": lambda a: _arr(_pil(a).filter(ImageFilter.UnsharpMask(2, 100, 0))),
    "source resolution ×0.3": lambda a: _down_up(a, 0.3),
    "source resolution ×0.5": lambda a: _down_up(a, 0.5),
    "source resolution ×0.8": lambda a: _down_up(a, 0.8),
    "darker (γ 1.4)": lambda a: a**1.4,
    "brighter (γ 0.7)": lambda a: a**0.7,
    "low contrast (×0.75)": lambda a: 0.5 + (a - 0.5) * 0.75,
    "window 0.1–0.9": lambda a: _window(a, 0.1, 0.9),
    "brighter +0.08": lambda a: np.clip(a + 0.08, 0, 1),
    "JPEG q 30": lambda a: _jpeg(a, 30),
    "JPEG q 60": lambda a: _jpeg(a, 60),
    "noise σ 0.03": lambda a: _noise(a, 0.03),
}


def shifted_logits(logits_fn: Callable[[np.ndarray], np.ndarray], pixels: list[np.ndarray], preprocess_fn,
                   shifts: dict[str, Callable[[np.ndarray], np.ndarray]] | None = None,
                   batch_size: int = 128) -> dict[str, np.ndarray]:
    """Logits of every image under every shift: ``{shift name: N logits}`` (``none`` included).

    ``logits_fn`` maps a preprocessed ``B×1×S×S`` batch to ``B`` logits; ``preprocess_fn`` is the
    bundle's ``preprocess`` — the serving path, so the shifted images are fed as a new film would be.
    """
    out = {}
    for name, fn in (shifts or SHIFTS).items():
        chunks = []
        for i in range(0, len(pixels), batch_size):
            batch = np.stack([preprocess_fn(fn(a)) for a in pixels[i : i + batch_size]])
            chunks.append(np.asarray(logits_fn(batch), dtype=np.float64).reshape(-1))
        out[name] = np.concatenate(chunks) if chunks else np.zeros(0)
    return out
