"""``Predictor``: a bundle's model behind one call, on the shared read → preprocess path.

Backends: ``torch`` (always available; needed for heatmaps) and ``onnx`` (ONNX Runtime, faster on CPU,
used when the bundle has ``model.onnx``). ``auto`` picks ONNX when present.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pneumo.bundle import Bundle, load_bundle
from pneumo.data.imageio import read_image
from pneumo.data.preprocess import preprocess
from pneumo.errors import ConfigError


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@dataclass
class Prediction:
    logit: float
    probability: float
    decision: str
    threshold: float


class Predictor:
    """Probabilities from a bundle for preprocessed batches, pixel arrays or files.

    Args:
        bundle: a :class:`Bundle` or a bundle directory.
        backend: ``torch``, ``onnx`` or ``auto``.
    """

    def __init__(self, bundle: Bundle | str | Path, backend: str = "auto", threads: int | None = None):
        self.bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
        if backend not in ("torch", "onnx", "auto"):
            raise ConfigError(f"backend must be torch, onnx or auto, got {backend!r}")
        if backend == "auto":
            backend = "onnx" if self.bundle.onnx_path else "torch"
        if backend == "onnx" and not self.bundle.onnx_path:
            raise ConfigError(f"{self.bundle.path}: no model.onnx; run `pneumo export {self.bundle.path}` first")
        self.backend = backend
        self._session = None
        if backend == "onnx":
            import onnxruntime as ort

            opts = ort.SessionOptions()
            if threads:
                opts.intra_op_num_threads = threads
            self._session = ort.InferenceSession(str(self.bundle.onnx_path), opts, providers=["CPUExecutionProvider"])
            self._input = self._session.get_inputs()[0].name

    @property
    def spec(self):
        return self.bundle.spec

    def logits(self, batch: np.ndarray) -> np.ndarray:
        """``N×1×S×S`` float32 preprocessed batch → ``N`` raw logits (before temperature)."""
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if self._session is not None:
            return np.asarray(self._session.run(None, {self._input: batch})[0], dtype=np.float32).reshape(-1)
        with torch.inference_mode():
            return self.bundle.model(torch.from_numpy(batch)).float().numpy().reshape(-1)

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        """Calibrated probabilities: ``sigmoid(logit / temperature)``."""
        return sigmoid(np.asarray(logits, dtype=np.float64) / self.bundle.temperature)

    def predict_pixels(self, pixels: np.ndarray) -> Prediction:
        logit = float(self.logits(preprocess(pixels, self.spec)[None])[0])
        return self._prediction(logit)

    def _prediction(self, logit: float) -> Prediction:
        prob = float(self.probabilities(np.array([logit]))[0])
        decision = "PNEUMONIA" if logit >= self.bundle.threshold_logit else "NORMAL"
        return Prediction(logit, prob, decision, self.bundle.threshold)

    def logits_for_paths(
        self, paths: Sequence[str | Path], batch_size: int = 32, progress: bool = False
    ) -> np.ndarray:
        """Logits for image files (every file must be readable; errors propagate)."""
        out = np.empty(len(paths), dtype=np.float32)
        for start, batch in _batches(paths, batch_size, progress):
            arr = np.stack([preprocess(read_image(p)[0], self.spec) for p in batch])
            out[start : start + len(batch)] = self.logits(arr)
        return out


def _batches(items: Sequence, size: int, progress: bool) -> Iterable[tuple[int, Sequence]]:
    starts = range(0, len(items), size)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, total=len(starts), unit="batch", desc="predicting")
    for s in starts:
        yield s, items[s : s + size]
