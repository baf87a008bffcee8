"""Issue 26, the command line: defaults a user meets without options (monitor window, evaluate split,
card without --eval, p-value printing, where outputs go, one model version) and a quiet training stderr."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from pneumo.bundle import load_bundle, read_meta
from pneumo.cli import main
from pneumo.data import write_manifest
from pneumo.evaluation.compare import fmt_p

REPO = Path(__file__).resolve().parents[1]
DEFAULT = REPO / "models" / "default"
P_VALUE = re.compile(r"\bp([=<])(\d+(?:\.\d+)?(?:e-?\d+)?)")


def _invoke(*args, env: dict | None = None):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False, env=env)


def test_audit_monitor_defaults_to_the_last_30_days(tmp_path):
    from pneumo.server.audit_store import AuditRow, AuditStore

    db = tmp_path / "audit.sqlite"
    store = AuditStore(db)
    old = (dt.datetime.now(dt.UTC) - dt.timedelta(days=60)).isoformat(timespec="milliseconds")
    store.record(AuditRow(request_id="old", outcome="error", time=old, error_code="x"))
    store.record(AuditRow(request_id="new", outcome="error", error_code="x"))
    store.close()
    res = _invoke("audit", "monitor", "--db", db, "--bundle", DEFAULT, "--json")
    assert "Missing option" not in res.output
    summary = json.loads(res.stdout)
    assert summary["overall"]["requests"] == 1  # the 60-day-old row is outside the default window
    since = dt.datetime.fromisoformat(summary["since"])
    assert abs((dt.datetime.now(dt.UTC) - since) - dt.timedelta(days=30)) < dt.timedelta(minutes=5)


def test_evaluate_without_split_uses_val_when_there_is_no_test(tiny_bundle, small_manifest, tmp_path):
    res = _invoke("evaluate", tiny_bundle, "--data", small_manifest, "--bootstrap", "0", "--gallery", "0",
                  "--out", tmp_path / "ev", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["data"]["split"] == "val"
    assert "no 'test' split" not in res.stdout  # the notice is on stderr (stdout stays JSON)
    res = _invoke("evaluate", tiny_bundle, "--data", small_manifest, "--bootstrap", "0", "--gallery", "0",
                  "--out", tmp_path / "ev2")
    assert res.exit_code == 0 and "no 'test' split; evaluating 'val'" in res.stderr
    res = _invoke("evaluate", tiny_bundle, "--data", small_manifest, "--split", "test", "--out", tmp_path / "ev3")
    assert res.exit_code == 2 and "no split 'test'" in res.output  # asked for by name: still an error


def test_card_without_eval_keeps_the_evaluation(tiny_bundle, small_manifest, tmp_path):
    bundle = shutil.copytree(tiny_bundle, tmp_path / "b")
    ev = tmp_path / "ev"
    assert _invoke("evaluate", bundle, "--data", small_manifest, "--split", "val", "--bootstrap", "20",
                   "--gallery", "0", "--out", ev).exit_code == 0
    assert _invoke("card", bundle, "--eval", ev).exit_code == 0
    card = (bundle / "MODEL_CARD.md").read_text()
    section = card[card.index("### Evaluation on split `val`"):].split("\n## ")[0]
    res = _invoke("card", bundle)
    assert res.exit_code == 0 and "kept from the previous card" in res.stderr
    again = (bundle / "MODEL_CARD.md").read_text()
    assert section in again
    load_bundle(bundle)  # the rewritten card is recorded as derived from these weights
    fresh = shutil.copytree(tiny_bundle, tmp_path / "fresh")
    (fresh / "MODEL_CARD.md").unlink(missing_ok=True)
    res = _invoke("card", fresh, "--json")
    assert json.loads(res.stdout)["evaluation"] == "none"
    assert "### Evaluation on split" not in (fresh / "MODEL_CARD.md").read_text()


def test_compare_never_prints_p_zero(tiny_bundle, small_manifest, tmp_path):
    assert fmt_p(0.0) == "p<0.0001" and fmt_p(3e-9) == "p<0.0001" and fmt_p(0.0, 1 / 201) == "p<0.005"
    assert fmt_p(0.0321) == "p=0.032" and fmt_p(0.00042) == "p=0.0004" and fmt_p(float("nan")) == "p n/a"
    res = _invoke("compare", tiny_bundle, DEFAULT, "--data", small_manifest, "--split", "val", "--bootstrap", "50",
                  "--out", tmp_path / "cmp")
    assert res.exit_code == 0, res.output
    found = P_VALUE.findall(res.stdout)
    assert len(found) == 4, res.stdout  # ΔAUROC + three paired metrics for the one pair
    assert all(op == "<" or float(v) > 0 for op, v in found), found
    assert "p=0.0000" not in res.stdout


def test_explain_writes_into_the_pneumo_home_not_the_current_folder(tiny_bundle, val_originals, tmp_path):
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    cwd.mkdir()
    env = {**os.environ, "PNEUMO_HOME": str(home), "PYTHONPATH": str(REPO / "src")}
    run = subprocess.run([sys.executable, "-m", "pneumo", "explain", str(tiny_bundle), str(val_originals[0].path)],
                         cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert list(cwd.iterdir()) == []
    pngs = list((home / "explanations").glob("*.png"))
    assert len(pngs) == 1 and not list((home / "explanations").glob("*.npy"))  # raw maps only with --maps
    assert str(home / "explanations") in run.stdout and "layer None" not in run.stdout


def test_one_model_version_everywhere():
    meta = read_meta(DEFAULT)
    assert meta["model_version"] == "3" and meta["pneumo_version"] == "0.1.0"
    assert load_bundle(DEFAULT).version == "3"
    from pneumo.evaluation.card import render_card

    assert "model version 3" in render_card(meta)


@pytest.mark.slow
def test_bench_quick_reports_each_step_and_whether_int8_pays(tiny_bundle, small_manifest):
    from pneumo.inference.bench import STEPS, bench_bundle

    res = _invoke("bench", tiny_bundle, "--quick", "--n", "5", "--data", small_manifest, "--json")
    assert res.exit_code == 0, res.output
    result = json.loads(res.stdout)
    assert result["quick"] is True and list(result["backends"]["onnx"]["throughput"]) == ["32"]
    assert result["int8_verdict"].startswith("int8 vs ONNX fp32 here")
    seen: list[str] = []  # what the CLI's progress bar is driven by
    bench_bundle(tiny_bundle, n=5, quick=True, batch_sizes=(32,), data=small_manifest, step=seen.append)
    assert seen == list(STEPS)


@pytest.mark.slow
def test_train_stderr_holds_progress_and_pneumos_messages_only(dataset, tmp_path):
    """A whole `pneumo train` (tiny config, one epoch, finished bundle) on 160 real films: no Lightning
    advert or INFO lines, no third-party deprecation warnings, no warning quoting a source line."""
    train = dataset.select("train")
    picked = [s for s in train if s.label == 0][:80] + [s for s in train if s.label == 1][:80]
    samples = [type(s)(s.path, s.label, "val" if i % 4 == 0 else "train", s.patient_id, s.pathogen)
               for i, s in enumerate(picked)]
    manifest = write_manifest(samples, tmp_path / "m.csv")
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "PNEUMO_HOME": str(tmp_path / "home")}
    env.pop("PYTHONWARNINGS", None)
    run = subprocess.run([sys.executable, "-m", "pneumo", "train", "--config", str(REPO / "configs" / "tiny.yaml"),
                          "--data", str(manifest), "--out", str(tmp_path / "run"), "train.epochs=1",
                          "data.cache_file=false"], env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    err = run.stderr
    for noise in ("Tip:", "litlogger", "_pytree", "LeafSpec", "GPU available", "UserWarning", "Warning:",
                  "eval_dir = ", "site-packages"):
        assert noise not in err, f"{noise!r} in stderr:\n{err[-3000:]}"
    lines = [ln.strip() for ln in re.split(r"[\r\n]", err) if ln.strip()]
    warnings_ = [ln for ln in lines if ln.startswith("warning:")]
    assert all("\n" not in w for w in warnings_)
    assert "bundle:" in run.stdout


def test_data_is_found_from_any_folder_of_the_checkout(tmp_path, monkeypatch):
    from pneumo.data import resolve_data

    beside = (REPO / ".." / "shared" / "data" / "chest_xray").resolve()
    if not beside.is_dir():
        pytest.skip("the dataset is not beside this checkout (../shared/data/chest_xray)")
    monkeypatch.delenv("PNEUMO_DATA", raising=False)
    monkeypatch.setenv("PNEUMO_HOME", str(tmp_path / "home"))
    assert resolve_data(None, cwd=tmp_path) == beside  # a folder with no data of its own
