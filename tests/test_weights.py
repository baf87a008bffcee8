"""Transfer learning from local files: torchvision / torchxrayvision key layouts are mapped onto the
MONAI-based networks exactly, bundles round-trip, and anything that does not fit is a ConfigError."""

from __future__ import annotations

import re

import pytest
import torch
from safetensors.torch import save_file

from pneumo.bundle import load_bundle
from pneumo.errors import ConfigError
from pneumo.models import build_model, load_weights


def to_torchvision(model, *, legacy_densenet=False, n_classes=1000, in_channels=3):
    """Write ``model``'s weights the way torchvision would (the inverse of pneumo's mapping).

    ResNet keys lose the ``features.`` prefix; DenseNet layers lose MONAI's ``.layers`` (optionally in
    torchvision's legacy ``norm.1`` spelling); the first conv becomes RGB by repeating /3 (so a grey
    image gives identical activations); the head becomes a random ``n_classes`` classifier.
    """
    state, out = model.state_dict(), {}
    densenet = any("denselayer" in k for k in state)
    for key, value in state.items():
        if key.startswith("head."):
            continue
        if densenet:
            new = re.sub(r"(denselayer\d+)\.layers\.(norm|conv)(\d)",
                         r"\1.\2.\3" if legacy_densenet else r"\1.\2\3", key)
        else:
            new = key.removeprefix("features.")
        if value.ndim == 4 and value.shape[1] == 1 and in_channels == 3:
            value = value.repeat(1, 3, 1, 1) / 3
        out[new] = value.clone()
    width = model.head[-1].in_features
    name = "classifier" if densenet else "fc"
    out[f"{name}.weight"], out[f"{name}.bias"] = torch.randn(n_classes, width), torch.randn(n_classes)
    return out


def _fresh(arch, seed, **kwargs):
    """A model initialised from ``seed`` with every BN affine/statistic randomised, so the equalities
    below cannot come from shared initialisation (a fresh BN layer is the identity)."""
    torch.manual_seed(seed)
    model = build_model(arch, **kwargs)
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point() and t.ndim == 1:
                t.uniform_(0.5, 1.5)
    return model.eval()


@pytest.mark.parametrize("arch,legacy", [("resnet18", False), ("densenet121", True)])
def test_torchvision_checkpoint_maps_exactly(arch, legacy, tmp_path):
    source = _fresh(arch, 1)
    path = tmp_path / f"{arch}.pth"
    torch.save(to_torchvision(source, legacy_densenet=legacy), path)
    target = _fresh(arch, 2)
    report = load_weights(target, path, arch_name=arch)
    assert report["format"] == "torchvision-style" and report["head_reset"]
    assert report["skipped"] == 2 and report["first_conv_summed_to_1_channel"]
    assert all(k.startswith("head.") for k in report["kept_init_keys"])
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(target.embed(x), source.embed(x), rtol=1e-4, atol=1e-5)
    src = source.state_dict()
    differ = [k for k, v in target.state_dict().items()
              if k.startswith("features.") and not torch.allclose(v, src[k], rtol=1e-6, atol=1e-7)]
    assert not differ


def test_torchxrayvision_style_densenet(tmp_path):
    source = _fresh("densenet121", 3)
    state = to_torchvision(source, n_classes=18, in_channels=1)  # xrv: 1-channel conv0, 18 findings
    state["op_threshs"] = torch.rand(18)
    path = tmp_path / "xrv.pt"
    torch.save({"state_dict": state}, path)
    target = _fresh("densenet121", 4)
    report = load_weights(target, path, arch_name="densenet121")
    assert set(report["skipped_keys"]) == {"classifier.weight", "classifier.bias", "op_threshs"}
    assert not report["first_conv_summed_to_1_channel"]
    torch.testing.assert_close(target.features.conv0.weight, source.features.conv0.weight)


def test_pickled_full_model_is_refused(tmp_path):
    path = tmp_path / "full.pt"
    torch.save(build_model("tiny_cnn"), path)  # a whole pickled module, as xrv weights often are
    with pytest.raises(ConfigError, match="state_dict"):
        load_weights(build_model("tiny_cnn"), path, arch_name="tiny_cnn")


def test_bundle_round_trip_and_head_reset(tiny_bundle):
    trained = load_bundle(tiny_bundle).model
    fresh = build_model("tiny_cnn", width=8, depth=3).eval()
    report = load_weights(fresh, tiny_bundle, arch_name="tiny_cnn")
    assert report["source"] == "bundle:tiny_cnn" and report["kept_init"] == 0
    x = torch.rand(3, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), trained(x), rtol=0, atol=0)
    other = build_model("tiny_cnn", width=8, depth=3)
    head_before = other.head[-1].weight.clone()
    report = load_weights(other, tiny_bundle, arch_name="tiny_cnn", reset_head=True)
    assert report["head_reset"] and set(report["skipped_keys"]) == {"head.3.weight", "head.3.bias"}
    assert torch.equal(other.head[-1].weight, head_before)
    torch.testing.assert_close(other.features[0][0].weight, trained.features[0][0].weight)


def test_safetensors_state_dict(tmp_path):
    source = _fresh("compact_cnn", 5, width=8)
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    target = build_model("compact_cnn", width=8).eval()
    assert load_weights(target, path, arch_name="compact_cnn")["format"] == "pneumo"
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(target(x), source(x), rtol=0, atol=0)


def test_mismatches_name_the_keys(tmp_path):
    path = tmp_path / "r18.pth"
    torch.save(to_torchvision(build_model("resnet18")), path)
    with pytest.raises(ConfigError, match=r"missing keys \(e\.g\. features\.layer1\.2\."):
        load_weights(build_model("resnet34"), path, arch_name="resnet34")
    small = tmp_path / "small.safetensors"
    save_file(build_model("compact_cnn", width=8).state_dict(), str(small))
    with pytest.raises(ConfigError, match=r"shape mismatches \(e\.g\. features\.1\.0\.conv1\.0\.weight"):
        load_weights(build_model("compact_cnn", width=16), small, arch_name="compact_cnn")
    with pytest.raises(ConfigError, match="not found"):
        load_weights(build_model("tiny_cnn"), tmp_path / "nope.pt", arch_name="tiny_cnn")
    with pytest.raises(ConfigError, match="no torchvision mapping"):
        load_weights(build_model("compact_cnn"), path, arch_name="compact_cnn")
