"""Issue 21: the header policy is visible and overridable (recorded, never silent); the population model's
rule; the monitor counts flags by reason."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from dicom_support import new_dataset, to_bytes
from pneumo.analysis import Analyser
from pneumo.bundle import read_meta
from pneumo.cli import main as cli
from pneumo.data import read_image
from pneumo.data.header_policy import HeaderPolicy
from pneumo.inference.population import PopulationModel
from pneumo.monitoring.drift import group_stats

REPO = Path(__file__).resolve().parents[1]
DEFAULT = REPO / "models" / "default"


def test_shipped_bundle_states_its_header_policy_and_card_shows_it():
    meta = read_meta(DEFAULT)
    block = meta["header_policy"]
    assert HeaderPolicy.from_meta(meta) == HeaderPolicy()  # the block is the policy the code applies
    assert block["age_years"] == [1.0, 5.0] and block["age_tolerance_years"] == 1.0 and block["overridden"] == []
    assert "tolerance" in block["about"]
    card = (DEFAULT / "MODEL_CARD.md").read_text()
    assert "## DICOM header policy" in card and "1–5 years with a tolerance of 1 year" in card
    assert "Fitted on: training_manifest.csv split 'val'" in card  # the calibration's data
    assert meta["calibration"]["prevalence"] > 0 and meta["calibration"]["n_normal"] > 30


def _dicom(pixels: np.ndarray, age: str) -> bytes:
    ds = new_dataset("DX")
    arr = np.round(pixels * 4095).astype(np.uint16)
    ds.Rows, ds.Columns = arr.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PatientAge = age
    ds.PixelData = arr.tobytes()
    return to_bytes(ds)


def test_policy_override_is_recorded_and_applied(tiny_bundle, val_originals, tmp_path):
    bundle = tmp_path / "b"
    shutil.copytree(tiny_bundle, bundle)
    from pneumo.evaluation.card import write_card

    write_card(bundle)
    data = _dicom(read_image(val_originals[0].path)[0][::4, ::4], "010Y")
    assert Analyser(bundle).analyse(data).code == "age_outside_range"  # 10 years: outside 1–5 (+1)
    res = CliRunner().invoke(cli, ["policy", str(bundle), "--set", "age_years=0,18", "--note", "site study 2027"])
    assert res.exit_code == 0, res.output
    assert "overridden (age_years)" in res.output
    block = read_meta(bundle)["header_policy"]
    assert block["age_years"] == [0.0, 18.0] and block["overridden"] == ["age_years"]
    assert block["history"][-1]["note"] == "site study 2027"
    assert "Overridden by the site**: age_years" in (bundle / "MODEL_CARD.md").read_text()  # card rewritten
    assert Analyser(bundle).analyse(data).code != "age_outside_range"  # every surface builds its Analyser so
    res = CliRunner().invoke(cli, ["policy", str(bundle), "--json"])
    assert json.loads(res.stdout)["overridden"] == ["age_years"]
    bad = CliRunner().invoke(cli, ["policy", str(bundle), "--set", "age=3"])
    assert bad.exit_code == 2 and "unknown key" in bad.output
    res = CliRunner().invoke(cli, ["policy", str(bundle), "--reset"])
    assert res.exit_code == 0 and read_meta(bundle)["header_policy"]["overridden"] == []
    assert len(read_meta(bundle)["header_policy"]["history"]) == 2


def _model(refuse_gate: float = 0.2) -> PopulationModel:
    """Two features; P(other) = sigmoid(4·x0); flag at P > 0.5 or distance > 5; refuse at distance > 50."""
    return PopulationModel(np.zeros(2), np.ones(2), np.array([4.0, 0.0]), 0.0, 0.5, 5.0, 50.0, refuse_gate)


def test_population_rule_typical_atypical_far():
    m = _model()
    feats = np.array([[-1.0, 0], [1.0, 0], [-1.0, 0], [1.0, 0], [-1.0, 0]])
    dist = np.array([1.0, 1.0, 6.0, 1.0, 60.0])
    gate = np.array([0.0, 0.0, 0.0, 0.3, 0.0])
    got = m.assess(feats, dist, gate)
    assert [a.status for a in got] == ["typical", "atypical", "atypical", "far", "far"]
    assert "another hospital" in got[1].reason and "distance 6.0" in got[2].reason
    assert "gate score 0.30" in got[3].reason and "distance 60.0" in got[4].reason
    assert got[0].score < 1 < got[1].score
    # a typical film is never refused for an unsure gate score: only atypical + unsure is "far"
    assert m.assess(np.array([[-1.0, 0]]), np.array([1.0]), np.array([0.3]))[0].status == "typical"


def test_shipped_population_model_is_recorded():
    meta = read_meta(DEFAULT)
    pop = meta["population"]
    assert pop["fitted"] and pop["weights_sha256"] == meta["weights_sha256"]
    assert meta["derived"]["population.safetensors"]["sha256"] == pop["sha256"]
    assert pop["val_shifted"]["typical"] >= pop["typical_target"] - 1e-9
    assert pop["val_originals"]["typical"] == 1.0
    for src, r in pop["held_out_sources"].items():
        assert r["flagged"] + r["refused"] >= 0.9, src
    m = PopulationModel.load(DEFAULT)
    assert m is not None and m.flag_probability == pytest.approx(pop["flag_probability"])


def test_monitor_counts_flags_by_reason():
    rows = [
        {"outcome": "ok", "flags": "atypical_population", "population": "atypical", "decision": "PNEUMONIA"},
        {"outcome": "ok", "flags": "age_outside_range,atypical_population", "population": "atypical"},
        {"outcome": "ok", "flags": None, "population": "typical", "decision": "NORMAL"},
        {"outcome": "refused_ood", "flags": "not_a_chest_xray", "population": None},
        {"outcome": "refused_ood", "flags": "far_outside_population", "population": None},
        {"outcome": "error", "flags": None, "error_code": "truncated"},
    ]
    s = group_stats(rows, None, (1.0, 0.0), None)
    assert s["flags_by_reason"] == {"atypical_population": 2, "age_outside_range": 1, "not_a_chest_xray": 1,
                                    "far_outside_population": 1}
    assert s["flagged"] == 2 and s["flagged_rate"] == pytest.approx(2 / 3, abs=1e-4)  # rates are rounded


@pytest.mark.slow
def test_population_fit_end_to_end(tiny_bundle, small_manifest, small_samples, tmp_path):
    """fit_population on a real (tiny) bundle: the model is saved, recorded as derived, loaded by the
    Predictor, and measured on a held-out source; a bundle without the external folder is refused."""
    import csv

    from pneumo.errors import ConfigError
    from pneumo.inference import Predictor, fit_ood
    from pneumo.inference.gate import copy_gate
    from pneumo.workflows.population import fit_population

    external = Path(__import__("os").environ.get("PNEUMO_EXTERNAL") or REPO.parent / "shared" / "data" / "external_dev")
    if not (external / "labels.csv").is_file():
        pytest.skip(f"external development images not present at {external}")
    bundle = tmp_path / "b"
    shutil.copytree(tiny_bundle, bundle)
    shutil.copy(small_manifest, bundle / "training_manifest.csv")
    fit_ood(bundle, [s for s in small_samples if s.split == "train"], [s for s in small_samples if s.split == "val"])
    copy_gate(DEFAULT, bundle)  # the gate does not depend on the model
    with (external / "labels.csv").open(newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["set"] == "cxr_other"]
    by_source: dict[str, list[dict]] = {}
    for r in rows:
        by_source.setdefault(r["source_repo"], []).append(r)
    few = tmp_path / "ext"
    few.mkdir()
    with (few / "labels.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["path", "set", "source_repo"])
        w.writeheader()
        for rs in by_source.values():
            for r in rs[:12]:
                w.writerow({"path": str(external / r["path"]), "set": "cxr_other", "source_repo": r["source_repo"]})
    with pytest.raises(ConfigError, match="--external"):
        fit_population(bundle, external=None)
    block = fit_population(bundle, external=few, n_fit=40, shifts=["mirror (left-right)", "blur σ 1 px"])
    meta = read_meta(bundle)
    assert {k: v for k, v in meta["population"].items() if k != "weights_sha256"} == block and block["fitted"]
    assert meta["population"]["weights_sha256"] == meta["weights_sha256"]  # tied to the weights it reads
    assert meta["derived"]["population.safetensors"]["sha256"] == block["sha256"]
    assert len(block["held_out_sources"]) == 2 and all(r["n"] == 12 for r in block["held_out_sources"].values())
    assert block["val_shifted"]["typical"] >= 0.975 - 1e-9
    pred = Predictor(bundle)
    assert pred.population is not None
    p = pred.predict([read_image(small_samples[0].path)[0]])[0]
    assert p.population in ("typical", "atypical", "far") and p.population_score is not None
