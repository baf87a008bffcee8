"""pneumo.json is checked against its typed model at load: good bundles pass, a bad key fails in one line
that names it (pneumo.bundle_meta)."""

from __future__ import annotations

import json
import shutil

import pytest

from pneumo.bundle import load_bundle, read_meta
from pneumo.bundle_meta import BundleMeta, check_meta
from pneumo.errors import BundleError
from pneumo.inference import default_bundle_path


def test_the_shipped_and_a_freshly_trained_bundle_pass(tiny_bundle):
    for path in (default_bundle_path(), tiny_bundle):
        raw = read_meta(path)
        meta = check_meta(raw)
        assert isinstance(meta, BundleMeta) and meta.operating_point.logit == raw["operating_point"]["logit"]
    shipped = check_meta(read_meta(default_bundle_path()))
    assert shipped.gate is not None and shipped.gate.fitted and shipped.preprocess.size > 0


@pytest.mark.parametrize(("edit", "named"), [
    (lambda m: m["operating_point"].__setitem__("logit", "high"), "operating_point.logit"),
    (lambda m: m["architecture"].pop("name"), "architecture.name: missing"),
    (lambda m: m.__setitem__("temperature", 0), "temperature"),
    (lambda m: m["preprocess"].__setitem__("resize", "squash"), "preprocess.resize"),
    (lambda m: m["gate"].pop("threshold"), "gate"),
    (lambda m: m["derived"]["model.onnx"].__setitem__("sha256", 7), "derived['model.onnx'].sha256"),
])
def test_a_bad_key_fails_load_in_one_line_naming_it(tmp_path, edit, named):
    bundle = tmp_path / "b"
    shutil.copytree(default_bundle_path(), bundle)
    meta = json.loads((bundle / "pneumo.json").read_text())
    edit(meta)
    (bundle / "pneumo.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError) as info:
        load_bundle(bundle)
    text = str(info.value)
    assert "\n" not in text and str(bundle / "pneumo.json") in text and named in text, text


def test_unknown_keys_and_blocks_are_kept():
    meta = read_meta(default_bundle_path())
    meta["from_a_newer_pneumo"] = {"x": 1}
    meta["operating_point"]["note"] = "kept"
    checked = check_meta(meta)
    assert checked.model_extra is not None and checked.model_extra["from_a_newer_pneumo"] == {"x": 1}
