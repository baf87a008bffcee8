"""``pneumo evaluate | calibrate | compare | card`` end to end on the genuinely trained tiny bundle and
the real shared dataset (the 16 official val originals, and the small patient-grouped manifest)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file, save_file

from pneumo.bundle import load_bundle, sha256_file, update_meta
from pneumo.cli import main
from pneumo.data import write_manifest
from pneumo.evaluation.metrics import METRICS
from pneumo.inference import Predictor

FIGURES = ("roc", "precision_recall", "reliability", "score_histogram", "threshold_sweep", "confusion_matrix")


def _invoke(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def _listing(folder: Path) -> list[tuple[str, int]]:
    return sorted((str(p), p.stat().st_mtime_ns) for p in folder.rglob("*"))


def _copy_bundle(src: Path, dst: Path, noise: float = 0.0, name: str | None = None) -> Path:
    shutil.copytree(src, dst)
    if noise:
        gen = torch.Generator().manual_seed(1)
        state = load_file(str(dst / "model.safetensors"))
        state = {k: v + noise * v.std() * torch.randn(v.shape, generator=gen) if v.dim() >= 2 else v
                 for k, v in state.items()}  # conv / linear weights only
        save_file(state, str(dst / "model.safetensors"))
    update_meta(dst, weights_sha256=sha256_file(dst / "model.safetensors"), name=name or dst.name)
    return dst


@pytest.fixture(scope="module")
def val_eval(tiny_bundle, data_root, tmp_path_factory):
    """``pneumo evaluate tiny --data ROOT --split val --json`` once; the dataset folder is watched."""
    out = tmp_path_factory.mktemp("eval") / "val"
    before = _listing(data_root / "val")
    res = _invoke("evaluate", tiny_bundle, "--data", data_root, "--split", "val", "--out", out, "--json")
    assert res.exit_code == 0, res.output
    assert _listing(data_root / "val") == before  # nothing written into the dataset
    return out, json.loads(res.stdout)


def test_evaluate_val_originals_writes_every_output(val_eval, tiny_bundle, val_originals):
    out, result = val_eval
    for name in ("metrics.json", "predictions.csv", "report.html", *(f"figures/{f}.png" for f in FIGURES)):
        assert (out / name).stat().st_size > 0, name
    assert json.loads((out / "metrics.json").read_text())["metrics"] == result["metrics"]
    d = result["data"]
    assert (d["n_images"], d["n_pneumonia"], d["n_normal"], d["split"]) == (16, 8, 8, "val")
    assert set(result["metrics"]) == set(METRICS)
    assert result["bootstrap"]["n_resamples"] == 1000
    c = result["confusion"]
    assert sum(c.values()) == 16
    m = result["metrics"]
    assert m["sensitivity"]["value"] == pytest.approx(c["tp"] / (c["tp"] + c["fn"]))
    assert m["specificity"]["value"] == pytest.approx(c["tn"] / (c["tn"] + c["fp"]))
    for k in METRICS:  # a CI for every metric, from whole-patient resamples
        assert m[k]["n_valid"] > 900 and m[k]["lo"] <= m[k]["hi"], k
    assert "not a valid estimate" in result["oracle"]["label"]
    assert set(result["pathogen_sensitivity"]) <= {"bacteria", "virus", "unknown"}


def test_predictions_csv_uses_saved_threshold_and_true_labels(val_eval, tiny_bundle, val_originals):
    out, _ = val_eval
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    assert [r["path"] for r in rows] == [str(s.path) for s in val_originals]
    assert list(rows[0]) == ["path", "patient", "label", "probability", "decision", "logit"]
    thr = load_bundle(tiny_bundle).threshold_logit
    for r, s in zip(rows, val_originals, strict=True):
        assert r["label"] == s.class_name
        assert (r["decision"] == ("PNEUMONIA" if float(r["logit"]) >= thr - 1e-5 else "NORMAL")
                or abs(float(r["logit"]) - thr) < 1e-5)
        assert 0.0 <= float(r["probability"]) <= 1.0


def test_evaluate_refuses_out_inside_dataset_and_missing_split(tiny_bundle, data_root):
    target = data_root / "val" / "reports-should-not-exist"
    res = _invoke("evaluate", tiny_bundle, "--data", data_root, "--split", "val", "--out", target)
    assert res.exit_code == 2 and "inside the dataset" in res.output
    assert not target.exists()
    res = _invoke("evaluate", tiny_bundle, "--data", data_root, "--split", "test")
    assert res.exit_code == 2
    assert "no split 'test'" in res.output and "available splits: train, val" in res.output


def test_evaluate_manifest_default_out_subgroups_and_unreadable(tiny_bundle, small_manifest, small_samples, tmp_path,
                                                               monkeypatch):
    val = [s for s in small_samples if s.split == "val"]
    extra = [type(s)(s.path, s.label, s.split, s.patient_id, s.pathogen, s.patient_from_name,
                     extra={"site": "A" if i % 2 else "B"}) for i, s in enumerate(val)]
    broken = tmp_path / "imgs" / "broken.jpeg"
    broken.parent.mkdir()
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    extra.append(type(val[0])(broken, 1, "val", "broken", None, False, extra={"site": "A"}))
    manifest = write_manifest(extra, tmp_path / "with_site.csv")
    monkeypatch.setenv("PNEUMO_HOME", str(tmp_path))  # default outputs go to the pneumo home (pneumo.paths)
    res = _invoke("evaluate", tiny_bundle, "--data", manifest, "--split", "val", "--bootstrap", "200", "--gallery", "2",
                  "--json")
    assert res.exit_code == 0, res.output
    result = json.loads(res.stdout)
    out = tmp_path / "reports" / "eval-tiny-test-val"
    assert Path(result["out"]) == out and (out / "report.html").exists()
    assert result["data"]["n_images"] == len(val) and result["data"]["n_unreadable"] == 1
    assert result["unreadable"][0]["path"] == str(broken)
    site = result["subgroups"]["site"]
    assert sum(v["n"] for v in site.values()) == len(val)
    assert "broken.jpeg" in (out / "report.html").read_text()
    # the plain small manifest too (no extra columns)
    res = _invoke("evaluate", tiny_bundle, "--data", small_manifest, "--split", "val", "--bootstrap", "200",
                  "--gallery", "0", "--out", tmp_path / "plain")
    assert res.exit_code == 0, res.output
    assert "Sensitivity" in res.output and (tmp_path / "plain" / "metrics.json").exists()


def test_calibrate_stores_temperature_and_keeps_decisions(tiny_bundle, small_manifest, tmp_path):
    b = _copy_bundle(tiny_bundle, tmp_path / "cal")
    before = load_bundle(b)
    res = _invoke("calibrate", b, "--data", small_manifest, "--split", "val", "--json")
    assert res.exit_code == 0, res.output
    block = json.loads(res.stdout)
    after = load_bundle(b)
    assert after.temperature == pytest.approx(block["temperature"]) and after.temperature > 0
    cal = after.meta["calibration"]
    assert cal["split"] == "val" and cal["n"] > 0 and "fitted" in cal
    assert cal["ece_after"] <= cal["ece_before"] + 1e-9 or cal["brier_after"] <= cal["brier_before"] + 1e-9
    assert after.threshold_logit == before.threshold_logit  # decisions unchanged


def test_compare_two_bundles_paired_tests(tiny_bundle, data_root, tmp_path):
    other = _copy_bundle(tiny_bundle, tmp_path / "perturbed", noise=0.5, name="tiny-perturbed")
    out = tmp_path / "cmp"
    res = _invoke("compare", tiny_bundle, other, "--data", data_root, "--split", "val", "--out", out,
                  "--bootstrap", "300", "--json")
    assert res.exit_code == 0, res.output
    result = json.loads(res.stdout)
    assert [m["name"] for m in result["models"]] == ["tiny-test", "tiny-perturbed"]
    pair = result["pairs"][0]
    for k in ("auroc", "sensitivity", "specificity", "accuracy"):
        assert 0.0 <= pair[k]["p_value"] <= 1.0, k
    md = (out / "comparison.md").read_text()
    assert "DeLong p" in md and "p=" in md and "tiny-perturbed" in md
    assert (out / "roc.png").stat().st_size > 0 and "data:image/png;base64," in (out / "comparison.html").read_text()
    # a model compared with an identical copy: no difference can be detected
    same = _copy_bundle(tiny_bundle, tmp_path / "same", name="tiny-copy")
    res = _invoke("compare", tiny_bundle, same, "--data", data_root, "--split", "val", "--out", tmp_path / "c2",
                  "--bootstrap", "200", "--json")
    pair = json.loads(res.stdout)["pairs"][0]
    assert pair["auroc"]["p_value"] == 1.0 and pair["sensitivity"]["p_value"] == 1.0


def test_card_has_every_section(tiny_bundle, val_eval, tmp_path, small_samples):
    b = _copy_bundle(tiny_bundle, tmp_path / "carded")
    out, result = val_eval
    # the validation block `pneumo train` stores, made by training's own function from real logits
    from pneumo.training.finalize import metrics_at

    val = [s for s in small_samples if s.split == "val"]
    y = np.array([s.label for s in val])
    logit = Predictor(b).logits_for([s.path for s in val])
    thr = load_bundle(b).threshold_logit
    vm = {"split": "validation carved from train by patient", **metrics_at(y, logit, thr),
          "official_val": {**metrics_at(y[:6], logit[:6], thr), "note": "first 6 val images"}}
    update_meta(b, validation_metrics=vm)
    res = _invoke("card", b, "--eval", out)
    assert res.exit_code == 0, res.output
    text = (b / "MODEL_CARD.md").read_text()
    for section in ("## Model details", "## Intended use", "## Out-of-scope uses", "## Training data",
                    "## Evaluation data and metrics", "## Calibration", "## Known limitations",
                    "## Ethical considerations", "## Citation"):
        assert section in text, section
    assert load_bundle(b).sha256 in text and "Kermany" in text and "not a diagnosis" in text.lower()
    auroc = result["metrics"]["auroc"]
    assert f"{auroc['value']:.3f}" in text and f"{auroc['lo']:.3f}" in text
    assert "different weights" not in text
    # training's own validation block: its operating-point figures and the official folder's image count
    val_block = text.split("### Validation")[1].split("### Evaluation")[0]
    assert f"| Sensitivity (recall, TPR) | {vm['at_operating_point']['sensitivity']:.3f} |" in val_block
    assert f"({vm['official_val']['n_images']} images;" in val_block and "(? images" not in text
    # an evaluation of other weights is flagged, never passed off as this bundle's
    other = _copy_bundle(tiny_bundle, tmp_path / "other", noise=0.5)
    assert _invoke("card", other, "--eval", out).exit_code == 0
    assert "evaluation was run on different weights" in (other / "MODEL_CARD.md").read_text()


@pytest.mark.browser
def test_report_renders_in_chromium(val_eval, tmp_path, chromium):
    out, result = val_eval
    page = chromium.new_page(viewport={"width": 1200, "height": 900})
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto((out / "report.html").resolve().as_uri())
    page.wait_for_load_state("load")
    sizes = page.eval_on_selector_all("img", "els => els.map(e => [e.alt, e.complete, e.naturalWidth])")
    page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
    page.close()
    n_cases = sum(len(v) for v in result["gallery"].values())
    assert len(sizes) == len(FIGURES) + n_cases
    assert all(ok and w > 0 for _, ok, w in sizes), sizes
    assert all(u.startswith(("file:", "data:")) for u in requests)  # self-contained: nothing fetched
    assert (tmp_path / "report.png").stat().st_size > 10_000
    shutil.copy(tmp_path / "report.png", "/tmp/eval_report.png")
    assert np.isfinite(result["metrics"]["auroc"]["value"])
