"""ONNX export of the genuinely trained tiny bundle: parity on real images, refusal on mismatch, int8 rule,
and the ONNX and torch Predictors agreeing (logits, embeddings, OOD scores)."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from pneumo.bundle import read_meta, sha256_file
from pneumo.data import preprocess, read_image
from pneumo.errors import ConfigError
from pneumo.inference import Predictor, fit_ood
from pneumo.inference import export as ex


@pytest.fixture(scope="module")
def exported(tiny_bundle, data_root, small_samples, tmp_path_factory) -> tuple[Path, dict | None, str | None]:
    """A copy of tiny_bundle, exported with --int8 and given an OOD detector; (path, block, int8 refusal)."""
    path = tmp_path_factory.mktemp("export") / "tiny"
    shutil.copytree(tiny_bundle, path)
    refusal = None
    try:
        ex.export_bundle(path, data=data_root, int8=True)
    except ConfigError as exc:
        refusal = str(exc)
    fit_ood(path, [s for s in small_samples if s.split == "train"], [s for s in small_samples if s.split == "val"])
    return path, read_meta(path)["onnx"], refusal


def test_export_records_parity_on_real_images(exported):
    path, block, _ = exported
    assert block["parity"]["n_images"] >= 32
    assert block["parity"]["max_abs_diff"] <= 1e-4
    assert block["opset"] >= 17 and block["outputs"] == ["logit", "embedding"]
    assert block["sha256"] == sha256_file(path / "model.onnx")
    model = onnx.load(str(path / "model.onnx"))
    assert [o.name for o in model.graph.output] == ["logit", "embedding"]
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # dynamic batch axis
    assert not list(path.glob(".*.tmp"))


def test_int8_rule_applied(exported):
    path, block, refusal = exported
    info = block["int8"]
    drop = info["auroc_fp32"] - info["auroc_int8"]
    assert info["accepted"] == (drop <= 0.002)
    assert (path / "model.int8.onnx").exists() == info["accepted"]
    assert (refusal is None) == info["accepted"]
    if info["accepted"]:
        assert info["sha256"] == sha256_file(path / "model.int8.onnx")
        p8 = Predictor(path, backend="onnx", onnx_file="model.int8.onnx")
        assert 0.0 <= p8.predict([np.zeros((80, 80), np.float32)])[0].probability <= 1.0
    else:
        assert f"{drop:.4f}" in refusal


def test_parity_failure_refuses_and_writes_nothing(tiny_bundle, data_root, tmp_path, monkeypatch):
    path = tmp_path / "tiny"
    shutil.copytree(tiny_bundle, path)
    before = sorted(p.name for p in path.iterdir())
    real_export = ex.export_onnx_file

    def corrupted(model, size, out, opset=ex.OPSET):
        bad = copy.deepcopy(model)
        with torch.no_grad():
            bad.head[-1].bias += 0.5  # the exported graph no longer matches the bundle's weights
        return real_export(bad, size, out, opset)

    monkeypatch.setattr(ex, "export_onnx_file", corrupted)
    with pytest.raises(ConfigError, match="disagree"):
        ex.export_bundle(path, data=data_root)
    assert sorted(p.name for p in path.iterdir()) == before
    assert "onnx" not in read_meta(path)


def test_onnx_and_torch_predictors_agree(exported, val_originals):
    path, _, _ = exported
    po, pt = Predictor(path, backend="onnx"), Predictor(path, backend="torch")
    assert po.backend == "onnx" and Predictor(path).backend == "onnx"
    pix = [read_image(s.path)[0] for s in val_originals]
    batch = np.stack([preprocess(p, po.spec) for p in pix])
    lo, eo = po.logits_and_embeddings(batch)
    lt, et = pt.logits_and_embeddings(batch)
    np.testing.assert_allclose(lo, lt, atol=1e-4)
    np.testing.assert_allclose(eo, et, atol=1e-4)
    np.testing.assert_allclose(po.logits(batch), lo, atol=1e-6)
    ro, rt = po.predict(pix), pt.predict(pix)
    for a, b in zip(ro, rt, strict=True):
        assert abs(a.probability - b.probability) <= 1e-4 and a.decision == b.decision and a.ood == b.ood
        assert a.ood_score == pytest.approx(b.ood_score, rel=1e-4, abs=1e-4)
    single = po.predict([pix[0]])[0]
    assert single.probability == pytest.approx(ro[0].probability, abs=1e-6)
    assert single.threshold == pytest.approx(po.bundle.threshold)


def test_export_cli_json_uses_training_manifest(tiny_bundle, small_manifest, tmp_path):
    """Laid out as training writes it: ``training_data.manifest`` relative to the bundle, no --data."""
    import json

    from click.testing import CliRunner

    from pneumo.bundle import update_meta
    from pneumo.cli import main

    path = tmp_path / "tiny"
    shutil.copytree(tiny_bundle, path)
    shutil.copy(small_manifest, path / "training_manifest.csv")
    update_meta(path, training_data={"manifest": "training_manifest.csv"})
    res = CliRunner().invoke(main, ["export", str(path), "--n-images", "32", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["parity"]["n_images"] == 32 and doc["parity"]["max_abs_diff"] <= 1e-4 and doc["int8"] is None
    assert doc["parity"]["source"].startswith("training manifest")
    assert read_meta(path)["onnx"]["sha256"] == doc["sha256"]
    res = CliRunner().invoke(main, ["export", str(tmp_path / "missing")])
    assert res.exit_code == 2 and "not a model bundle" in res.output


def test_int8_refusal_keeps_fp32_and_writes_no_int8(tiny_bundle, data_root, tmp_path, monkeypatch):
    path = tmp_path / "tiny"
    shutil.copytree(tiny_bundle, path)
    (path / "model.int8.onnx").write_bytes(b"stale")  # from an earlier export: must not survive a refusal
    monkeypatch.setattr(ex, "INT8_MAX_AUROC_DROP", -1.0)  # no int8 model can pass this bar
    with pytest.raises(ConfigError, match=r"int8 model refused: validation AUROC \d\.\d{4} vs fp32 \d\.\d{4}"):
        ex.export_bundle(path, data=data_root, int8=True, n_images=32)
    block = read_meta(path)["onnx"]
    assert block["int8"]["accepted"] is False and "sha256" not in block["int8"]
    assert (path / "model.onnx").exists() and not (path / "model.int8.onnx").exists()
    assert not list(path.glob(".*.tmp"))
