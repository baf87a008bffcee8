"""The work behind one prediction, run in a worker thread: the analysis service → pictures.

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

from pneumo.analysis import Analyser, Analysis
from pneumo.bundle import load_bundle
from pneumo.data.preprocess import fit_long_side
from pneumo.explain import heatmap_rgba_png
from pneumo.inference import Predictor
from pneumo.server.settings import ServerSettings


@dataclass
class Rendered:
    """The service's :class:`~pneumo.analysis.Analysis` plus what the page draws from it."""

    analysis: Analysis
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
        self.analyser = Analyser(self.predictor, max_pixels=settings.max_pixels, min_side=settings.min_side)
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
    def analyse(self, data: bytes, *, heatmap: bool, display: bool, frame: int | None = None) -> Rendered:
        """Uploaded bytes → the service's answer plus its pictures. Raises :class:`ImageError` for unreadable input.

        ``frame`` picks one frame of a multi-frame DICOM (such files are refused without it). The
        heatmap is computed by the service, only for accepted films (serialised by a lock: it bounds
        the transient batch memory)."""
        if heatmap:
            with self._explain_lock:
                a = self.analyser.analyse(data, frame=frame, heatmap=True)
        else:
            a = self.analyser.analyse(data, frame=frame)
        out = Rendered(a, warnings=list(a.warnings))  # the status and headline travel in their own fields
        film = a.display_pixels(self.settings.display_max_side) if (display or heatmap) else None
        if film is not None:
            out.display_png, out.display_size = self._display(film)
        if heatmap and a.status == "refused":
            out.warnings.append("No heatmap: the image was refused.")
        elif a.evidence is not None and out.display_size is not None:
            out.heatmap_png = heatmap_rgba_png(a.evidence.heatmap, out.display_size)
            out.heatmap_info = a.evidence.to_dict()
        if not display:
            out.display_png = None
        return out

    def _display(self, pixels: np.ndarray) -> tuple[bytes, tuple[int, int]]:
        """8-bit greyscale PNG, long side ≤ ``display_max_side``: what the page shows (DICOM included)."""
        nh, nw = fit_long_side(pixels.shape, self.settings.display_max_side)
        im = Image.fromarray(np.clip(pixels * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")
        if (nh, nw) != pixels.shape:  # Lanczos on the 8-bit film: the sharpest downscale for reading
            im = im.resize((nw, nh), Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        im.save(buf, format="PNG", compress_level=1)  # speed over size: it travels once, on a LAN
        return buf.getvalue(), im.size

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


