"""After fitting: best weights → validation logits → operating threshold → metrics → model bundle."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from pneumo.bundle import save_bundle
from pneumo.data import PreprocessSpec
from pneumo.decision import binary_metrics_at, choose, decide
from pneumo.models import PneumoNet
from pneumo.training.cache import normalise_batch


def load_checkpoint_weights(model: PneumoNet, ckpt_path: Path) -> int:
    """Load a Lightning checkpoint's ``model.*`` weights into ``model``; returns its epoch."""
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    state = {k[len("model."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    model.load_state_dict(state, strict=True)
    return int(ckpt.get("epoch", -1))


@torch.inference_mode()
def predict_logits(model: PneumoNet, x_uint8: torch.Tensor, spec: PreprocessSpec, batch_size: int = 128) -> np.ndarray:
    """``N×1×S×S`` uint8 cached pixels → ``N`` logits, in eval mode."""
    was_training = model.training
    model.eval()
    out = [model(normalise_batch(x_uint8[i : i + batch_size], spec)).float()
           for i in range(0, len(x_uint8), batch_size)]
    model.train(was_training)
    return torch.cat(out).numpy() if out else np.zeros(0, dtype=np.float32)


def _finite(d: dict) -> dict:
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in d.items()}


def metrics_at(labels: np.ndarray, logits: np.ndarray, threshold_logit: float) -> dict:
    """AUROC plus decision metrics at ``logit >= threshold_logit`` and at the untuned 0."""
    logits = np.asarray(logits, dtype=np.float64)
    auroc = float(roc_auc_score(labels, logits)) if len(np.unique(labels)) == 2 else None
    return {
        "n_images": int(len(labels)),
        "auroc": auroc,
        "at_operating_point": _finite(binary_metrics_at(labels, decide(logits, threshold_logit))),
        "at_default_threshold": _finite(binary_metrics_at(labels, decide(logits, 0.0))),
    }


def build_bundle(
    *, model: PneumoNet, cfg: dict, spec: PreprocessSpec, out: Path,
    val_x: torch.Tensor, val_y: np.ndarray, official_x: torch.Tensor | None, official_y: np.ndarray | None,
    training_data: dict, training: dict, manifest: Path, split_method: str,
) -> tuple[Path, dict]:
    """Choose the operating point on validation logits and write the bundle; returns (path, metrics)."""
    eval_bs = int(cfg["train"]["eval_batch_size"])
    val_logits = predict_logits(model, val_x, spec, eval_bs)
    op, table = choose(val_y, val_logits, cfg["threshold"]["rule"], float(cfg["threshold"]["target_sensitivity"]))
    metrics = {"split": f"validation carved from train by patient ({split_method})",
               **metrics_at(val_y, val_logits, op["logit"])}
    if official_x is not None and len(official_x):
        if official_y is None:
            raise ValueError("build_bundle: official_x was given without official_y")
        off = metrics_at(official_y, predict_logits(model, official_x, spec, eval_bs), op["logit"])
        off["note"] = "official Kermany val folder; reported once, never used for selection"
        metrics["official_val"] = off
    metrics["best_epoch"] = training.get("best_epoch")
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(manifest, out / "training_manifest.csv")
    path = save_bundle(
        out, model,
        architecture={"name": cfg["model"]["name"], "kwargs": dict(cfg["model"]["kwargs"])},
        spec=spec, operating_point=op, thresholds=table,
        training_data={**training_data, "manifest": "training_manifest.csv"},
        validation_metrics=metrics, name=cfg.get("name") or out.parent.name,
        extra={"training": training},
    )
    return path, metrics
