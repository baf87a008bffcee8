"""The run directory: what a training run leaves behind besides checkpoints.

``runs/NAME/``::

    config.yaml       the fully resolved config (what --resume re-reads)
    run.json          data source, git commit, split method, sessions and their wall time
    manifest.csv      the train/val split actually used (pneumo.data.write_manifest), per-image sha256
    metrics.csv       one row per epoch: train & val loss, AUROC, accuracy, sensitivity, specificity, lr
    curves.png        loss / AUROC / accuracy, train vs val
    checkpoints/      last.ckpt (every epoch, for --resume) and best-epoch=N.ckpt (by val AUROC)
    tb/               TensorBoard event files (tensorboardX)
    bundle/           the model bundle (pneumo.bundle)
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

from pneumo.bundle import atomic_write_json, sha256_file
from pneumo.data import Sample, write_manifest

CONFIG = "config.yaml"
RUN_JSON = "run.json"
MANIFEST = "manifest.csv"
METRICS = "metrics.csv"
CURVES = "curves.png"
CHECKPOINTS = "checkpoints"
LAST = "last.ckpt"
BUNDLE = "bundle"


def global_rank() -> int:
    """Rank from the launcher's environment (torchrun sets RANK) before any process group exists."""
    return int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", 0)))


def git_commit(cwd: Path | None = None) -> dict:
    """``{"commit", "dirty"}`` of the working tree, or ``{"commit": None}`` outside git."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return {"commit": None}
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                                capture_output=True, text=True, timeout=10)
        return {"commit": head.stdout.strip(), "dirty": bool(status.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None}


def read_run_json(run_dir: Path) -> dict:
    p = run_dir / RUN_JSON
    return json.loads(p.read_text()) if p.exists() else {}


def start_session(run_dir: Path, data_source: Path, resumed: bool) -> dict:
    """Record this session in run.json (rank 0 only); returns the run record."""
    record = read_run_json(run_dir)
    record.setdefault("data", str(data_source))
    record.setdefault("git", git_commit())
    record.setdefault("sessions", [])
    record["sessions"].append({"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                               "resumed": resumed, "wall_time_s": None, "git": git_commit()})
    atomic_write_json(run_dir / RUN_JSON, record)
    return record


def end_session(run_dir: Path, wall_time_s: float, **extra) -> dict:
    record = read_run_json(run_dir)
    if record.get("sessions"):
        record["sessions"][-1]["wall_time_s"] = round(wall_time_s, 2)
    record["wall_time_s"] = round(sum(s.get("wall_time_s") or 0.0 for s in record.get("sessions", [])), 2)
    record.update(extra)
    atomic_write_json(run_dir / RUN_JSON, record)
    return record


def write_split_manifest(run_dir: Path, train: list[Sample], val: list[Sample]) -> tuple[Path, str]:
    """Write the train/val manifest; its sha256 is the training-data fingerprint."""
    path = write_manifest([*train, *val], run_dir / MANIFEST)
    return path, sha256_file(path)
