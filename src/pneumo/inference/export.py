"""``pneumo export``: a bundle's model to ONNX, written only after proving it gives the same answers.

The ONNX graph has one input ``image`` (``B×1×S×S``, dynamic batch) and two outputs: ``logit`` (``B``)
and ``embedding`` (``B×D``, the OOD detector's features), so one ONNX Runtime call serves both.

Parity: max |Δ probability| between ONNX Runtime and PyTorch on ≥32 real validation images must be
≤ :data:`PARITY_TOL`, else nothing is written. ``--int8``: static QDQ quantisation calibrated on
training images; kept only if AUROC on the same validation images drops by ≤ :data:`INT8_MAX_AUROC_DROP`.

Exporter: the legacy TorchScript exporter (``dynamo=False``) — on torch 2.13 it exports a conv net in
~0.2 s at exactly opset 17, while the dynamo exporter takes ~2 s and emits opset 18 after a failed
down-conversion. The dynamo exporter is the fallback if the legacy one raises.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pneumo.bundle import Bundle, load_bundle, record_derived, replace_readable, sha256_file, update_meta
from pneumo.data.dataset import load_dataset
from pneumo.data.discover import Sample
from pneumo.data.imageio import read_image
from pneumo.data.locate import resolve_data
from pneumo.data.preprocess import preprocess
from pneumo.errors import ConfigError, PneumoError
from pneumo.inference.predictor import Predictor

OPSET = 17
PARITY_TOL = 1e-4
INT8_MAX_AUROC_DROP = 0.002
MIN_PARITY_IMAGES = 32
ONNX_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"


class LogitAndEmbedding(nn.Module):
    """The graph ``pneumo export`` writes: a :class:`PneumoNet`'s ``logit_and_embedding`` as ``forward``
    (``B×1×H×W`` → ``B`` logits, ``B×D`` embeddings; the model defines the embedding)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.logit_and_embedding(x)


def export_onnx_file(model: nn.Module, size: int, path: Path, opset: int = OPSET) -> str:
    """Write the two-output ONNX graph to ``path``; returns which exporter succeeded."""
    wrapper = LogitAndEmbedding(model).eval()
    x = torch.zeros(2, 1, size, size)
    names = {"input_names": ["image"], "output_names": ["logit", "embedding"], "opset_version": opset}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                wrapper, (x,), str(path), dynamo=False,
                dynamic_axes={"image": {0: "batch"}, "logit": {0: "batch"}, "embedding": {0: "batch"}}, **names,
            )
        return "torchscript"
    except Exception as exc:  # fall back to the dynamo exporter on any legacy-exporter failure
        warnings.warn(f"legacy ONNX exporter failed ({exc}); trying dynamo", stacklevel=2)
    batch = torch.export.Dim("batch", min=1, max=4096)
    torch.onnx.export(wrapper, (x,), str(path), dynamo=True, dynamic_shapes=({0: batch},), **names)
    return "dynamo"


def bundle_manifest(bundle: Bundle) -> Path | None:
    """``training_data.manifest`` as a path (relative ones are relative to the bundle), if recorded."""
    m = (bundle.meta.get("training_data") or {}).get("manifest")
    if not m:
        return None
    p = Path(m)
    return p if p.is_absolute() else bundle.path / p


def validation_samples(bundle: Bundle, data: str | Path | None, n: int) -> tuple[list[Sample], str]:
    """≥32 labelled real images to check against: the bundle's own validation split (from its training
    manifest) when readable, else ``data``'s val split, topped up from its other splits if too few."""
    manifest = bundle_manifest(bundle)
    index, source = None, ""
    if manifest:
        try:
            index, source = load_dataset(manifest), f"training manifest {manifest}"
        except PneumoError:
            index = None
    if index is None:
        if data is None:
            data = resolve_data(None)
        index, source = load_dataset(data), f"dataset {data}"
    val = index.select("val")
    rest = [s for s in index.samples if s.split != "val"]
    rng = np.random.default_rng(0)
    picked = [val[i] for i in rng.permutation(len(val))[:n]]
    if len(picked) < n and rest:
        picked += [rest[i] for i in rng.permutation(len(rest))[: n - len(picked)]]
        source += f" (val: {min(len(val), n)}, topped up from other splits: {len(picked) - min(len(val), n)})"
    if len(picked) < MIN_PARITY_IMAGES:
        raise ConfigError(f"{source}: only {len(picked)} images; parity needs at least {MIN_PARITY_IMAGES}")
    return picked, source


def _batch(samples: list[Sample], bundle: Bundle) -> np.ndarray:
    """Preprocessed model inputs (``N×1×S×S``) of ``samples``: the int8 quantiser's calibration data."""
    return np.stack([preprocess(read_image(s.path)[0], bundle.spec) for s in samples])


def _onnx_predictor(bundle: Bundle, path: Path) -> Predictor:
    return Predictor(bundle, backend="onnx", onnx_file=str(Path(path).resolve()), ood=False)


def check_parity(bundle: Bundle, onnx_path: Path, samples: list[Sample], tol: float = PARITY_TOL) -> dict:
    """Compare the ONNX and torch :class:`Predictor` on ``samples``' files (the serving path: read →
    preprocess → model); raises :class:`ConfigError` above ``tol``."""
    paths = [s.path for s in samples]
    t_logit, t_emb, _ = Predictor(bundle, backend="torch", ood=False).features(paths)
    o_logit, o_emb, _ = _onnx_predictor(bundle, onnx_path).features(paths)
    dp = float(np.max(np.abs(bundle.probability(t_logit) - bundle.probability(o_logit))))
    out = {
        "max_abs_diff": dp,
        "max_abs_diff_logit": float(np.max(np.abs(t_logit.astype(np.float64) - o_logit))),
        "max_abs_diff_embedding": float(np.max(np.abs(t_emb.astype(np.float64) - o_emb))),
        "tolerance": tol,
        "n_images": len(samples),
    }
    if not dp <= tol:
        raise ConfigError(
            f"{onnx_path.name}: ONNX and PyTorch disagree by up to {dp:.3g} in probability on {len(samples)} "
            f"validation images (allowed {tol:g}); nothing was written"
        )
    return out


def export_bundle(
    bundle_dir: str | Path,
    data: str | Path | None = None,
    int8: bool = False,
    n_images: int = 64,
    tol: float | None = None,
) -> dict:
    """Export, check parity, optionally quantise; write files atomically and record ``onnx`` in pneumo.json."""
    tol = PARITY_TOL if tol is None else tol
    bundle = load_bundle(bundle_dir)
    samples, source = validation_samples(bundle, data, max(n_images, MIN_PARITY_IMAGES))
    path = bundle.path
    tmp, int8_tmp = path / f".{ONNX_FILE}.tmp", path / f".{INT8_FILE}.tmp"
    try:
        exporter = export_onnx_file(bundle.model, bundle.spec.size, tmp)
        parity = check_parity(bundle, tmp, samples, tol)
        parity["source"] = source
        block = {"file": ONNX_FILE, "opset": OPSET if exporter == "torchscript" else _opset(tmp),
                 "exporter": exporter, "outputs": ["logit", "embedding"], "parity": parity, "int8": None}
        int8_info = quantise_int8(bundle, tmp, int8_tmp, samples, data) if int8 else None
        replace_readable(tmp, path / ONNX_FILE)
        block["sha256"] = sha256_file(path / ONNX_FILE)
        if int8_info is not None and int8_info["accepted"]:
            replace_readable(int8_tmp, path / INT8_FILE)
            int8_info["sha256"] = sha256_file(path / INT8_FILE)
        else:  # a previous int8 file no longer matches this export
            (path / INT8_FILE).unlink(missing_ok=True)
        block["int8"] = int8_info
        update_meta(path, onnx=block)
        record_derived(path, ONNX_FILE, INT8_FILE)  # both made from these weights (or int8 now gone)
    finally:
        tmp.unlink(missing_ok=True)
        int8_tmp.unlink(missing_ok=True)
    if int8_info is not None and not int8_info["accepted"]:
        raise ConfigError(
            f"int8 model refused: validation AUROC {int8_info['auroc_int8']:.4f} vs fp32 "
            f"{int8_info['auroc_fp32']:.4f} (drop {int8_info['auroc_drop']:.4f} > {INT8_MAX_AUROC_DROP}) on "
            f"{int8_info['n_images']} images; {INT8_FILE} not written ({ONNX_FILE} fp32 passed parity and was written)"
        )
    return block


def _opset(path: Path) -> int:
    import onnx

    imports = onnx.load(str(path), load_external_data=False).opset_import
    return max(o.version for o in imports if o.domain in ("", "ai.onnx"))


def quantise_int8(
    bundle: Bundle, fp32: Path, out: Path, val: list[Sample], data: str | Path | None
) -> dict:
    """Static QDQ int8 (per-channel weights, calibrated on training images); refuse if AUROC drops too much."""
    from sklearn.metrics import roc_auc_score

    calib = _calibration_batch(bundle, data, exclude={str(s.path) for s in val})
    static_quantise(fp32, out, calib)
    y = np.array([s.label for s in val])
    if len(set(y)) < 2:
        raise ConfigError("int8 check needs validation images of both classes")
    paths = [s.path for s in val]
    auc32 = float(roc_auc_score(y, _onnx_predictor(bundle, fp32).logits_for(paths)))
    auc8 = float(roc_auc_score(y, _onnx_predictor(bundle, out).logits_for(paths)))
    info = {"file": INT8_FILE, "method": "onnxruntime static QDQ, per-channel int8 weights, uint8 activations",
            "n_calibration": len(calib), "auroc_fp32": auc32, "auroc_int8": auc8, "auroc_drop": auc32 - auc8,
            "max_auroc_drop": INT8_MAX_AUROC_DROP, "n_images": len(val), "accepted": False}
    info["accepted"] = bool(auc32 - auc8 <= INT8_MAX_AUROC_DROP)
    return info


def static_quantise(fp32: Path, out: Path, calib: np.ndarray) -> None:
    """ONNX Runtime static QDQ quantisation: per-channel int8 weights, uint8 activations whose ranges
    come from ``calib`` (``N×1×S×S`` preprocessed training images)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter([{"image": calib[i : i + 8]} for i in range(0, len(calib), 8)])

        def get_next(self):
            return next(self._it, None)

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # ORT logs a "consider pre-processing" warning on every call
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_static(str(fp32), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)


def _calibration_batch(bundle: Bundle, data: str | Path | None, exclude: set[str], n: int = 64) -> np.ndarray:
    """Up to ``n`` training images (never the validation ones) for activation ranges."""
    manifest = bundle_manifest(bundle)
    index = None
    for src in (manifest, data):
        if src:
            try:
                index = load_dataset(src)
                break
            except PneumoError:
                continue
    if index is None:
        index = load_dataset(resolve_data(None))
    pool = [s for s in index.select("train") if str(s.path) not in exclude] or \
        [s for s in index.samples if str(s.path) not in exclude] or \
        list(index.samples)  # a smoke-sized dataset whose images all went to the parity check
    rng = np.random.default_rng(1)
    return _batch([pool[i] for i in rng.permutation(len(pool))[:n]], bundle)
