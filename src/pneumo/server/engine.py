"""The work behind one prediction, run in a worker thread: decode → predict (+ OOD) → pictures.

One :class:`Engine` per server process holds the bundle, loaded once. Everything here is blocking
and CPU-bound, so the routes call :meth:`Engine.analyse` through the engine's thread pool.
"""

from __future__ import annotations

import base64
import io
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from pneumo.bundle import load_bundle
from pneumo.data.imageio import ImageMeta, read_image
from pneumo.data.preprocess import fit_long_side
from pneumo.errors import ImageError
from pneumo.explain import explain_decision, heatmap_rgba_png
from pneumo.inference import ATYPICAL_WARNING, Prediction, Predictor
from pneumo.server.settings import ServerSettings

OOD_MESSAGE = (
    "This image does not look like a frontal chest X-ray, so no pneumonia probability is given. "
    "Check that the right image was chosen."
)
NO_OOD_WARNING = (
    "This model has no out-of-distribution check: the image was not verified to be a chest X-ray."
)


@dataclass
class Analysis:
    """The outcome of one image, before it becomes JSON."""

    meta: ImageMeta
    prediction: Prediction
    ood_flag: bool | None
    ood_score: float | None
    display_png: bytes | None = None
    display_size: tuple[int, int] | None = None
    heatmap_png: bytes | None = None
    heatmap_info: dict | None = None  # method, target (pneumonia|normal), shows: what the map means
    warnings: list[str] = field(default_factory=list)


def b64(data: bytes | None) -> str | None:
    return base64.b64encode(data).decode("ascii") if data is not None else None


class Engine:
    """A loaded bundle plus a bounded pool of inference threads."""

    def __init__(self, bundle_path: str | Path, settings: ServerSettings):
        self.settings = settings
        self.bundle = load_bundle(bundle_path)
        self.predictor = Predictor(self.bundle, backend=settings.backend, onnx_file=settings.onnx_file)
        self._explain_lock = threading.Lock()
        self.executor = ThreadPoolExecutor(max_workers=settings.threads, thread_name_prefix="pneumo-infer")

    # -- what the model is -------------------------------------------------------------------
    @property
    def ood_detector(self):
        """The bundle's population (Mahalanobis) detector, or ``None``."""
        return self.predictor.ood_detector

    @property
    def ood_block(self) -> dict | None:
        return self.bundle.meta.get("ood") if self.ood_detector is not None else None

    @property
    def ood_threshold(self) -> float | None:
        """The threshold of the refusal score: the chest-X-ray gate's, else the legacy OOD detector's."""
        return self.predictor.refusal_threshold

    # -- one image ---------------------------------------------------------------------------
    def analyse(self, data: bytes, *, heatmap: bool, display: bool, frame: int | None = None) -> Analysis:
        """Uploaded bytes → :class:`Analysis`. Raises :class:`ImageError` for unreadable input.

        ``frame`` picks one frame of a multi-frame DICOM (such files are refused without it).
        """
        pixels, meta = read_image(data, max_pixels=self.settings.max_pixels, frame=frame)
        if min(meta.width, meta.height) < self.settings.min_side:
            raise ImageError(
                f"The image is only {meta.width}×{meta.height} pixels; a chest X-ray needs at least "
                f"{self.settings.min_side} pixels a side (typically over 1000).",
                code="image_too_small",
            )
        pred = self.predictor.predict([pixels])[0]
        flag, score = self._ood_of(pred, pixels)
        out = Analysis(meta, pred, flag, score)
        if flag is None:
            out.warnings.append(NO_OOD_WARNING)
        if pred.population == "atypical":
            out.warnings.append(ATYPICAL_WARNING[0].upper() + ATYPICAL_WARNING[1:] + ".")
        size = self.bundle.spec.size
        if min(meta.width, meta.height) < size:
            out.warnings.append(
                f"The image ({meta.width}×{meta.height}) is smaller than the model's input ({size}×{size}); "
                "results on low-resolution images are less reliable."
            )
        if display or heatmap:
            out.display_png, out.display_size = self._display(pixels)
        if heatmap and flag:
            out.warnings.append("No heatmap: the image was refused as not a chest X-ray.")
        elif heatmap:
            if out.display_size is None:  # set just above whenever a heatmap is asked for
                raise RuntimeError("no display size for the heatmap")
            out.heatmap_png, out.heatmap_info = self._heatmap(pixels, pred.decision, out.display_size)
        if not display:
            out.display_png = None
        return out

    def _ood_of(self, pred: Prediction, pixels: np.ndarray) -> tuple[bool | None, float | None]:
        """The predictor already applied the gate (and the population score) to ``pred``."""
        if self.ood_detector is None and self.predictor.gate is None:
            return None, None
        return bool(pred.ood), (None if pred.ood_score is None else float(pred.ood_score))

    def _display(self, pixels: np.ndarray) -> tuple[bytes, tuple[int, int]]:
        """8-bit greyscale PNG, long side ≤ ``display_max_side``: what the page shows (DICOM included)."""
        nh, nw = fit_long_side(pixels.shape, self.settings.display_max_side)
        im = Image.fromarray(np.clip(pixels * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")
        if (nh, nw) != pixels.shape:  # Lanczos on the 8-bit film: the sharpest downscale for reading
            im = im.resize((nw, nh), Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        im.save(buf, format="PNG", compress_level=1)  # speed over size: it travels once, on a LAN
        return buf.getvalue(), im.size

    def _heatmap(self, pixels: np.ndarray, decision: str, size: tuple[int, int]) -> tuple[bytes, dict]:
        """The decision's evidence (PNEUMONIA → for, NORMAL → against) as the page's RGBA layer.

        The bundle's persistent explainer holds no per-call state (no model copy, no hook left behind),
        so repeated heatmaps keep memory flat; the lock only bounds the transient batch memory."""
        with self._explain_lock:
            ev = explain_decision(self.bundle, pixels, decision)
        return heatmap_rgba_png(ev.heatmap, size), ev.to_dict()

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


