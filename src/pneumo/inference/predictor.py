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

One batch loop: :meth:`Predictor.predict` (findings), :meth:`Predictor.logits_for` (logits only, for
evaluation) and :meth:`Predictor.features` (logits, embeddings, image statistics, for OOD fitting and
export parity) all run items — file paths, ``read_image`` arrays, or a mix — through the same
read → preprocess → batch → model loop, with ``on_error`` saying what an unreadable file does.

Thread safety: ``ort.InferenceSession.run`` and torch inference are safe to call from several threads;
a ``Predictor`` holds no per-call state.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal, NamedTuple, overload

import numpy as np
import torch

from pneumo.bundle import Bundle, load_bundle
from pneumo.data.imageio import read_image
from pneumo.data.preprocess import preprocess
from pneumo.decision import decision_name
from pneumo.errors import BundleError, ConfigError, PneumoError
from pneumo.inference.gate import ChestGate
from pneumo.inference.gate_features import geometry_reason
from pneumo.inference.ood import OODDetector, image_statistics
from pneumo.inference.population import Assessment, PopulationModel, stack_views

NOT_A_CXR = "NOT_A_CHEST_XRAY"


ON_ERROR = ("raise", "skip", "record")
OnError = Literal["raise", "skip", "record"]

Item = str | Path | np.ndarray
Items = Item | Sequence[Item]


@dataclass
class Prediction:
    """One image's answer. When ``ood`` is true the image is not a chest X-ray: ``decision`` is
    ``NOT_A_CHEST_XRAY``, ``reason`` says why, and the probability must not be shown as a finding.

    ``ood_score`` is the refusal score (the gate's P(not a chest X-ray), or the Mahalanobis score for
    a bundle without a gate). ``population`` is ``'atypical'`` when the film is unlike the model's
    validation films (``population_score`` above its threshold): the answer stands, with a warning.
    ``None`` when refused or when the bundle has no population model. With a population model
    (:mod:`pneumo.inference.population`) ``population_score`` is 1.0 at the flag limit,
    ``population_reason`` says why a film is atypical, and ``population == 'far'`` marks a film refused
    for being too far outside (``ood`` true, ``reason`` = ``population_reason``).
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
    population_reason: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Outcome:
    """One item's outcome with ``on_error="record"``: ``error`` set, or the answer.

    A separate type rather than an ``error`` field on :class:`Prediction`, so a ``Prediction`` is
    always a complete answer (no ``None`` probability to guard against in the server, the report or
    the DICOM SR) and the error keeps its :class:`PneumoError` (``code``, ``status``) for whoever needs it.

    ``path``: the path as given (``str``), ``None`` for a pixel array. ``logit``: set whenever the item
    was read (by :meth:`Predictor.logits_for` too). ``prediction``: set by :meth:`Predictor.predict`.
    """

    path: str | None
    prediction: Prediction | None = None
    logit: float | None = None
    error: PneumoError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def message(self) -> str | None:
        """The error's message (it names the file), or ``None``."""
        return None if self.error is None else str(self.error)


class Features(NamedTuple):
    """:meth:`Predictor.features`: per readable item, in order."""

    logits: np.ndarray  # N, float32
    embeddings: np.ndarray  # N×D, float32
    image_stats: np.ndarray  # N×N_IMAGE_STATS, float64 (pneumo.inference.ood.image_statistics)


class Predictor:
    """Probabilities (and OOD flags) from a bundle for files or pixel arrays (:meth:`predict`).

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
        if backend == "onnx" and onnx_path is not None:
            self._session = ort_session(onnx_path, threads)
            self._input = self._session.get_inputs()[0].name
            self._outputs = [o.name for o in self._session.get_outputs()]
            self._has_embedding_output = "embedding" in self._outputs
        elif threads:
            torch.set_num_threads(threads)
        self.checks = ood
        self.ood_detector: OODDetector | None = OODDetector.load(self.bundle) if ood else None
        self.gate: ChestGate | None = ChestGate.load(self.bundle) if ood else None
        self.population: PopulationModel | None = (
            PopulationModel.load(self.bundle) if ood and self.gate is not None and self.ood_detector is not None
            else None)

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

    # -- the model on a preprocessed batch ---------------------------------------------------
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
        with torch.inference_mode():
            logit, emb = self.bundle.model.logit_and_embedding(torch.from_numpy(batch))
        return logit.float().numpy().reshape(-1), emb.float().numpy()

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        """Calibrated probabilities: ``sigmoid(logit / temperature + bias)`` (the bundle's Platt calibration)."""
        return self.bundle.probability(logits)

    # -- images: the one batch loop ----------------------------------------------------------
    @overload
    def predict(self, items: Items, *, batch_size: int = ..., on_error: Literal["raise", "skip"] = ...,
                progress: bool | str = ...) -> list[Prediction]: ...
    @overload
    def predict(self, items: Items, *, batch_size: int = ..., on_error: Literal["record"],
                progress: bool | str = ...) -> list[Outcome]: ...
    def predict(
        self, items: Items, *, batch_size: int = 32, on_error: str = "raise", progress: bool | str = False
    ) -> list[Prediction] | list[Outcome]:
        """Paths and/or ``read_image`` arrays (float32 H×W in [0, 1], any sizes) → one answer each, in order.

        ``on_error`` decides what an unreadable file (or a bad array) does: ``"raise"`` raises its
        :class:`PneumoError` (the message names the file); ``"skip"`` leaves it out; with either the
        result is a list of :class:`Prediction`. ``"record"`` returns one :class:`Outcome` per item
        instead (``prediction`` or ``error``), so a report can keep a row per input.
        ``progress``: a bar over the batches (a string names it; ``True`` → "predicting").
        """
        out = self._run(items, batch_size, on_error, progress, self._fill_predictions)
        return out if on_error == "record" else [o.prediction for o in out if o.prediction is not None]

    @overload
    def logits_for(self, items: Items, *, batch_size: int = ..., on_error: Literal["raise", "skip"] = ...,
                   progress: bool | str = ...) -> np.ndarray: ...
    @overload
    def logits_for(self, items: Items, *, batch_size: int = ..., on_error: Literal["record"],
                   progress: bool | str = ...) -> list[Outcome]: ...
    def logits_for(
        self, items: Items, *, batch_size: int = 32, on_error: str = "raise", progress: bool | str = False
    ) -> np.ndarray | list[Outcome]:
        """As :meth:`predict`, logits only (no gate, no population score): float32 ``N`` raw logits
        (before temperature) for ``"raise"``/``"skip"``, one :class:`Outcome` each (``logit`` or
        ``error``, ``prediction`` ``None``) for ``"record"``. What evaluation and calibration score."""
        out = self._run(items, batch_size, on_error, progress, self._fill_logits)
        return out if on_error == "record" else np.array([o.logit for o in out], dtype=np.float32)

    def features(self, items: Items, *, batch_size: int = 64, progress: bool | str = False) -> Features:
        """Logits, embeddings and :func:`image_statistics` for readable items (errors raise): what
        fitting the OOD detector and checking an ONNX export against torch need."""
        parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

        def fill(done: list[Outcome], pixels: list[np.ndarray], batch: np.ndarray) -> None:
            logits, emb = self.logits_and_embeddings(batch)
            for o, v in zip(done, logits, strict=True):
                o.logit = float(v)
            parts.append((logits, emb, np.stack([image_statistics(p) for p in pixels])))

        self._run(items, batch_size, "raise", progress, fill)
        if not parts:
            raise ConfigError("no images to compute features for")
        return Features(*(np.concatenate(col) for col in zip(*parts, strict=True)))

    def _run(self, items: Items, batch_size: int, on_error: str, progress: bool | str, fill) -> list[Outcome]:
        """The loop every call above shares: per batch of ``batch_size`` items, read (or take) the
        pixels, preprocess the readable ones, and hand them to ``fill(outcomes, pixels, batch)``."""
        if on_error not in ON_ERROR:
            raise ConfigError(f"on_error must be one of {', '.join(map(repr, ON_ERROR))}, got {on_error!r}")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
        items = [items] if isinstance(items, str | Path | np.ndarray) else list(items)
        out: list[Outcome] = []
        for chunk in _batches(items, batch_size, progress):
            done, pixels = [], []
            for item in chunk:
                o = Outcome(None if isinstance(item, np.ndarray) else str(item))
                try:
                    pixels.append(as_pixels(item, target=self.spec.size))  # only the model input: a JPEG may DCT-scale
                    done.append(o)
                except PneumoError as exc:
                    if on_error == "raise":
                        raise
                    o.error = exc
                if o.error is None or on_error == "record":
                    out.append(o)
            if pixels:
                fill(done, pixels, np.stack([preprocess(p, self.spec) for p in pixels]))
        return out

    def _fill_logits(self, done: list[Outcome], pixels: list[np.ndarray], batch: np.ndarray) -> None:
        for o, v in zip(done, self.logits(batch), strict=True):
            o.logit = float(v)

    def _fill_predictions(self, done: list[Outcome], pixels: list[np.ndarray], batch: np.ndarray) -> None:
        n = len(pixels)
        pop: list[float | None] = [None] * n
        found: list[Assessment | None] = [None] * n
        gate: list[tuple[float, str | None] | None] = [None] * n
        if self.gate is not None:  # its features once per film: the population check reads them too
            features, answers = self.gate.check_many(pixels)
            gate = list(answers)
        if self.ood_detector is None:
            logits = self.logits(batch)
        else:
            logits, emb = self.logits_and_embeddings(batch)
            stats = np.stack([image_statistics(p) for p in pixels]) if self.ood_detector.uses_image_stats else None
            pop = [float(v) for v in self.ood_detector.score(emb, stats)]
            if self.population is not None and self.gate is not None and stats is not None:
                found = self._assess(emb, stats, pop, features, answers)
        for o, v, p, s, a, g in zip(done, logits, pixels, pop, found, gate, strict=True):
            o.logit = float(v)
            o.prediction = self._prediction(o.logit, p, s, a, g)

    def _assess(self, emb: np.ndarray, stats: np.ndarray, distances: list[float | None], gate_features: np.ndarray,
                gate: list[tuple[float, str | None]]) -> list[Assessment | None]:
        """The population model's answers. A film the gate refuses (its shape included) gets one too, which
        :meth:`_prediction` ignores: the gate's refusal comes first."""
        assert self.population is not None
        return list(self.population.assess(stack_views(emb, stats, gate_features),
                                           np.array(distances, dtype=np.float64), np.array([s for s, _ in gate])))

    def _prediction(self, logit: float, pixels: np.ndarray, pop: float | None,
                    found: Assessment | None = None, gate: tuple[float, str | None] | None = None) -> Prediction:
        det = self.ood_detector  # ``pop`` is its score, ``None`` without one
        prob = float(self.probabilities(np.array([logit]))[0])
        out = Prediction(logit, prob, decision_name(logit, self.bundle.threshold_logit),
                         self.bundle.threshold, population_score=pop)
        if gate is not None:
            out.ood_score, out.reason = gate
        elif self.checks:
            out.reason = geometry_reason(*pixels.shape)
            if pop is not None and det is not None:  # a bundle without a gate: the Mahalanobis score refuses
                out.ood_score = pop
                if pop > det.threshold:
                    out.reason = out.reason or "unlike the training X-rays (no chest-X-ray gate in this bundle)"
        if out.reason is None and found is not None:  # the population model: typical, atypical, or too far to answer
            out.population, out.population_score, out.population_reason = found.status, found.score, found.reason
            if found.status == "far":
                out.reason = found.reason
        elif out.reason is None and pop is not None and det is not None:
            out.population = "atypical" if pop > det.threshold else "typical"
        if out.reason is not None:
            out.ood, out.decision = True, NOT_A_CXR
        return out


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


def as_pixels(item: Item, target: int | None = None) -> np.ndarray:
    """A path (read with :func:`read_image`) or a ``read_image``-style array → float32 ``H×W`` pixels.

    ``target``: only a ``target``-px model input (and the gate's 64-px views) will be made from a path's
    pixels, so a JPEG may be decoded at a reduced size (``read_image(target=...)``); arrays pass as given."""
    if isinstance(item, np.ndarray):
        if item.ndim != 2:
            raise ConfigError(f"pixel arrays must be 2-D grayscale H×W in [0, 1], got shape {item.shape}")
        return item.astype(np.float32, copy=False)
    if isinstance(item, str | Path):
        return read_image(item, target=target)[0]
    raise ConfigError(f"cannot predict a {type(item).__name__}: give a file path or a read_image array")


def _batches(items: Sequence, size: int, progress: bool | str) -> Iterable[Sequence]:
    starts = range(0, len(items), size)
    if progress:
        from tqdm import tqdm

        desc = progress if isinstance(progress, str) else "predicting"
        starts = tqdm(starts, total=len(starts), unit="batch", desc=desc)
    for s in starts:
        yield items[s : s + size]
