"""The ``ensemble`` registry model: one PneumoNet averaging its members' logits, usable everywhere."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pneumo.bundle import load_bundle, save_bundle
from pneumo.data import PreprocessSpec
from pneumo.errors import ConfigError
from pneumo.models import build_model
from pneumo.models.ensemble import ensemble_from_models

SIZE = 64


def _members(seed: int = 0):
    torch.manual_seed(seed)
    a = build_model("tiny_cnn", width=8, depth=3).eval()
    b = build_model("tiny_cnn", width=4, depth=2).eval()  # other width and spatial size
    for m in (a, b):  # make the heads non-trivial so the test can fail
        torch.nn.init.normal_(m.head[-1].weight, std=1.0)
        torch.nn.init.normal_(m.head[-1].bias, std=1.0)
    return a, b


def test_ensemble_logit_is_the_mean_of_members_and_embed_concatenates():
    a, b = _members()
    ens = ensemble_from_models([a, b])
    x = torch.randn(5, 1, SIZE, SIZE)
    with torch.no_grad():
        want = (a(x) + b(x)) / 2
        got = ens(x)
        emb = ens.embed(x)
    assert got.shape == (5,) and torch.allclose(got, want, atol=1e-5)
    assert emb.shape == (5, 32 + 8)
    assert torch.allclose(emb[:, :32], a.embed(x), atol=1e-6)


def test_ensemble_builds_from_the_registry_and_round_trips_through_a_bundle(tmp_path):
    kwargs = {"members": [{"name": "tiny_cnn", "kwargs": {"width": 8, "depth": 3}},
                          {"name": "tiny_cnn", "kwargs": {"width": 4, "depth": 2}}]}
    ens = ensemble_from_models(list(_members(1)))
    fresh = build_model("ensemble", **kwargs)
    assert set(fresh.state_dict()) == set(ens.state_dict())
    spec = PreprocessSpec(size=SIZE)
    op = {"rule": "default", "logit": 0.0, "val_sensitivity": 1.0, "val_specificity": 1.0}
    path = save_bundle(tmp_path / "ens", ens, architecture={"name": "ensemble", "kwargs": kwargs}, spec=spec,
                       operating_point=op, thresholds={"default": op}, training_data={}, validation_metrics={},
                       name="ens")
    loaded = load_bundle(path).model
    x = torch.randn(3, 1, SIZE, SIZE)
    with torch.no_grad():
        assert torch.allclose(loaded(x), ens(x), atol=1e-6)


def test_ensemble_gradcam_and_onnx(tmp_path):
    import onnxruntime as ort

    from pneumo.explain.core import explain_tensor
    from pneumo.inference.export import export_onnx_file

    ens = ensemble_from_models(list(_members(2)))
    x = torch.randn(1, 1, SIZE, SIZE)
    heats = [explain_tensor(ens, x[0], method="gradcam", target=t) for t in ("pneumonia", "normal")]
    assert all(h.shape == (SIZE, SIZE) and np.isfinite(h).all() for h in heats)
    assert max(h.max() for h in heats) > 0  # a ReLU'd CAM can be empty for one class, not for both
    onnx_path = tmp_path / "ens.onnx"
    export_onnx_file(ens, SIZE, onnx_path)
    xb = torch.randn(4, 1, SIZE, SIZE)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    logit, emb = session.run(None, {"image": xb.numpy()})
    with torch.no_grad():
        assert np.allclose(np.ravel(logit), ens(xb).numpy(), atol=1e-4)
        assert np.allclose(emb, ens.embed(xb).numpy(), atol=1e-4)


def test_ensemble_refuses_members_without_a_global_pool_head():
    with pytest.raises(ConfigError):
        build_model("ensemble", members=[{"name": "seed_cnn", "kwargs": {}}])
    with pytest.raises(ConfigError):
        build_model("ensemble", members=[])
    with pytest.raises(ConfigError):
        build_model("ensemble", members=[{"name": "ensemble", "kwargs": {"members": []}}])
