"""A bundle never mixes artefacts: after a real retrain (``train --resume``) the previous model's ONNX
files, model card and OOD statistics are rebuilt from the new weights, and a stale file put back is refused."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from pneumo.bundle import load_bundle, save_bundle, sha256_file
from pneumo.cli import main
from pneumo.data import read_image
from pneumo.errors import BundleError
from pneumo.inference import Predictor
from pneumo.inference.export import export_bundle

REPO = Path(__file__).resolve().parents[1]


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def probability(bundle, image, **kw) -> float:
    return Predictor(bundle, **kw).predict([read_image(image)[0]])[0].probability


@pytest.mark.slow
def test_resume_into_a_bundle_never_answers_with_the_old_onnx(small_manifest, val_originals, tmp_path):
    from pneumo.evaluation.card import write_card

    run, image = tmp_path / "run", val_originals[4].path
    with pytest.warns(UserWarning, match=r"no chest-X-ray gate.*pneumo gate copy"):  # 96 films: too few to fit
        first = cli("train", "--config", REPO / "configs/tiny.yaml", "--data", small_manifest, "--out", run,
                    "train.epochs=1", "data.cache_file=false")
    assert first.exit_code == 0, first.output[-3000:]
    bundle = run / "bundle"
    assert cli("export", bundle).exit_code == 0
    write_card(bundle)
    old_onnx = (bundle / "model.onnx").read_bytes()
    old_weights = sha256_file(bundle / "model.safetensors")
    old_p = probability(bundle, image)
    assert Predictor(bundle).backend == "onnx"

    resumed = cli("train", "--resume", run, "train.epochs=2")
    assert resumed.exit_code == 0, resumed.output[-3000:]
    new_weights = sha256_file(bundle / "model.safetensors")
    assert new_weights != old_weights
    meta = json.loads((bundle / "pneumo.json").read_text())
    for name in ("ood.safetensors", "model.onnx"):  # before: model.onnx stayed and predict used it
        assert meta["derived"][name]["weights_sha256"] == new_weights, f"{name} not rebuilt from the new weights"
        assert meta["derived"][name]["sha256"] == sha256_file(bundle / name)
    assert (bundle / "model.onnx").read_bytes() != old_onnx
    assert "MODEL_CARD.md" in os.listdir(bundle)
    pred = Predictor(bundle)
    assert pred.backend == "onnx"
    new_p = probability(bundle, image)
    assert new_p == pytest.approx(probability(bundle, image, backend="torch"), abs=1e-4)
    assert abs(new_p - old_p) > 1e-6, "the retrain did not change this image's answer; the test proves nothing"

    (bundle / "model.onnx").write_bytes(old_onnx)  # an operator copies the old file back
    with pytest.raises(BundleError, match=r"model\.onnx.*pneumo export"):
        Predictor(bundle)
    r = cli("predict", bundle, image)
    assert r.exit_code == 2 and r.stderr.count("\n") == 1 and "model.onnx" in r.stderr, r.output[-2000:]

    assert cli("export", bundle).exit_code == 0  # the fix the message names
    assert probability(bundle, image) == pytest.approx(new_p, abs=1e-4)
    assert Predictor(bundle).backend == "onnx"
    mask = os.umask(0)
    os.umask(mask)
    for f in bundle.iterdir():
        assert f.stat().st_mode & 0o777 == 0o666 & ~mask, (f.name, oct(f.stat().st_mode))


def test_new_weights_delete_derived_files_and_foreign_ones_are_refused(tiny_bundle, data_root, tmp_path, val_originals):
    a = shutil.copytree(tiny_bundle, tmp_path / "a")
    export_bundle(a, data=data_root, n_images=32)
    b = shutil.copytree(a, tmp_path / "b")
    bundle_b = load_bundle(b)
    model = bundle_b.model
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(0.5)
    save_bundle(b, model, architecture=bundle_b.meta["architecture"], spec=bundle_b.spec,
                operating_point=bundle_b.meta["operating_point"], name="b")
    assert not (b / "model.onnx").exists()  # before: a's ONNX stayed and answered for b
    assert Predictor(b).backend == "torch"
    shutil.copyfile(a / "model.onnx", b / "model.onnx")
    with pytest.raises(BundleError, match="model.onnx"):
        Predictor(b)
    assert Predictor(b, backend="torch").backend == "torch"  # torch never needs the ONNX file
    # a's own ONNX, recorded against a's weights, still loads; damaged bytes do not
    assert Predictor(a).backend == "onnx"
    with open(a / "model.onnx", "r+b") as fh:
        fh.seek(200)
        fh.write(b"\x00" * 64)
    with pytest.raises(BundleError, match="damaged or replaced"):
        Predictor(a)
