"""``analyse``: the one answer pneumo gives about one film, for every surface that shows one.

The web app and REST API, the DICOM node, the Python API (``pneumo.load().predict``), ``pneumo
predict`` and ``pneumo explain`` all call :meth:`Analyser.analyse` / :meth:`Analyser.analyse_many`
and only *render* its :class:`Analysis`. So the same file gets the same status, reason, probability
and heatmap everywhere, and a rule added here (a header policy, a population check) reaches every
surface at once.

The path of one film::

    bytes / path / pixels ──DICOM header──▶ header policy ──▶ refused (never decoded) / flagged / go on
        ──read_image──▶ pixels ──Predictor──▶ gate (refused) → logit, population (flagged) → probability
        ──explain (accepted films only)──▶ heatmap

Status: ``decided`` (an answer inside what the model was validated on), ``flagged`` (an answer, led
by "Outside the validated population — <reason>"), ``refused`` (no answer: not a chest X-ray, or a
header that rules the film out), ``error`` (the input could not be read; only with
``on_error="record"``).

Why a module above :mod:`pneumo.inference` and :mod:`pneumo.explain` rather than inside either: the
explainer scores through the inference ``Predictor``, so the service that joins them sits over both
and the import graph keeps one direction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from pneumo.bundle import Bundle
from pneumo.data.header_policy import HeaderFinding, HeaderPolicy, check_header, read_header
from pneumo.data.imageio import DEFAULT_MAX_PIXELS, ImageMeta, decode_image, load_bytes, read_image
from pneumo.data.preprocess import resample
from pneumo.data.sniff import is_dicom, looks_like_bare_dicom
from pneumo.errors import ConfigError, ImageError, PneumoError
from pneumo.explain import DEFAULT_METHOD, Evidence, explain_decision
from pneumo.inference import NOT_A_CXR, Prediction, Predictor

Status = Literal["decided", "flagged", "refused", "error"]
REFUSED_HEADLINE = {
    "not_a_chest_xray": "Not a chest X-ray",
    "lateral_view": "Not a frontal chest X-ray",
    "not_a_radiograph": "Not a chest X-ray",
    "other_body_part": "Not a chest X-ray",
    "far_outside_population": "Outside the validated population",
}
FLAGGED_HEADLINE = "Outside the validated population"
NO_GATE_WARNING = "This model has no chest-X-ray gate: the image was not verified to be a chest X-ray."
Source = str | Path | bytes | np.ndarray  # or a PIL image


@dataclass
class Analysis:
    """One film's answer.

    ``status`` says how to present it; ``code``/``reason`` say why a film was refused or flagged (the
    first reason; ``flags`` holds every one as ``(code, reason)``). ``prediction`` is the model's
    answer — ``None`` when the film was refused from its header (never decoded) or unreadable; for a
    refused film its probability is not a finding and must not be shown as one. ``evidence`` is the
    heatmap, only for accepted films and only when asked for.
    """

    path: str | None  # the path as given; None for bytes, arrays and PIL images
    status: Status
    prediction: Prediction | None = None
    meta: ImageMeta | None = None
    code: str | None = None
    reason: str | None = None
    flags: list[tuple[str, str]] = field(default_factory=list)
    evidence: Evidence | None = None
    warnings: list[str] = field(default_factory=list)
    error: PneumoError | None = None
    # what the model saw (maybe a reduced decode) and the file's bytes (to re-read for display): kept by
    # Analyser.analyse, let go after each batch by analyse_many unless keep_pixels
    pixels: np.ndarray | None = field(default=None, repr=False)
    data: bytes | None = field(default=None, repr=False)
    frame: int | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS

    @property
    def accepted(self) -> bool:
        return self.status in ("decided", "flagged")

    @property
    def refused(self) -> bool:
        return self.status == "refused"

    @property
    def probability(self) -> float | None:
        """The calibrated probability, or ``None`` when there is no finding (refused, error)."""
        return self.prediction.probability if self.accepted and self.prediction is not None else None

    @property
    def decision(self) -> str:
        """``PNEUMONIA``/``NORMAL`` for an accepted film, ``NOT_A_CHEST_XRAY`` when the gate refused it,
        ``REFUSED`` when its header did, ``ERROR`` when it could not be read."""
        if self.status == "error":
            return "ERROR"
        if self.prediction is not None and self.status != "refused":
            return self.prediction.decision
        return NOT_A_CXR if self.code == "not_a_chest_xray" else "REFUSED"

    def display_pixels(self, max_side: int) -> np.ndarray | None:
        """The film for people to look at, at least ``max_side`` px on its short side where the file has
        them: the model's pixels may come from a reduced JPEG decode (``read_image(target=…)``), too
        coarse for a viewer. ``None`` when the film was never decoded (refused from its header)."""
        if self.data is None or self.pixels is None:
            return self.pixels
        full = self.meta is None or self.pixels.shape == (self.meta.height, self.meta.width)
        if full or min(self.pixels.shape) >= max_side:
            return self.pixels
        return read_image(self.data, target=max_side, frame=self.frame, max_pixels=self.max_pixels)[0]

    @property
    def headline(self) -> str | None:
        """What a person reads first for a refused or flagged film: "<headline> — <reason>"."""
        if self.status == "refused":
            return f"{REFUSED_HEADLINE.get(self.code or '', 'No result')} — {self.reason}"
        if self.status == "flagged":
            return f"{FLAGGED_HEADLINE} — {self.reason}"
        return None

    def to_dict(self) -> dict:
        """What ``pneumo predict --json`` and the Python API's users read (no pixels, no heatmap array)."""
        p = self.prediction
        return {
            "path": self.path,
            "status": self.status,
            "decision": self.decision,
            "probability": self.probability,
            "threshold": None if p is None else p.threshold,
            "logit": None if p is None or not self.accepted else p.logit,
            "reason_code": self.code,
            "reason": self.reason,
            "headline": self.headline,
            "flags": [{"code": c, "reason": r} for c, r in self.flags],
            "gate_score": None if p is None else p.ood_score,
            "population": None if p is None else p.population,
            "population_score": None if p is None else p.population_score,
            "warnings": list(self.warnings),
            "error": None if self.error is None else str(self.error),
        }


class Analyser:
    """A bundle's :class:`Predictor` plus its header policy: the film → :class:`Analysis` service.

    Args:
        predictor: a :class:`Predictor`, a loaded :class:`Bundle` or a bundle directory.
        policy: the header policy; default the bundle's (``pneumo.json`` → ``header_policy``).
        max_pixels, min_side: the decoding limits (checked from the header, before decoding).
    """

    def __init__(self, predictor: Predictor | Bundle | str | Path, policy: HeaderPolicy | None = None, *,
                 max_pixels: int = DEFAULT_MAX_PIXELS, min_side: int = 32):
        self.predictor = predictor if isinstance(predictor, Predictor) else Predictor(predictor)
        self.bundle = self.predictor.bundle
        self.policy = policy if policy is not None else HeaderPolicy.from_meta(self.bundle.meta)
        self.max_pixels, self.min_side = max_pixels, min_side

    @property
    def has_gate(self) -> bool:
        """Whether refusals come from a chest-X-ray gate (or a legacy refusing OOD detector)."""
        return self.predictor.refusal_threshold is not None

    @property
    def has_population(self) -> bool:
        """Whether the population check ("is it like the validation films?") runs: a gate *and* a population model."""
        return self.predictor.gate is not None and self.predictor.ood_detector is not None

    # -- one film ------------------------------------------------------------------------------
    def analyse(self, source: Source, *, frame: int | None = None, heatmap: bool = False,
                method: str = DEFAULT_METHOD) -> Analysis:
        """One film → its :class:`Analysis`, keeping its pixels and bytes (for a display copy, a picture).
        Unreadable input raises :class:`ImageError`."""
        return self.analyse_many([source], frame=frame, heatmap=heatmap, method=method, on_error="raise",
                                 keep_pixels=True)[0]

    def analyse_many(self, sources: Sequence[Source], *, frame: int | None = None, heatmap: bool = False,
                     method: str = DEFAULT_METHOD, on_error: str = "raise", batch_size: int = 32,
                     progress: bool | str = False, keep_pixels: bool = False) -> list[Analysis]:
        """Many films → one :class:`Analysis` each, in order; the model runs in batches.

        ``on_error``: ``"raise"`` raises the first unreadable input's error, ``"skip"`` leaves it out,
        ``"record"`` answers an ``error`` analysis for it. ``keep_pixels``: keep each film's pixels and
        bytes in its analysis; without it they are let go once its batch is answered, so a folder of
        thousands of films holds one batch of pixels at a time.
        """
        if on_error not in ("raise", "skip", "record"):
            raise ConfigError(f"on_error must be 'raise', 'skip' or 'record', got {on_error!r}")
        out: list[Analysis] = []
        pending: list[Analysis] = []
        if progress:
            from tqdm import tqdm  # lazy: only a command line shows a bar

            sources = tqdm(sources, unit="img", desc=progress if isinstance(progress, str) else "analysing")
        for src in sources:
            try:
                a = self._read(src, frame)
            except PneumoError as exc:
                if on_error == "raise":
                    raise
                if on_error == "record":
                    out.append(Analysis(_name(src), "error", error=exc, code=exc.code, reason=str(exc)))
                continue
            out.append(a)
            if a.pixels is not None:
                pending.append(a)
            if len(pending) >= batch_size:
                self._answer(pending, heatmap, method, keep_pixels)
                pending = []
        if pending:
            self._answer(pending, heatmap, method, keep_pixels)
        return out

    def _answer(self, films: list[Analysis], heatmap: bool, method: str, keep_pixels: bool) -> None:
        """One batch of films that were read: the model, then each accepted film's heatmap if asked for."""
        self._predict(films)
        for a in films:
            if heatmap and a.accepted and a.pixels is not None and a.prediction is not None:
                a.evidence = explain_decision(self.bundle, a.pixels, a.prediction.decision, method)
                if a.meta is not None:  # the map at the film's own geometry, whatever size was decoded
                    a.evidence.heatmap = resample(a.evidence.heatmap, a.meta.height, a.meta.width)
            if not keep_pixels:
                a.pixels = a.data = None

    # -- the steps -----------------------------------------------------------------------------
    def _read(self, src: Source, frame: int | None) -> Analysis:
        """Header policy first (a refused DICOM is never decoded), then ``read_image``."""
        name = _name(src)
        findings: list[HeaderFinding] = []
        if isinstance(src, np.ndarray):
            return Analysis(name, "decided", pixels=check_pixels(src))
        if _is_pil(src):
            return Analysis(name, "decided", pixels=pil_pixels(src))
        if not isinstance(src, str | Path | bytes | bytearray | memoryview):
            raise ConfigError(f"cannot analyse a {type(src).__name__}: give a file path, the file's bytes, a PIL "
                              "image, or a float H×W array in [0, 1]")
        data, source = load_bytes(src)
        if is_dicom(data) or looks_like_bare_dicom(data):
            header = read_header(data)
            if header is not None:
                findings = check_header(header, self.policy)
        refusals = [f for f in findings if f.action == "refuse"]
        flags = [(f.code, f.reason) for f in findings if f.action == "flag"]
        if refusals:
            first = refusals[0]
            return Analysis(name, "refused", code=first.code, reason=first.reason,
                            flags=[(f.code, f.reason) for f in findings])
        # the model needs spec.size px: a JPEG may be decoded at a reduced DCT scale, as training reads it
        pixels, meta = decode_image(data, source, max_pixels=self.max_pixels, frame=frame, min_side=self.min_side,
                                    target=self.bundle.spec.size)
        return Analysis(name, "decided", meta=meta, pixels=pixels, flags=flags, data=data, frame=frame,
                        max_pixels=self.max_pixels)

    def _predict(self, films: list[Analysis]) -> None:
        """Run the model on films that were read, and settle each one's status."""
        preds = self.predictor.predict([a.pixels for a in films if a.pixels is not None])
        size = self.bundle.spec.size
        for a, p in zip(films, preds, strict=True):
            a.prediction = p
            if p.ood and p.population == "far":
                a.flags.insert(0, ("far_outside_population", p.reason or "too far outside the validated films"))
            elif p.ood:
                a.flags.insert(0, ("not_a_chest_xray", p.reason or "it does not look like a frontal chest X-ray"))
            elif p.population == "atypical":
                a.flags.append(("atypical_population", population_reason(p, self.predictor)))
            if not self.has_gate:
                a.warnings.append(NO_GATE_WARNING)
            if a.meta is not None and min(a.meta.width, a.meta.height) < size:
                a.warnings.append(f"The image ({a.meta.width}×{a.meta.height}) is smaller than the model's input "
                                  f"({size}×{size}); results on low-resolution images are less reliable.")
            a.status, a.code, a.reason = _status(a.flags, p)


def _status(flags: list[tuple[str, str]], p: Prediction) -> tuple[Status, str | None, str | None]:
    if p.ood:
        return "refused", flags[0][0], flags[0][1]
    if flags:
        return "flagged", flags[0][0], flags[0][1]
    return "decided", None, None


def population_reason(p: Prediction, predictor: Predictor) -> str:
    if p.population_reason:  # the population model's own words (which view, which limit)
        return f"the film is unlike those the model was validated on: {p.population_reason}"
    det = predictor.ood_detector
    limit = f" (limit {det.threshold:.2f})" if det is not None else ""
    score = "" if p.population_score is None else f"; population score {p.population_score:.2f}{limit}"
    return f"the film is unlike those the model was validated on{score}"


def check_pixels(pixels: np.ndarray) -> np.ndarray:
    """A caller's pixel array → float32 ``H×W`` in [0, 1], or a :class:`ImageError` that says what was expected.

    Accepted: 2-D grayscale floats in [0, 1] (pneumo's convention, brighter = denser), and ``uint8``
    arrays (an 8-bit image: divided by 255). Refused with a message: NaN or infinite values, floats
    outside [0, 1] (a 0–255 float array is not guessed at: divide by 255, or pass the file), other
    integer types (their white level is unknown: 12-bit data in uint16 is common), colour or stacked
    arrays.
    """
    a = np.asarray(pixels)
    if a.ndim != 2:
        raise ImageError(f"pixel arrays must be 2-D grayscale H×W floats in [0, 1], got shape {a.shape}"
                         + (" (a colour image: convert it to grayscale first)" if a.ndim == 3 else ""),
                         code="bad_pixels")
    if a.dtype == np.uint8:
        return a.astype(np.float32) / 255.0
    if not np.issubdtype(a.dtype, np.floating):
        raise ImageError(f"pixel arrays must be floats in [0, 1] or uint8, got dtype {a.dtype} (scale it to "
                         "[0, 1] yourself, or pass the file's path so pneumo reads it)", code="bad_pixels")
    a = a.astype(np.float32, copy=False)
    if not np.isfinite(a).all():
        raise ImageError("the pixel array holds NaN or infinite values; expected floats in [0, 1]",
                         code="bad_pixels")
    lo, hi = float(a.min()), float(a.max())
    if lo < 0 or hi > 1:
        raise ImageError(f"pixel values run from {lo:g} to {hi:g}; expected floats in [0, 1] (for 8-bit data "
                         "divide by 255, or pass the file's path so pneumo reads it)", code="bad_pixels")
    return a


def _is_pil(obj) -> bool:
    return type(obj).__module__.startswith("PIL.")


def pil_pixels(im) -> np.ndarray:
    """A PIL image → float32 ``H×W`` in [0, 1]: luminance of colour images, 16-bit modes by their full range."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(im, dtype=np.float32)
        return check_pixels(a / (65535.0 if im.mode.startswith("I;16") else max(float(a.max()), 1.0)))
    return check_pixels(np.asarray(im.convert("L")))


def _name(src) -> str | None:
    return str(src) if isinstance(src, str | Path) else None


__all__ = ["Analyser", "Analysis", "check_pixels"]
