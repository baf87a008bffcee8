"""``make_bundle(recipe)``: the one way a shippable bundle is made, from the CLI, ``make model`` or Python.

train every member → combine (mean of logits, over both orientations when ``mirror``) → fit the
out-of-distribution detector and the chest-X-ray gate → calibrate on the validation split at its
prevalence → ONNX export with parity (+ int8 when it passes) → the validation score reference for
drift monitoring → evaluate on validation → model card →
manifest paths made relative, so the bundle loads from any clone.

A *recipe* is a YAML file::

    name: default
    members:                                    # training configs, relative to the recipe, + overrides
      - {name: full, config: ../default.yaml, overrides: [augment.hflip=true]}
      - {name: coarse, config: ../default.yaml, overrides: [augment.hflip=true, model.kwargs.input_pool=2]}
    mirror: true
    threshold: {rule: sensitivity, target_sensitivity: 0.97}
    calibration: {method: platt, prevalence: null}   # null: the validation split's (= training) prevalence
    gate: {copy_from: null}                          # or a bundle whose fitted gate to reuse

A member whose run directory already holds a finished bundle trained from the same resolved config
is reused instead of retrained: training is deterministic, so the weights would be the same.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path

from omegaconf import OmegaConf

from pneumo.bundle import load_bundle, read_meta, update_meta
from pneumo.data import load_dataset
from pneumo.data.manifest import write_manifest
from pneumo.errors import ConfigError, TooFewImages
from pneumo.evaluation.calibration import calibrate_bundle
from pneumo.evaluation.card import write_card
from pneumo.evaluation.runner import evaluate_bundle
from pneumo.inference.export import export_bundle
from pneumo.inference.gate import copy_gate, fit_gate
from pneumo.inference.ood_fit import fit_ood
from pneumo.monitoring import add_score_reference
from pneumo.training.config import load_config, to_container
from pneumo.training.run import train
from pneumo.training.rundir import global_rank
from pneumo.workflows.ensemble import MANIFEST, combine_members

RECIPE_KEYS = {"name", "model_version", "members", "mirror", "threshold", "calibration", "int8", "gate"}


def load_recipe(path: str | Path) -> dict:
    """The recipe as a plain dict with member paths resolved; unknown keys are refused."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such recipe file")
    raw = to_container(OmegaConf.load(path))
    if not isinstance(raw, dict) or "members" not in raw:
        raise ConfigError(f"{path}: a recipe needs a 'members' list of training configs")
    unknown = set(raw) - RECIPE_KEYS
    if unknown:
        raise ConfigError(f"{path}: unknown recipe keys {sorted(unknown)}; expected some of {sorted(RECIPE_KEYS)}")
    members = []
    for i, m in enumerate(raw["members"] or []):
        if not isinstance(m, dict) or not {"name", "config"} <= set(m) or set(m) - {"name", "config", "overrides"}:
            raise ConfigError(f"{path}: member {i} must be {{name, config, overrides}}, got {m!r}")
        cfg = (path.parent / m["config"]).resolve()
        if not cfg.is_file():
            raise ConfigError(f"{path}: member {m['name']!r}: config {cfg} does not exist")
        members.append({"name": str(m["name"]), "config": cfg, "overrides": [str(o) for o in m.get("overrides") or []]})
    if not members or len({m["name"] for m in members}) != len(members):
        raise ConfigError(f"{path}: members must be a non-empty list with distinct names")
    return {
        "name": raw.get("name") or path.stem,
        "model_version": None if raw.get("model_version") is None else str(raw["model_version"]),
        "members": members,
        "mirror": bool(raw.get("mirror", False)),
        "threshold": {"rule": "sensitivity", "target_sensitivity": 0.97, **dict(raw.get("threshold") or {})},
        "calibration": {"method": "platt", "prevalence": None, **dict(raw.get("calibration") or {})},
        "int8": bool(raw.get("int8", True)),
        # the gate never looks at the model: a recipe may reuse another bundle's instead of fitting one
        "gate": {"copy_from": None, **dict(raw.get("gate") or {})},
    }


def is_recipe(path: str | Path) -> bool:
    """True for a recipe file (has ``members``), false for a single training config."""
    try:
        return "members" in (OmegaConf.load(Path(path)) or {})
    except (OSError, ValueError):
        return False


def _config_digest(config: Path, overrides: Sequence[str]) -> str:
    resolved = OmegaConf.to_yaml(load_config(config, overrides))
    return hashlib.sha256(resolved.encode()).hexdigest()


def train_member(config: Path, run_dir: Path, data: str | Path | None, overrides: Sequence[str] = ()) -> Path:
    """Train one member into ``run_dir`` (or reuse the finished run there made from the same config)."""
    digest = _config_digest(config, overrides)
    stamp = run_dir / "recipe-config.sha256"
    bundle = run_dir / "bundle"
    if (bundle / "pneumo.json").is_file() and stamp.is_file() and stamp.read_text().strip() == digest:
        return bundle
    if run_dir.exists():
        shutil.rmtree(run_dir)
    bundle = train(config, data=data, out=run_dir, overrides=overrides)
    stamp.write_text(digest + "\n")
    return bundle


def train_bundle(config: str | Path | None, data: str | Path | None = None, out: str | Path | None = None,
                 resume: str | Path | None = None, *, overrides: Sequence[str] = (), finish: bool = True,
                 external: str | Path | None = None, progress: bool = True) -> Path:
    """One training config (or a run to resume) → a finished bundle in ``OUT/bundle``: what
    ``pneumo train`` and ``pneumo.train(config)`` make, with the same gate, calibration, ONNX,
    validation report and card as a recipe's bundle. ``finish=False`` stops after the weights (for
    experiments scored by other means). Under DDP only rank 0 finishes; every rank returns the path.
    """
    bundle = train(config, data=data, out=out, resume=resume, overrides=overrides, progress=progress)
    if finish and global_rank() == 0:
        eval_dir = finish_bundle(bundle, bundle.parent, external=external)
        write_card(bundle, eval_dir)
    return bundle


def make_bundle(recipe: str | Path, out: str | Path, *, data: str | Path | None = None,
                runs: str | Path | None = None, overrides: Sequence[str] = (), evaluate: bool = True,
                external: str | Path | None = None) -> Path:
    """Build the bundle a recipe describes into ``out`` (replaced whole, atomically at the end)."""
    r = load_recipe(recipe)
    out = Path(out)
    runs = Path(runs) if runs else Path("runs") / r["name"]
    members = [train_member(m["config"], runs / "members" / m["name"], data, [*m["overrides"], *overrides])
               for m in r["members"]]
    staging = runs / "bundle"
    if staging.exists():
        shutil.rmtree(staging)
    if len(members) == 1 and not r["mirror"]:
        shutil.copytree(members[0], staging)
        update_meta(staging, name=r["name"])
    else:
        combine_members(members, staging, mirror=r["mirror"], rule=r["threshold"]["rule"],
                        target_sensitivity=float(r["threshold"]["target_sensitivity"]), name=r["name"])
    if r["model_version"]:  # the one version every output shows (Bundle.version)
        update_meta(staging, model_version=r["model_version"])
    gate_from = r["gate"]["copy_from"]
    eval_dir = finish_bundle(staging, runs, calibration=r["calibration"], int8=r["int8"], evaluate=evaluate,
                             external=external,
                             gate_from=(Path(recipe).parent / gate_from).resolve() if gate_from else None)
    _relocate(staging, out)
    write_card(out, eval_dir)  # after the relocation: the card names the portable, relative data source
    return out


def finish_bundle(bundle: Path, runs: Path, *, calibration: dict | None = None, int8: bool = True,
                  evaluate: bool = True, external: str | Path | None = None,
                  gate_from: Path | None = None) -> Path | None:
    """Everything a bundle needs after its weights: gate, calibration, ONNX, validation report; returns
    the report's folder (for the card).

    ``external``: other-source images for the chest-X-ray gate (``$PNEUMO_EXTERNAL`` when ``None``).
    """
    calibration = {"method": "platt", "prevalence": None, **(calibration or {})}
    index = load_dataset(bundle / MANIFEST)
    train_s, val_s = index.select("train"), index.select("val")
    fit_ood(bundle, train_s, val_s)
    if gate_from is not None:
        copy_gate(gate_from, bundle)
    else:
        try:
            fit_gate(bundle, data=bundle / MANIFEST, external=external)
        except TooFewImages as exc:  # a small dataset still gets a calibrated, exported, evaluated model
            warnings.warn(f"no chest-X-ray gate in {bundle}: {exc}. Add one with `pneumo gate copy "
                          f"OTHER_BUNDLE {bundle}` (e.g. the shipped models/default) or `pneumo gate fit {bundle} "
                          "--data LARGER_DATASET`; until then only the geometry and population checks screen "
                          "inputs.", stacklevel=2)
    calibrate_bundle(bundle, val_s, split="val", method=calibration["method"], prevalence=calibration["prevalence"])
    try:
        export_bundle(bundle, data=bundle / MANIFEST, int8=int8)
    except ConfigError as exc:  # int8 refused by its own rule: the fp32 model stands
        if "int8 model refused" not in str(exc):
            raise
    add_score_reference(bundle)  # the validation score distribution the drift monitor compares against
    eval_dir = None
    if evaluate:
        eval_dir = runs / "eval-val"
        evaluate_bundle(load_bundle(bundle), val_s, eval_dir, split="val", data_path=bundle / MANIFEST)
    return eval_dir


def _relocate(staging: Path, out: Path) -> None:
    """Copy the finished bundle to ``out`` with manifest paths relative to ``out`` (the sha256 column stays
    the real fingerprint of every image)."""
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    shutil.copytree(staging, tmp)
    index = load_dataset(staging / MANIFEST)
    final = out.resolve()
    rows = list(index.samples)
    write_manifest(rows, tmp / MANIFEST, relative_to=final)
    meta = read_meta(tmp)
    td = dict(meta.get("training_data", {}))
    src = td.get("source")
    if src and os.path.isabs(src):
        td["source"] = os.path.relpath(src, Path.cwd())
    td["manifest_paths"] = "relative to this bundle directory; each image's sha256 is in the sha256 column"
    update_meta(tmp, training_data=td)
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
