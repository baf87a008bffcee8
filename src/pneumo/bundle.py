"""The model bundle: one directory that every pneumo command accepts.

Layout::

    BUNDLE/
      model.safetensors   weights (never pickle)
      pneumo.json         everything needed to rebuild and use the model (below)
      model.onnx          optional, written by ``pneumo export``
      ood.safetensors     optional, the out-of-distribution detector's statistics
      MODEL_CARD.md       optional, written by ``pneumo card``

Files derived from the weights (:data:`DERIVED_FILES`) are recorded in ``pneumo.json["derived"]`` with
their own sha256 and the sha256 of the weights they were made from. A derived file that is not
recorded, was made from other weights, or whose bytes changed is never used: asking for it raises a
one-line :class:`BundleError` that names the file and the command that rebuilds it. Writing new
weights (:func:`save_bundle`, i.e. any training into the directory) deletes every derived file first,
so a retrained bundle can never answer with its predecessor's ONNX model or OOD statistics.

``pneumo.json`` keys: ``format_version``, ``pneumo_version``, ``name``, ``model_version`` (optional;
what every output shows as the model's version), ``created``,
``architecture`` {name, kwargs}, ``preprocess`` (a :class:`PreprocessSpec`), ``class_names``,
``operating_point`` {rule, logit, val_sensitivity, val_specificity, ...}, ``thresholds`` (every rule
computed on validation), ``temperature``, ``training_data`` {fingerprint, n_images, ...},
``validation_metrics``, plus optional ``calibration``, ``ood``, ``onnx``, ``training``.

The operating point is stored as a **logit**: calibration (temperature ``T`` and Platt bias ``b``,
``calibration_bias``) changes probabilities but never decisions, so the probability threshold is
derived as ``sigmoid(logit / T + b)``.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from safetensors.torch import load_file, save_file

from pneumo.bundle_meta import check_meta
from pneumo.data.discover import CLASS_NAMES
from pneumo.data.preprocess import PreprocessSpec
from pneumo.errors import BundleError
from pneumo.fsutil import FILE_MODE, atomic_write_bytes, atomic_write_json, replace_readable  # noqa: F401  (re-exported)
from pneumo.models import PneumoNet, build_model
from pneumo.version import __version__

FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
META = "pneumo.json"
ONNX = "model.onnx"
INT8_ONNX = "model.int8.onnx"
OOD = "ood.safetensors"
POPULATION = "population.safetensors"  # the population discriminator (inference.population): reads the embedding
CARD = "MODEL_CARD.md"
DERIVED = "derived"
DERIVED_FILES = (ONNX, INT8_ONNX, OOD, POPULATION, CARD)
# pneumo.json blocks computed from the weights: stamped with the weights' sha256 when written.
DERIVED_BLOCKS = ("onnx", "ood", "population", "calibration")
REBUILD = {
    ONNX: "run `pneumo export {b}`",
    INT8_ONNX: "run `pneumo export {b} --int8`",
    OOD: "retrain the bundle, or delete {f} to run without the out-of-distribution check",
    POPULATION: "run `pneumo population fit {b} --external DIR`, or delete {f} to use the Mahalanobis check alone",
    CARD: "run `pneumo card {b}`",
}


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def calibrated_probability(logits, temperature: float = 1.0, bias: float = 0.0) -> np.ndarray:
    """``sigmoid(logit / temperature + bias)`` as float64, stable for any logit: the one place where a
    logit becomes the probability pneumo reports (predict, evaluate, export parity, cross-validation).

    ``bias`` carries the prevalence the probabilities assume (Platt scaling at the calibration split's
    prevalence, shifted by ``pneumo calibrate --prevalence``); decisions are made on the raw logit, so
    neither ``temperature`` nor ``bias`` ever moves one.
    """
    z = np.asarray(logits, dtype=np.float64) / temperature + bias
    e = np.exp(-np.abs(z))  # numpy, not scipy's expit (equal to 2e-16): predict need not import scipy (~0.5 s)
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))[()]


def probability_threshold(logit: float, temperature: float, bias: float = 0.0) -> float:
    return float(calibrated_probability(logit, temperature, bias))


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
        """The model's version (``model_version`` in ``pneumo.json``): the one number the card, page,
        PDF, DICOM SR and ``/api/v1/model`` show. Bundles without one fall back to the pneumo version
        that wrote them, which is what they showed before ``model_version`` existed."""
        return str(self.meta.get("model_version") or self.meta.get("pneumo_version", "unknown"))

    @property
    def temperature(self) -> float:
        return float(self.meta.get("temperature", 1.0))

    @property
    def bias(self) -> float:
        """Log-odds offset of the calibration (0 for temperature-only bundles)."""
        return float(self.meta.get("calibration_bias", 0.0))

    def probability(self, logits) -> np.ndarray:
        return calibrated_probability(logits, self.temperature, self.bias)

    @property
    def threshold_logit(self) -> float:
        return float(self.meta["operating_point"]["logit"])

    @property
    def threshold(self) -> float:
        """Probability threshold at the operating point, after calibration."""
        return probability_threshold(self.threshold_logit, self.temperature, self.bias)

    @property
    def onnx_path(self) -> Path | None:
        """``model.onnx`` if present; :class:`BundleError` if present but stale or damaged."""
        return self.derived_file(ONNX)

    def derived_file(self, name: str) -> Path | None:
        """``BUNDLE/name`` if it exists and was derived from these weights; ``None`` if absent.

        Raises :class:`BundleError` (naming the file and how to rebuild it) for a file left over from
        other weights, one never recorded in ``pneumo.json``, or one whose bytes changed since."""
        p = self.path / name
        if not p.exists():
            return None
        problem = derived_problem(self.path, self.meta, name, self.sha256)
        if problem:
            raise BundleError(problem)
        return p


def fitted_tensors(bundle: Bundle | str | Path, key: str, name: str, what: str) -> tuple[dict, dict] | None:
    """``(numpy tensors of BUNDLE/name, pneumo.json[key])`` for a model fitted into the bundle after training
    (the OOD statistics, the population check), or ``None`` when ``key`` says it was never fitted or the
    file is absent. A loaded :class:`Bundle` also refuses a file derived from other weights; a damaged
    file is a :class:`BundleError` naming ``what`` it should hold."""
    from safetensors.numpy import load_file as load_numpy  # numpy arrays: these models run without torch

    path = bundle.path if isinstance(bundle, Bundle) else Path(bundle)
    meta = bundle.meta if isinstance(bundle, Bundle) else read_meta(path)
    block = meta.get(key) or {}
    f = path / name
    if not block.get("fitted") or not f.exists():
        return None
    if isinstance(bundle, Bundle):
        bundle.derived_file(name)  # refuses a file fitted on other weights' embedding
    try:
        return load_numpy(str(f)), block
    except Exception as exc:  # safetensors raises its own error types on damaged files
        raise BundleError(f"{f}: cannot read {what} ({exc})") from exc


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
    for derived in DERIVED_FILES:  # made from the previous weights: never let them outlive them
        (path / derived).unlink(missing_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp = path / f".{WEIGHTS}.tmp"
    save_file(state, str(tmp))
    replace_readable(tmp, path / WEIGHTS)
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
    if not isinstance(meta, dict):
        raise BundleError(f"{meta_path}: expected a JSON object at the top level, got {_json_type(meta)}")
    if meta.get("format_version") != FORMAT_VERSION:
        raise BundleError(f"{meta_path}: format_version {meta.get('format_version')!r}, expected {FORMAT_VERSION}")
    for key in ("architecture", "preprocess", "operating_point"):
        if key not in meta:
            raise BundleError(f"{meta_path}: missing key {key!r}")
    check_meta_types(meta, meta_path)
    return meta


_NUMBER = (int, float)
# The keys pneumo reads from pneumo.json and the JSON types they must have (None: may be null/absent).
# A later structure change replaces this table by a typed schema; until then a wrong type is one line.
_META_TYPES: dict[str, tuple[type, ...]] = {
    "name": (str,), "pneumo_version": (str,), "created": (str,), "architecture": (dict,),
    "architecture.name": (str,), "architecture.kwargs": (dict,), "preprocess": (dict,),
    "preprocess.size": (int,), "preprocess.resize": (str,), "preprocess.normalise": (str,),
    "preprocess.mean": _NUMBER, "preprocess.std": _NUMBER, "preprocess.equalise": (bool,),
    "class_names": (list,), "operating_point": (dict,), "operating_point.logit": _NUMBER,
    "operating_point.rule": (str,), "thresholds": (dict,), "temperature": _NUMBER, "calibration_bias": _NUMBER,
    "calibration": (dict,), "training_data": (dict,), "validation_metrics": (dict,), "weights_sha256": (str,),
    DERIVED: (dict,), "onnx": (dict,), "ood": (dict,), "gate": (dict,),
}
_JSON_NAMES = {dict: "an object", list: "a list", str: "a string", int: "an integer", float: "a number",
               bool: "true or false"}


def check_meta_types(meta: object, meta_path: Path) -> None:
    """Raise a one-line :class:`BundleError` naming the first key of ``pneumo.json`` whose value has the
    wrong JSON type (a list where an object belongs, a string for a number, ...); absent or null
    optional keys pass, ``operating_point.logit`` is required."""
    if not isinstance(meta, dict):
        raise BundleError(f"{meta_path}: expected a JSON object at the top level, got {_json_type(meta)}")
    for dotted, types in _META_TYPES.items():
        parent, _, key = dotted.rpartition(".")
        block = meta.get(parent) if parent else meta
        if not isinstance(block, dict) or block.get(key) is None:
            continue
        value = block[key]
        if not isinstance(value, types) or (bool not in types and isinstance(value, bool)):
            expected = " or ".join(dict.fromkeys(_JSON_NAMES[t] for t in types))
            raise BundleError(f"{meta_path}: key {dotted!r} must be {expected}, got {_json_type(value)} "
                              f"({json.dumps(value)[:60]})")
    if meta["operating_point"].get("logit") is None:
        raise BundleError(f"{meta_path}: missing key 'operating_point.logit' (the decision threshold)")


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    return _JSON_NAMES.get(type(value), type(value).__name__)


def update_meta(path: str | Path, **changes) -> dict:
    """Merge top-level keys into ``pneumo.json`` atomically (calibration, OOD, ONNX, ...).

    A block computed from the weights (:data:`DERIVED_BLOCKS`) is stamped with their sha256."""
    path = Path(path)
    meta = read_meta(path)
    for key in DERIVED_BLOCKS:
        if isinstance(changes.get(key), dict) and meta.get("weights_sha256"):
            changes[key] = {**changes[key], "weights_sha256": meta["weights_sha256"]}
    meta.update(changes)
    atomic_write_json(path / META, meta)
    return meta


def record_derived(path: str | Path, *names: str) -> dict:
    """Record files just made from the bundle's current weights (sha256 of each + of the weights);
    a name whose file is absent is dropped from the record."""
    path = Path(path)
    meta = read_meta(path)
    weights = meta.get("weights_sha256") or sha256_file(path / WEIGHTS)
    derived = dict(meta.get(DERIVED) or {})
    for name in names:
        f = path / name
        if f.exists():
            derived[name] = {"sha256": sha256_file(f), "weights_sha256": weights}
        else:
            derived.pop(name, None)
    meta[DERIVED] = derived
    atomic_write_json(path / META, meta)
    return meta


def _legacy_record(meta: dict, name: str) -> dict | None:
    """Bundles written before ``derived`` existed: the onnx/ood blocks recorded each file's sha256 in
    the same ``pneumo.json`` that training rewrites whole, so a block present means same weights."""
    onnx, ood = meta.get("onnx") or {}, meta.get("ood") or {}
    int8 = onnx.get("int8") or {}
    for block, fname in ((onnx, ONNX), (int8, INT8_ONNX), (ood, OOD)):
        if name == fname and block.get("sha256") and block.get("file", fname) == fname:
            return {"sha256": block["sha256"], "weights_sha256": block.get("weights_sha256")}
    return None


def derived_problem(path: Path, meta: dict, name: str, weights_sha256: str) -> str | None:
    """Why ``path/name`` must not be used with these weights, or ``None`` when it may."""
    f = Path(path) / name
    fix = REBUILD.get(name, "rebuild it").format(b=path, f=f)
    rec = (meta.get(DERIVED) or {}).get(name) or _legacy_record(meta, name)
    if rec is None:
        return (f"{f}: not recorded in pneumo.json as made from this model's weights "
                f"(left over from an earlier model?); {fix}")
    if rec.get("weights_sha256") not in (None, weights_sha256):
        return f"{f}: made from other weights than {WEIGHTS} (stale after retraining); {fix}"
    if sha256_file(f) != rec.get("sha256"):
        return f"{f}: damaged or replaced (its sha256 differs from the one in pneumo.json); {fix}"
    return None


def load_bundle(path: str | Path) -> Bundle:
    """Rebuild the exact model from ``pneumo.json`` and load its weights (eval mode, CPU)."""
    path = Path(path)
    meta = read_meta(path)
    check_meta(meta, path / META)  # a bad key fails here, in one line that names it
    weights = path / WEIGHTS
    if not weights.exists():
        raise BundleError(f"{path}: no {WEIGHTS}")
    actual = sha256_file(weights)
    recorded = meta.get("weights_sha256")
    if recorded and actual != recorded:
        raise BundleError(
            f"{weights}: damaged or replaced (its sha256 differs from the one pneumo.json was written with); "
            "restore the bundle's own weights or retrain it"
        )
    cal = meta.get("calibration")
    if isinstance(cal, dict) and cal.get("weights_sha256") not in (None, actual):
        raise BundleError(f"{path / META}: its temperature was fitted for other weights; "
                          f"run `pneumo calibrate {path}`")
    arch = meta["architecture"]
    try:
        model = build_model(arch["name"], **arch.get("kwargs", {}))
    except (TypeError, ValueError) as exc:
        raise BundleError(f"{path / META}: architecture {arch.get('name')!r} cannot be built: "
                          f"{_first_line(exc)}") from exc
    try:
        state = load_file(str(weights))
    except Exception as exc:  # safetensors raises its own error types on damaged files
        raise BundleError(f"{weights}: not a readable safetensors file ({_first_line(exc)}); "
                          "restore or retrain") from exc
    try:
        model.load_state_dict(state, strict=True)
    except (RuntimeError, OSError) as exc:
        raise BundleError(f"{weights}: weights do not fit architecture {arch['name']!r}: {_first_line(exc)}") from exc
    model.eval()
    return Bundle(path, meta, model, sha256=actual)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]
