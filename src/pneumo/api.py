"""The Python API: ``pneumo.load(bundle).predict(path)`` and friends, over the same pieces the CLI uses.

    import pneumo
    model = pneumo.load()                       # the shipped model (or a bundle folder)
    print(model.predict("film.jpeg").probability)

``predict`` takes a path, a ``read_image``-style array (float H×W in [0, 1]) or a list of either, and
answers one :class:`~pneumo.inference.Prediction` per image, each through ``read_image`` →
``preprocess`` → model → gate — exactly what ``pneumo predict`` and the server do.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pneumo.bundle import load_bundle
from pneumo.data import load_dataset, resolve_data
from pneumo.errors import ConfigError
from pneumo.inference import Predictor, default_bundle_path
from pneumo.inference.predictor import OnError, as_pixels
from pneumo.paths import output_dir

Input = str | Path | np.ndarray


class Model:
    """A loaded bundle. Thread-safe for ``predict`` (the predictor holds no per-call state)."""

    def __init__(self, bundle: str | Path | None = None, backend: str = "auto"):
        self.predictor = Predictor(Path(bundle) if bundle is not None else default_bundle_path(), backend=backend)
        self.bundle = self.predictor.bundle

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
        """One image → a :class:`Prediction`; a list → a list, in batches (:meth:`Predictor.predict`).

        For an unreadable file ``on_error="raise"`` raises its :class:`~pneumo.errors.PneumoError`,
        ``"skip"`` leaves it out, and ``"record"`` answers an :class:`~pneumo.inference.predictor.Outcome`
        per input, in order (``.prediction``, or ``.error`` for the file that could not be read).
        """
        single = isinstance(images, str | Path | np.ndarray)
        out = self.predictor.predict(images, on_error=on_error, batch_size=batch_size)
        return out[0] if single and out else out

    def explain(self, image: Input, method: str | None = None):
        """The evidence for this image's decision (an :class:`~pneumo.explain.Evidence`: ``.heatmap`` H×W in
        [0, 1] at the original geometry, ``.method``, ``.target``, ``.shows``) — what the page and report show."""
        from pneumo.explain import DEFAULT_METHOD, explain_decision  # lazy: the explainers pull in MONAI

        pixels = as_pixels(image)
        decision = self.predictor.predict([pixels])[0].decision
        return explain_decision(self.bundle, pixels, decision, method or DEFAULT_METHOD)

    def __repr__(self) -> str:
        return f"pneumo.Model({self.name!r}, version {self.version}, weights {self.sha256[:12]})"


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
