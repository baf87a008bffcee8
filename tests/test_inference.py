"""``pneumo predict`` over a real folder (good image, text file, empty file), CSV/JSON output, the default
bundle lookup and BUNDLE-vs-INPUT disambiguation."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from pneumo.cli import main
from pneumo.cli.predict import expand_inputs, split_bundle
from pneumo.errors import BundleError
from pneumo.inference import Predictor, default_bundle_path


@pytest.fixture()
def mixed_folder(tmp_path, val_originals) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(val_originals[0].path, folder / "good.jpeg")
    (folder / "notes.txt").write_text("not an image\n")
    (folder / "empty.jpeg").write_bytes(b"")
    return folder


def test_predict_folder_csv_and_json(tiny_bundle, mixed_folder, tmp_path):
    out = tmp_path / "rows.csv"
    res = CliRunner().invoke(main, ["predict", str(tiny_bundle), str(mixed_folder), "--out", str(out)])
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 3 and list(rows[0]) == ["path", "status", "probability", "decision", "threshold", "reason",
                                                  "ood", "ood_score", "population", "population_score", "error"]
    by_name = {Path(r["path"]).name: r for r in rows}
    good = by_name["good.jpeg"]
    p = Predictor(tiny_bundle, backend="torch").predict([mixed_folder / "good.jpeg"])[0]
    assert good["error"] == "" and float(good["probability"]) == pytest.approx(p.probability, abs=1e-5)
    assert good["decision"] == p.decision
    assert "empty" in by_name["empty.jpeg"]["error"] and by_name["empty.jpeg"]["probability"] == ""
    assert "not a JPEG, PNG or DICOM" in by_name["notes.txt"]["error"]

    res = CliRunner().invoke(main, ["predict", str(tiny_bundle), str(mixed_folder), "--json", "--backend", "torch"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["n"] == 3 and doc["n_errors"] == 2
    good = next(r for r in doc["rows"] if r["path"].endswith("good.jpeg"))
    assert good["probability"] == pytest.approx(p.probability, abs=1e-5) and good["error"] is None


def test_predict_glob_and_missing_file(tiny_bundle, mixed_folder):
    items = expand_inputs([str(mixed_folder / "*.jpeg"), str(mixed_folder / "nope.png")])
    assert [Path(i).name for i in items] == ["empty.jpeg", "good.jpeg", "nope.png"]
    res = CliRunner().invoke(main, ["predict", str(tiny_bundle), str(mixed_folder / "nope.png")])
    assert res.exit_code == 1 and "no such file" in res.stdout  # every input failed: a non-zero exit


def test_default_bundle_lookup(tiny_bundle, tmp_path, monkeypatch):
    monkeypatch.setenv("PNEUMO_MODEL", str(tiny_bundle))
    assert default_bundle_path() == tiny_bundle
    bundle, inputs = split_bundle(("a.jpeg",))
    assert bundle == tiny_bundle and inputs == ["a.jpeg"]
    assert split_bundle((str(tiny_bundle), "a.jpeg")) == (tiny_bundle, ["a.jpeg"])
    monkeypatch.setenv("PNEUMO_MODEL", str(tmp_path))
    with pytest.raises(BundleError, match="PNEUMO_MODEL"):
        default_bundle_path()
    monkeypatch.delenv("PNEUMO_MODEL")
    monkeypatch.chdir(tmp_path)
    if not (Path(__file__).resolve().parents[1] / "models" / "default" / "pneumo.json").exists():
        with pytest.raises(BundleError, match="no default model"):
            default_bundle_path()
        res = CliRunner().invoke(main, ["predict", str(tmp_path)])
        assert res.exit_code == 2 and "no default model" in res.output
