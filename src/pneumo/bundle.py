"""The model bundle: one directory that every pneumo command accepts.

Layout::

    BUNDLE/
      model.safetensors   weights (never pickle)
      pneumo.json         everything needed to rebuild and use the model (below)
      model.onnx          optional, written by ``pneumo export``
      ood.safetensors     optional, the out-of-distribution detector's statistics
      MODEL_CARD.md       optional, written by ``pneumo card``

``pneumo.json`` keys: ``format_version``, ``pneumo_version``, ``name``, ``created``,
``architecture`` {name, kwargs}, ``preprocess`` (a :class:`PreprocessSpec`), ``class_names``,
``operating_point`` {rule, logit, val_sensitivity, val_specificity, ...}, ``thresholds`` (every rule
computed on validation), ``temperature``, ``training_data`` {fingerprint, n_images, ...},
``validation_metrics``, plus optional ``calibration``, ``ood``, ``onnx``, ``training``.

The operating point is stored as a **logit**: temperature scaling changes probabilities but never
decisions, so the probability threshold is derived as ``sigmoid(logit / temperature)``.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from safetensors.torch import load_file, save_file
from scipy.special import expit

from pneumo import __version__
from pneumo.data.discover import CLASS_NAMES
from pneumo.data.preprocess import PreprocessSpec
from pneumo.errors import BundleError
from pneumo.models import PneumoNet, build_model

FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
META = "pneumo.json"
ONNX = "model.onnx"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write via a temp file + rename, so a kill mid-write never leaves a corrupt file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: dict) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n").encode())


def _json_default(o):
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def calibrated_probability(logits, temperature: float = 1.0) -> np.ndarray:
    """``sigmoid(logit / temperature)`` as float64, stable for any logit: the one place where a logit
    becomes the probability pneumo reports (predict, evaluate, export parity, cross-validation)."""
    return expit(np.asarray(logits, dtype=np.float64) / temperature)


def probability_threshold(logit: float, temperature: float) -> float:
    return float(calibrated_probability(logit, temperature))


@dataclass
class Bundle:
    """A loaded bundle: the model in eval mode plus its metadata."""

    path: Path
    meta: dict
    model: PneumoNet
    sha256: str
    spec: PreprocessSpec = field(init=False)

    def __post_init__(self) -> None:
        self.spec = PreprocessSpec.from_dict(self.meta["preprocess"])

    @property
    def name(self) -> str:
        return self.meta.get("name") or self.path.name

    @property
    def version(self) -> str:
        return str(self.meta.get("pneumo_version", "unknown"))

    @property
    def temperature(self) -> float:
        return float(self.meta.get("temperature", 1.0))

    @property
    def threshold_logit(self) -> float:
        return float(self.meta["operating_point"]["logit"])

    @property
    def threshold(self) -> float:
        """Probability threshold at the operating point, after calibration."""
        return probability_threshold(self.threshold_logit, self.temperature)

    @property
    def onnx_path(self) -> Path | None:
        p = self.path / ONNX
        return p if p.exists() else None


def save_bundle(
    path: str | Path,
    model: PneumoNet,
    *,
    architecture: dict,
    spec: PreprocessSpec,
    operating_point: dict,
    thresholds: dict | None = None,
    training_data: dict | None = None,
    validation_metrics: dict | None = None,
    temperature: float = 1.0,
    name: str | None = None,
    extra: dict | None = None,
) -> Path:
    """Write weights and ``pneumo.json`` atomically into ``path`` (created if needed).

    ``architecture`` is ``{"name": registry_name, "kwargs": {...}}``; ``operating_point`` must hold
    ``logit`` (decision: logit ≥ it) and should hold ``rule``, ``val_sensitivity``, ``val_specificity``.
    """
    path = Path(path)
    if "logit" not in operating_point:
        raise BundleError("operating_point needs a 'logit' threshold")
    path.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp = path / f".{WEIGHTS}.tmp"
    save_file(state, str(tmp))
    os.replace(tmp, path / WEIGHTS)
    meta = {
        "format_version": FORMAT_VERSION,
        "pneumo_version": __version__,
        "name": name or path.name,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "architecture": {"name": architecture["name"], "kwargs": dict(architecture.get("kwargs", {}))},
        "preprocess": spec.to_dict(),
        "class_names": list(CLASS_NAMES),
        "operating_point": dict(operating_point),
        "thresholds": thresholds or {},
        "temperature": float(temperature),
        "training_data": training_data or {},
        "validation_metrics": validation_metrics or {},
        "weights_sha256": sha256_file(path / WEIGHTS),
    }
    meta.update(extra or {})
    atomic_write_json(path / META, meta)
    return path


def read_meta(path: str | Path) -> dict:
    path = Path(path)
    meta_path = path / META
    if not path.is_dir():
        raise BundleError(f"{path}: not a model bundle directory")
    if not meta_path.exists():
        raise BundleError(f"{path}: not a model bundle (no {META})")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        raise BundleError(f"{meta_path}: not valid JSON ({exc})") from exc
    if meta.get("format_version") != FORMAT_VERSION:
        raise BundleError(f"{meta_path}: format_version {meta.get('format_version')!r}, expected {FORMAT_VERSION}")
    for key in ("architecture", "preprocess", "operating_point"):
        if key not in meta:
            raise BundleError(f"{meta_path}: missing key {key!r}")
    return meta


def update_meta(path: str | Path, **changes) -> dict:
    """Merge top-level keys into ``pneumo.json`` atomically (calibration, OOD, ONNX, ...)."""
    path = Path(path)
    meta = read_meta(path)
    meta.update(changes)
    atomic_write_json(path / META, meta)
    return meta


def load_bundle(path: str | Path) -> Bundle:
    """Rebuild the exact model from ``pneumo.json`` and load its weights (eval mode, CPU)."""
    path = Path(path)
    meta = read_meta(path)
    weights = path / WEIGHTS
    if not weights.exists():
        raise BundleError(f"{path}: no {WEIGHTS}")
    arch = meta["architecture"]
    model = build_model(arch["name"], **arch.get("kwargs", {}))
    try:
        state = load_file(str(weights))
        model.load_state_dict(state, strict=True)
    except (RuntimeError, OSError) as exc:
        raise BundleError(f"{weights}: weights do not fit architecture {arch['name']!r}: {exc}") from exc
    model.eval()
    return Bundle(path, meta, model, sha256=meta.get("weights_sha256") or sha256_file(weights))
