"""Damaged bundles and operator mistakes through the real CLI: one line on stderr and a non-zero exit,
never a traceback, never a silent fallback. Bundles are copies of the shipped models/default, damaged."""

from __future__ import annotations

import json
import os
import shutil
import socket
import sqlite3
from pathlib import Path

import httpx
import numpy as np
import pytest
from click.testing import CliRunner

from pneumo.cli import main
from pneumo.inference import Predictor
from server_support import LiveServer

REPO = Path(__file__).resolve().parents[1]
DEFAULT = REPO / "models" / "default"


@pytest.fixture(scope="module")
def shipped(tmp_path_factory) -> Path:
    if not (DEFAULT / "model.int8.onnx").is_file():
        pytest.skip("models/default with model.int8.onnx is not in this checkout")
    return shutil.copytree(DEFAULT, tmp_path_factory.mktemp("shipped") / "default")


def damaged(shipped: Path, tmp_path: Path, file: str, how: str) -> Path:
    bundle = shutil.copytree(shipped, tmp_path / f"{how}-{file}")
    target = bundle / file
    size = target.stat().st_size
    rng = np.random.default_rng(0)
    target.write_bytes(target.read_bytes()[: size // 3] if how == "truncated" else rng.bytes(size))
    return bundle


def cli(*args) -> object:
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_one_line(r, *words: str, code: int = 2) -> None:
    """Exit ``code``, exactly one ``error:`` line on stderr naming ``words``, no exception escaped."""
    assert isinstance(r.exception, SystemExit) or r.exception is None, repr(r.exception)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip() and not ln.startswith("predicting")]
    assert r.exit_code == code, (r.exit_code, r.output[-2000:])
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr[-2000:]
    assert "Traceback" not in r.output
    for w in words:
        assert w in lines[0], (w, lines[0])


@pytest.mark.parametrize("how", ["truncated", "random"])
def test_damaged_weights_are_one_line_in_predict_evaluate_and_serve(shipped, tmp_path, val_originals, data_root, how):
    bundle = damaged(shipped, tmp_path, "model.safetensors", how)
    image = val_originals[0].path
    assert_one_line(cli("predict", bundle, image), "model.safetensors")
    assert_one_line(cli("evaluate", bundle, "--data", data_root, "--split", "val", "--out", tmp_path / "ev"),
                    "model.safetensors")
    r = cli("serve", bundle, "--port", 0, "--audit-db", tmp_path / "a.sqlite")
    assert_one_line(r, "model.safetensors")
    assert "serving" not in r.stderr


def test_random_onnx_is_one_line_in_predict_evaluate_and_serve(shipped, tmp_path, val_originals, data_root):
    bundle = damaged(shipped, tmp_path, "model.onnx", "random")
    assert_one_line(cli("predict", bundle, val_originals[0].path), "model.onnx", "pneumo export")
    assert_one_line(cli("evaluate", bundle, "--data", data_root, "--split", "val", "--out", tmp_path / "ev"),
                    "model.onnx")
    r = cli("serve", bundle, "--port", 0, "--audit-db", tmp_path / "a.sqlite")
    assert_one_line(r, "model.onnx")
    assert "serving" not in r.stderr and "startup failed" not in r.output
    # the torch backend does not need the damaged file
    ok = cli("predict", bundle, val_originals[0].path, "--backend", "torch")
    assert ok.exit_code == 0, ok.output


def test_garbage_last_checkpoint_under_resume_is_one_line(tmp_path, data_root):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copyfile(REPO / "configs" / "tiny.yaml", run / "config.yaml")
    (run / "run.json").write_text(json.dumps({"data": str(data_root)}))
    (run / "checkpoints" / "last.ckpt").write_bytes(np.random.default_rng(1).bytes(4096))
    assert_one_line(cli("train", "--resume", run, "--weights-only", "data.limit=16"), "last.ckpt")


def test_audit_export_to_a_directory_is_one_line(tmp_path):
    from pneumo.server.audit_store import AuditStore

    db = tmp_path / "audit.sqlite"
    AuditStore(db).close()
    (tmp_path / "out").mkdir()
    for out in (f"{tmp_path / 'out'}/", f"{tmp_path / 'missing'}/"):
        assert_one_line(cli("audit", "export", "--db", db, "--since", "2020-01-01", "--out", out), "directory")
    assert not (tmp_path / "missing").exists()


def test_mistyped_bundle_is_refused_not_replaced_by_the_default(tmp_path, val_originals):
    typo = tmp_path / "my-bundel"
    r = cli("predict", typo, val_originals[0].path)
    assert_one_line(r, str(typo), "bundle")
    assert r.stdout == ""  # before: rows from models/default, exit 0


def test_predict_exits_non_zero_when_every_input_failed(shipped, tmp_path, val_originals):
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    r = cli("predict", shipped, text, tmp_path / "gone.jpeg")
    assert r.exit_code == 1 and r.stdout.count("\n") == 3  # header + two error rows, then the exit status
    assert "none of the 2" in r.stderr
    mixed = cli("predict", shipped, text, val_originals[0].path)
    assert mixed.exit_code == 0, mixed.output


def test_int8_is_selectable_in_predict(shipped, val_originals):

    image = val_originals[0].path
    r = cli("predict", shipped, image, "--int8", "--json")
    assert r.exit_code == 0, r.output
    row = json.loads(r.stdout)["rows"][0]
    from pneumo.data import read_image

    pixels = read_image(image)[0]
    int8 = Predictor(shipped, onnx_file="model.int8.onnx").predict([pixels])[0]
    fp32 = Predictor(shipped).predict([pixels])[0]
    assert row["probability"] == pytest.approx(int8.probability, abs=1e-6)
    assert abs(int8.probability - fp32.probability) > 0 or int8.logit != fp32.logit
    assert_one_line(cli("predict", shipped, image, "--int8", "--backend", "torch"), "torch")


def test_serve_refuses_a_taken_port_before_claiming_to_serve(shipped, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = cli("serve", shipped, "--port", port, "--audit-db", tmp_path / "a.sqlite")
    assert_one_line(r, str(port), "in use")
    assert "serving" not in r.stderr  # before: "serving at ..." and then uvicorn's bind error


@pytest.mark.slow
def test_serve_int8_answers_with_the_int8_model(shipped, tmp_path, val_originals):

    image = val_originals[1].path
    server = LiveServer(shipped, tmp_path, "--int8").wait(timeout=180)  # a loaded CI box is slow
    try:
        r = httpx.post(server.url + "/api/v1/predict", files={"file": (image.name, image.read_bytes(), "image/jpeg")},
                       timeout=30)
    finally:
        server.stop()
    assert r.status_code == 200, r.text
    # a path, read as the server reads it (reduced JPEG decode for the model)
    expected = Predictor(shipped, onnx_file="model.int8.onnx").predict([image])[0]
    assert r.json()["probability"] == pytest.approx(expected.probability, abs=1e-6)
    with sqlite3.connect(server.db) as con:
        assert con.execute("SELECT count(*) FROM predictions WHERE outcome='ok'").fetchone()[0] == 1


def test_written_files_are_readable_by_others(shipped, tmp_path):
    """A bundle or CSV written by one user must be readable by the service user (before: 0600)."""
    from pneumo.bundle import atomic_write_bytes, update_meta

    mask = os.umask(0)
    os.umask(mask)
    out = tmp_path / "rows.csv"
    atomic_write_bytes(out, b"a,b\n")
    update_meta(shipped, name="copy")
    for f in (out, shipped / "pneumo.json"):
        assert f.stat().st_mode & 0o777 == 0o666 & ~mask, (f, oct(f.stat().st_mode))
