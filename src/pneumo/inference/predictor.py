"""``Predictor``: a bundle's model behind one call, on the shared read → preprocess path.

Two questions before a finding: the bundle's chest-X-ray gate (:mod:`pneumo.inference.gate`) refuses
what is not a frontal chest radiograph (``NOT_A_CHEST_XRAY``); the Mahalanobis score on the model's
embedding (:mod:`pneumo.inference.ood`) marks the rest ``population='typical'|'atypical'``, a warning
only. A bundle fitted before the gate existed (``ood`` but no ``gate``) refuses on the Mahalanobis
score as it always did.

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

from pneumo.bundle import Bundle, load_bundle
from pneumo.data.imageio import read_image
from pneumo.data.preprocess import preprocess
from pneumo.errors import BundleError, ConfigError, PneumoError
from pneumo.inference.gate import ChestGate
from pneumo.inference.gate_features import geometry_reason
from pneumo.inference.ood import OODDetector, image_statistics

NOT_A_CXR = "NOT_A_CHEST_XRAY"


ATYPICAL_WARNING = "outside the population this model was validated on: results may be unreliable"


@dataclass
class Prediction:
    """One image's answer. When ``ood`` is true the image is not a chest X-ray: ``decision`` is
    ``NOT_A_CHEST_XRAY``, ``reason`` says why, and the probability must not be shown as a finding.

    ``ood_score`` is the refusal score (the gate's P(not a chest X-ray), or the Mahalanobis score for
    a bundle without a gate). ``population`` is ``'atypical'`` when the film is unlike the model's
    validation films (``population_score`` above its threshold): the answer stands, with a warning.
    ``None`` when refused or when the bundle has no population model.
    """

    logit: float
    probability: float
    decision: str
    threshold: float
    ood_score: float | None = None
    ood: bool = False
    population: str | None = None
    population_score: float | None = None
    reason: str | None = None

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
        ood: use the bundle's gate and population (OOD) models if it has them, and the geometry rule.
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
        onnx_path = None if backend == "torch" else self._onnx_path(onnx_file)
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
        self.checks = ood
        self.ood_detector: OODDetector | None = OODDetector.load(self.bundle) if ood else None
        self.gate: ChestGate | None = ChestGate.load(self.bundle) if ood else None

    @property
    def refusal_threshold(self) -> float | None:
        """The threshold ``ood_score`` is compared with: the gate's, else the legacy OOD detector's."""
        if self.gate is not None:
            return self.gate.threshold
        return self.ood_detector.threshold if self.ood_detector is not None else None

    def _onnx_path(self, onnx_file: str | None) -> Path | None:
        """The ONNX file to run: an absolute path as given, else a bundle file made from its weights."""
        if onnx_file and Path(onnx_file).is_absolute():
            if not Path(onnx_file).is_file():
                raise ConfigError(f"{onnx_file}: no such ONNX file")
            return Path(onnx_file)
        if not onnx_file:
            return self.bundle.onnx_path
        path = self.bundle.derived_file(onnx_file)
        if path is None:
            raise ConfigError(f"{self.bundle.path / onnx_file}: no such ONNX file in the bundle")
        return path

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
        return self.bundle.probability(logits)

    def predict_pixels(self, pixels: np.ndarray) -> Prediction:
        """``read_image`` pixels (float32 H×W in [0, 1]) → a :class:`Prediction` (with OOD if fitted)."""
        return self.predict_batch([pixels])[0]

    def predict_batch(self, pixels: Sequence[np.ndarray]) -> list[Prediction]:
        """Several ``read_image`` arrays (any sizes) → one :class:`Prediction` each, one forward pass."""
        if len(pixels) == 0:
            return []
        batch = np.stack([preprocess(p, self.spec) for p in pixels])
        if self.ood_detector is None:
            logits, pop = self.logits(batch), [None] * len(pixels)
        else:
            logits, emb = self.logits_and_embeddings(batch)
            stats = np.stack([image_statistics(p) for p in pixels]) if self.ood_detector.uses_image_stats else None
            pop = [float(v) for v in self.ood_detector.score(emb, stats)]
        return [self._prediction(float(v), p, s) for v, p, s in zip(logits, pixels, pop, strict=True)]

    def _prediction(self, logit: float, pixels: np.ndarray, pop: float | None) -> Prediction:
        prob = float(self.probabilities(np.array([logit]))[0])
        out = Prediction(logit, prob, "PNEUMONIA" if logit >= self.bundle.threshold_logit else "NORMAL",
                         self.bundle.threshold, population_score=pop)
        if self.gate is not None:
            out.ood_score, out.reason = self.gate.check(pixels)
        elif self.checks:
            out.reason = geometry_reason(*pixels.shape)
            if pop is not None:  # a bundle without a gate: the Mahalanobis score refuses, as before
                out.ood_score = pop
                if pop > self.ood_detector.threshold:
                    out.reason = out.reason or "unlike the training X-rays (no chest-X-ray gate in this bundle)"
        if out.reason is not None:
            out.ood, out.decision = True, NOT_A_CXR
        elif pop is not None:
            out.population = "atypical" if pop > self.ood_detector.threshold else "typical"
        return out

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
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own types (InvalidProtobuf, Fail, ...) on bad files
        msg = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise BundleError(f"{path}: not a usable ONNX model ({msg})") from exc


def _batches(items: Sequence, size: int, progress: bool) -> Iterable[tuple[int, Sequence]]:
    starts = range(0, len(items), size)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, total=len(starts), unit="batch", desc="predicting")
    for s in starts:
        yield s, items[s : s + size]
