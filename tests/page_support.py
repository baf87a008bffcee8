"""Helpers for the page and monitor tests: the shipped model with a validation score reference, its
validation rows on this machine's copy of the data, and a live server started with extra environment."""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import pytest

from pneumo.bundle import read_meta
from pneumo.monitoring import add_score_reference
from server_support import LiveServer

REPO = Path(__file__).resolve().parents[1]
DEFAULT = REPO / "models" / "default"
# the tests' servers answer on a loaded 2-core CI machine; latency is not what they check
TEST_BOUNDS = '{"latency_p95_max_ms": 60000}'


def val_manifest(data_root: Path, out: Path) -> Path:
    """The default model's own validation rows, re-rooted on ``data_root`` (the manifest's paths are
    relative to the bundle, which only resolve in the layout the model was trained in)."""
    with (DEFAULT / "training_manifest.csv").open(newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["split"] == "val"]
    for r in rows:
        r["path"] = str(data_root / r["path"].split("chest_xray/", 1)[1])
    with out.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return out


def val_paths(manifest: Path) -> list[tuple[Path, str]]:
    with manifest.open(newline="") as fh:
        return [(Path(r["path"]), r["label"]) for r in csv.DictReader(fh)]


def bundle_with_reference(tmp_path_factory, data_root: Path) -> tuple[Path, Path]:
    """(bundle, val manifest): models/default itself when it stores a score reference, else a copy
    given one (seconds), made once per test session and shared by the page and monitor tests."""
    base = tmp_path_factory.getbasetemp() / "pneumo-default-ref"
    manifest = base / "val.csv"
    if not manifest.exists():
        base.mkdir(exist_ok=True)
        val_manifest(data_root, manifest)
    if "score_reference" in read_meta(DEFAULT):
        return DEFAULT, manifest
    copy = base / "bundle"
    if not (copy / "pneumo.json").exists() or "score_reference" not in read_meta(copy):
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(DEFAULT, copy, ignore=shutil.ignore_patterns("training_manifest.csv"))
        add_score_reference(copy, manifest=manifest)
    return copy, manifest


def start_server(bundle: Path, tmp: Path, *extra: str) -> LiveServer:
    old = os.environ.get("PNEUMO_MONITOR_BOUNDS")
    os.environ["PNEUMO_MONITOR_BOUNDS"] = TEST_BOUNDS
    try:
        tmp.mkdir(parents=True, exist_ok=True)
        return LiveServer(bundle, tmp, *extra)
    finally:
        if old is None:
            os.environ.pop("PNEUMO_MONITOR_BOUNDS")
        else:
            os.environ["PNEUMO_MONITOR_BOUNDS"] = old


# -- fixtures shared by the page and monitor tests (loaded with ``pytest_plugins = ["page_support"]``
#    so that the session-scoped server starts once, however many modules use it) ---------------------
@pytest.fixture(scope="session")
def ref_bundle(tmp_path_factory, data_root) -> tuple[Path, Path]:
    return bundle_with_reference(tmp_path_factory, data_root)


@pytest.fixture(scope="session")
def page_server(ref_bundle, tmp_path_factory):
    """One real ``pneumo serve`` of the shipped model (with its score reference) on 127.0.0.1."""
    server = start_server(ref_bundle[0], tmp_path_factory.mktemp("page-server")).wait(timeout=240)
    yield server
    server.stop()
