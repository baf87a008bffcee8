"""``Predictor``: a bundle's model behind one call, on the shared read → preprocess path.

Backends: ``torch`` (always available; needed for heatmaps) and ``onnx`` (ONNX Runtime, faster on CPU,
used when the bundle has ``model.onnx``). ``auto`` picks ONNX when present. A ``model.onnx`` written by
``pneumo export`` has two outputs, ``logit`` (``B``) and ``embedding`` (``B×D``), so one ONNX run
gives both the probability and the out-of-distribution score.

Thread safety: ``ort.InferenceSession.run`` and torch inference are safe to call from several threads;
a ``Predictor`` holds no per-call state.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from pneumo.bundle import Bundle, calibrated_probability, load_bundle
from pneumo.data.imageio import read_image
from pneumo.data.preprocess import preprocess
from pneumo.errors import ConfigError, PneumoError
from pneumo.inference.ood import OODDetector, image_statistics

NOT_A_CXR = "NOT_A_CHEST_XRAY"


@dataclass
class Prediction:
    """One image's answer. When ``ood`` is true the image is not a chest X-ray: ``decision`` is
    ``NOT_A_CHEST_XRAY`` and the probability must not be shown as a finding."""

    logit: float
    probability: float
    decision: str
    threshold: float
    ood_score: float | None = None
    ood: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


class Predictor:
    """Probabilities (and OOD flags) from a bundle for preprocessed batches, pixel arrays or files.

    Args:
        bundle: a :class:`Bundle` or a bundle directory.
        backend: ``torch``, ``onnx`` or ``auto``.
        threads: intra-op threads for ONNX Runtime; for torch this sets ``torch.set_num_threads``
            (process-wide). ``None`` leaves the libraries' defaults.
        onnx_file: a different ONNX file: a name in the bundle (``model.int8.onnx``) or an absolute path.
        ood: use the bundle's OOD detector if it has one.
    """

    def __init__(
        self,
        bundle: Bundle | str | Path,
        backend: str = "auto",
        threads: int | None = None,
        onnx_file: str | None = None,
        ood: bool = True,
    ):
        self.bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
        if backend not in ("torch", "onnx", "auto"):
            raise ConfigError(f"backend must be torch, onnx or auto, got {backend!r}")
        onnx_path = self.bundle.path / onnx_file if onnx_file else self.bundle.onnx_path
        if onnx_path is not None and not onnx_path.exists():
            raise ConfigError(f"{onnx_path}: no such ONNX file in the bundle")
        if backend == "auto":
            backend = "onnx" if onnx_path else "torch"
        if backend == "onnx" and not onnx_path:
            raise ConfigError(f"{self.bundle.path}: no model.onnx; run `pneumo export {self.bundle.path}` first")
        self.backend = backend
        self._session = None
        self._has_embedding_output = False
        if backend == "onnx":
            self._session = ort_session(onnx_path, threads)
            self._input = self._session.get_inputs()[0].name
            self._outputs = [o.name for o in self._session.get_outputs()]
            self._has_embedding_output = "embedding" in self._outputs
        elif threads:
            torch.set_num_threads(threads)
        self.ood_detector: OODDetector | None = OODDetector.load(self.bundle) if ood else None

    @property
    def spec(self):
        return self.bundle.spec

    def logits(self, batch: np.ndarray) -> np.ndarray:
        """``N×1×S×S`` float32 preprocessed batch → ``N`` raw logits (before temperature)."""
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if self._session is not None:
            out = self._session.run([self._outputs[0]], {self._input: batch})[0]
            return np.asarray(out, dtype=np.float32).reshape(-1)
        with torch.inference_mode():
            return self.bundle.model(torch.from_numpy(batch)).float().numpy().reshape(-1)

    def logits_and_embeddings(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``N×1×S×S`` batch → (``N`` logits, ``N×D`` embeddings) in one forward pass where possible."""
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if self._session is not None and self._has_embedding_output:
            logit, emb = self._session.run(["logit", "embedding"], {self._input: batch})
            return np.asarray(logit, np.float32).reshape(-1), np.asarray(emb, np.float32).reshape(len(batch), -1)
        if self._session is not None:  # an old single-output ONNX: embeddings from torch
            with torch.inference_mode():
                emb = self.bundle.model.embed(torch.from_numpy(batch)).float().numpy()
            return self.logits(batch), emb
        from pneumo.inference.export import LogitAndEmbedding

        with torch.inference_mode():
            logit, emb = LogitAndEmbedding(self.bundle.model)(torch.from_numpy(batch))
        return logit.float().numpy().reshape(-1), emb.float().numpy()

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        """Calibrated probabilities: ``sigmoid(logit / temperature)``."""
        return calibrated_probability(logits, self.bundle.temperature)

    def predict_pixels(self, pixels: np.ndarray) -> Prediction:
        """``read_image`` pixels (float32 H×W in [0, 1]) → a :class:`Prediction` (with OOD if fitted)."""
        return self.predict_batch([pixels])[0]

    def predict_batch(self, pixels: Sequence[np.ndarray]) -> list[Prediction]:
        """Several ``read_image`` arrays (any sizes) → one :class:`Prediction` each, one forward pass."""
        if len(pixels) == 0:
            return []
        batch = np.stack([preprocess(p, self.spec) for p in pixels])
        if self.ood_detector is None:
            return [self._prediction(float(v)) for v in self.logits(batch)]
        logits, emb = self.logits_and_embeddings(batch)
        stats = np.stack([image_statistics(p) for p in pixels]) if self.ood_detector.uses_image_stats else None
        scores = self.ood_detector.score(emb, stats)
        return [self._prediction(float(v), float(s)) for v, s in zip(logits, scores, strict=True)]

    def _prediction(self, logit: float, ood_score: float | None = None) -> Prediction:
        prob = float(self.probabilities(np.array([logit]))[0])
        decision = "PNEUMONIA" if logit >= self.bundle.threshold_logit else "NORMAL"
        ood = ood_score is not None and ood_score > self.ood_detector.threshold
        if ood:
            decision = NOT_A_CXR
        return Prediction(logit, prob, decision, self.bundle.threshold, ood_score, bool(ood))

    def logits_for_paths(
        self, paths: Sequence[str | Path], batch_size: int = 32, progress: bool = False
    ) -> np.ndarray:
        """Logits for image files (every file must be readable; errors propagate)."""
        out = np.empty(len(paths), dtype=np.float32)
        for start, batch in _batches(paths, batch_size, progress):
            arr = np.stack([preprocess(read_image(p)[0], self.spec) for p in batch])
            out[start : start + len(batch)] = self.logits(arr)
        return out

    def predict_paths(
        self, paths: Sequence[str | Path], batch_size: int = 32, progress: bool = False
    ) -> Iterable[tuple[str, Prediction | None, str | None]]:
        """Yield ``(path, prediction, error)`` per file, in order; an unreadable file gives an error
        message (and ``None``) instead of stopping the batch."""
        for _, batch in _batches(list(paths), batch_size, progress):
            good, pixels, errors = [], [], {}
            for p in batch:
                try:
                    pixels.append(read_image(p)[0])
                    good.append(str(p))
                except PneumoError as exc:
                    errors[str(p)] = str(exc)
            preds = dict(zip(good, self.predict_batch(pixels), strict=True)) if pixels else {}
            for p in batch:
                yield str(p), preds.get(str(p)), errors.get(str(p))


def ort_session(path: Path, threads: int | None = None):
    """A CPU ONNX Runtime session, quiet, with ``threads`` intra-op threads when given."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _batches(items: Sequence, size: int, progress: bool) -> Iterable[tuple[int, Sequence]]:
    starts = range(0, len(items), size)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, total=len(starts), unit="batch", desc="predicting")
    for s in starts:
        yield s, items[s : s + size]
