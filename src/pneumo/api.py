"""The Python API: ``pneumo.load(bundle).predict(path)`` and friends, over the same pieces the CLI uses.

    import pneumo
    model = pneumo.load()                       # the shipped model (or a bundle folder)
    print(model.predict("film.jpeg").probability)

``predict`` takes a path, a folder, bytes, a PIL image, a ``read_image``-style array (float H×W in
[0, 1]) or a list of these, and answers one :class:`~pneumo.analysis.Analysis` per image from the
analysis service — exactly what ``pneumo predict``, the web app and the DICOM node answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pneumo.analysis import Analyser
from pneumo.bundle import load_bundle
from pneumo.data import load_dataset, resolve_data
from pneumo.data.sniff import ACCEPTED, sniff_file
from pneumo.errors import ConfigError
from pneumo.explain import DEFAULT_METHOD
from pneumo.inference import Predictor, default_bundle_path
from pneumo.inference.predictor import OnError
from pneumo.paths import output_dir

Input = str | Path | np.ndarray


class Model:
    """A loaded bundle. Thread-safe for ``predict`` (the predictor holds no per-call state)."""

    def __init__(self, bundle: str | Path | None = None, backend: str = "auto"):
        self.predictor = Predictor(Path(bundle) if bundle is not None else default_bundle_path(), backend=backend)
        self.bundle = self.predictor.bundle
        self.analyser = Analyser(self.predictor)

    @property
    def name(self) -> str:
        return self.bundle.name

    @property
    def version(self) -> str:
        return self.bundle.version

    @property
    def sha256(self) -> str:
        return self.bundle.sha256

    @property
    def operating_point(self) -> dict:
        return dict(self.bundle.meta["operating_point"])

    @property
    def metadata(self) -> dict:
        """``pneumo.json``: architecture, preprocessing, operating point, calibration, gate, training data."""
        return dict(self.bundle.meta)

    def predict(self, images: Input | Sequence[Input], *, on_error: OnError = "raise",
                batch_size: int = 32) -> Any:
        """One image → an :class:`~pneumo.analysis.Analysis`; a list (or a folder) → a list, in batches.

        The same answer as ``pneumo predict``, the web app and the DICOM node (one service,
        :mod:`pneumo.analysis`): ``.status`` (``decided``, ``flagged``, ``refused``), ``.headline``
        and ``.reason`` for a flagged or refused film, ``.probability`` (``None`` when refused),
        ``.decision``, ``.prediction`` (the model's raw answer).

        Inputs: a path, a folder (its JPEG/PNG/DICOM files, sorted), the file's ``bytes``, a PIL
        image, or a 2-D array — float in [0, 1] or ``uint8`` (÷ 255); NaN/inf pixels, other ranges
        and other integer types are refused with a message saying what was expected.
        For an unreadable input ``on_error="raise"`` raises its :class:`~pneumo.errors.PneumoError`,
        ``"skip"`` leaves it out, and ``"record"`` answers an analysis with ``status="error"``.
        """
        single = not isinstance(images, list | tuple) and not (isinstance(images, str | Path)
                                                              and Path(images).is_dir())
        items: list = [images] if single else _expand(images)
        out = self.analyser.analyse_many(items, on_error=on_error, batch_size=batch_size)
        return out[0] if single and out else out

    def explain(self, image: Input, method: str | None = None):
        """The image's :class:`~pneumo.analysis.Analysis` with its evidence: ``.evidence`` (an
        :class:`~pneumo.explain.Evidence`: ``.heatmap`` H×W in [0, 1] at the original geometry,
        ``.method``, ``.target``, ``.shows``) for an accepted film — what the page and report show —
        and ``None`` for a refused one (no heatmap is drawn for a film the model does not answer).
        A flagged film's ``.headline`` carries the population warning."""
        return self.analyser.analyse(image, heatmap=True, method=method or DEFAULT_METHOD)

    def __repr__(self) -> str:
        return f"pneumo.Model({self.name!r}, version {self.version}, weights {self.sha256[:12]})"


def _expand(images) -> list:
    """A list stays as given; a folder becomes its image files, sorted (hidden files and others skipped)."""
    if isinstance(images, str | Path):
        files = sorted(p for p in Path(images).rglob("*")
                       if p.is_file() and not p.name.startswith(".") and sniff_file(p) in ACCEPTED)  # by content
        if not files:
            raise ConfigError(f"{images}: no JPEG, PNG or DICOM files in this folder")
        return files
    return list(images)


def load(bundle: str | Path | None = None, backend: str = "auto") -> Model:
    """Load a bundle folder (default: ``$PNEUMO_MODEL`` or the shipped ``models/default``)."""
    return Model(bundle, backend)


def train(config: str | Path, data: str | Path | None = None, out: str | Path | None = None,
          overrides: Sequence[str] = ()) -> Path:
    """A finished bundle from a training config (→ ``OUT/bundle``, as ``pneumo train``) or from a recipe
    (→ ``OUT``, as ``pneumo build``); returns the bundle's path."""
    from pneumo.workflows.bundle import is_recipe, make_bundle, train_bundle  # lazy: Lightning

    if is_recipe(config):
        if out is None:
            raise ConfigError("building from a recipe needs out=BUNDLE_DIR")
        return make_bundle(config, out, data=data, overrides=overrides)
    return train_bundle(config, data=data, out=out, overrides=overrides)


def evaluate(bundle: str | Path, data: str | Path | None = None, split: str = "test",
             out: str | Path | None = None) -> dict:
    """Metrics with patient-bootstrap CIs at the bundle's saved operating point (as ``pneumo evaluate``)."""
    from pneumo.evaluation.runner import evaluate_bundle, select_split  # lazy: matplotlib, sklearn

    b = load_bundle(bundle)
    path = resolve_data(data)
    samples = select_split(load_dataset(path), split)
    out = Path(out) if out else output_dir("reports", f"{b.name}-{split}")
    return evaluate_bundle(b, samples, out, split=None if split == "all" else split, data_path=path)
